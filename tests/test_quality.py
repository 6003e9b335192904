"""pipeline.quality in bounded memory: the chunked trustworthiness against scikit-learn's, the
silhouette sample, and the memory estimate that stops a stage before it writes anything."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.manifold import trustworthiness as sklearn_trustworthiness

from pipeline import memory, quality
from pipeline.errors import UserError


@pytest.mark.parametrize("n, dim, k", [(12, 3, 1), (60, 5, 5), (300, 20, 10), (501, 50, 25)])
def test_trustworthiness_equals_scikit_learn(n: int, dim: int, k: int) -> None:
    rng = np.random.default_rng(n)
    reference = rng.normal(size=(n, dim))
    coords = reference[:, :2] + rng.normal(scale=0.7, size=(n, 2))     # a map that keeps some neighbours
    expected = sklearn_trustworthiness(reference, coords, n_neighbors=k)
    for chunk in (1, 7 * n, quality.TRUST_CHUNK_VALUES):                # one row, 7 rows, all rows per chunk
        assert quality.trustworthiness(reference, coords, k, chunk_values=chunk) == pytest.approx(expected, abs=1e-6)


def test_trustworthiness_on_a_sample_estimates_the_exact_value() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    reference = rng.normal(size=(n, 10))
    coords = reference[:, :2] + rng.normal(scale=0.5, size=(n, 2))
    exact = quality.trustworthiness(reference, coords, 10)
    assert quality.trustworthiness(reference, coords, 10, max_points=n) == exact          # not sampled
    sampled = [quality.trustworthiness(reference, coords, 10, max_points=800, seed=s) for s in (0, 1)]
    assert sampled[0] != sampled[1] and sampled[0] != exact                            # really a sample
    assert all(abs(t - exact) < 0.01 for t in sampled), (sampled, exact)
    assert quality.trustworthiness(reference, coords, 10, max_points=800, seed=0) == sampled[0]   # seeded


def test_trustworthiness_extremes_and_clamp() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6))
    assert quality.trustworthiness(x, x) == pytest.approx(1.0)               # the map is the space itself
    shuffled = x[rng.permutation(40)]
    assert quality.trustworthiness(x, shuffled[:, :2], k=30) == pytest.approx(    # k clamped to 19
        sklearn_trustworthiness(x, shuffled[:, :2], n_neighbors=19), abs=1e-6)


def test_trustworthiness_memory_is_bounded_by_the_chunk() -> None:
    """Peak allocation far below one (n, n) float64 matrix (scikit-learn holds ~3 of them)."""
    import tracemalloc

    n = 2000
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, 8))
    coords = x[:, :2].copy()
    tracemalloc.start()
    try:
        quality.trustworthiness(x, coords, 10, chunk_values=20 * n)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n * n * 8 / 10, peak                                    # 32 MB for a full matrix


def test_samples_are_recorded(monkeypatch) -> None:
    monkeypatch.setattr(quality, "SILHOUETTE_MAX", 200)
    rng = np.random.default_rng(3)
    n = 1000
    coords = rng.normal(size=(n, 2))
    labels = rng.integers(0, 3, size=n)
    monkeypatch.setattr(quality, "TRUST_EXACT_MAX", 300)
    small = quality.map_metrics(coords[:150], coords[:150], labels[:150], k=5)
    assert "silhouette" in small and "silhouette_sample" not in small and "trustworthiness_sample" not in small
    large = quality.map_metrics(coords, coords, labels, k=5)
    assert large["silhouette_sample"] == 200 and large["trustworthiness_sample"] == 300
    assert quality.silhouette(coords, labels) == quality.silhouette(coords, labels)     # seeded sample
    assert quality.silhouette(coords, labels) != quality.silhouette(coords, labels, max_points=n)


# --------------------------------------------------------------------------- memory estimates

def test_parse_size_and_check_fits(monkeypatch) -> None:
    assert memory.parse_size("4G") == 4 * 2 ** 30
    assert memory.parse_size("512M") == 512 * 2 ** 20
    assert memory.parse_size("1.5GiB") == int(1.5 * 2 ** 30)
    assert memory.parse_size("1000") == 1000
    with pytest.raises(ValueError):
        memory.parse_size("lots")
    monkeypatch.setattr(memory, "available_memory", lambda: 2 ** 30)
    memory.check_fits("reduce", 2 ** 29, "small")                        # fits: nothing happens
    with pytest.raises(UserError) as err:
        memory.check_fits("reduce", 3 * 2 ** 30, "13 layers x 70000 points")
    message = str(err.value)
    assert "\n" not in message and "3.0 GiB" in message and "1.0 GiB" in message
    for knob in ("extract.n_samples", "extract.dtype", "extract.layers", "extract.split"):
        assert knob in message


def test_estimate_grows_with_points_and_width() -> None:
    small = memory.estimate("reduce", 1000, {"a": 100, "b": 4704}, 4)
    assert memory.estimate("reduce", 10_000, {"a": 100, "b": 4704}, 4) - memory.BASE_BYTES == \
        pytest.approx(10 * (small - memory.BASE_BYTES))
    assert memory.estimate("reduce", 1000, {"a": 100, "b": 4704}, 2) < small          # float16
    assert memory.estimate("reduce", 1000, {"a": 100}, 4) < small                     # fewer layers


def test_available_memory_override(monkeypatch) -> None:
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "3G")
    assert memory.available_memory() == 3 * 2 ** 30
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "0")
    assert memory.available_memory() is None                              # check off
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "much")
    with pytest.raises(UserError, match=memory.LIMIT_VARIABLE):
        memory.available_memory()
    monkeypatch.delenv(memory.LIMIT_VARIABLE)
    free = memory.available_memory()
    assert free is None or free > 0



def test_worker_processes_are_capped_by_the_free_memory(monkeypatch) -> None:
    index = {"n": 10_000, "dtype": "float32", "layers": [{"name": "input", "dim": 784}, {"name": "conv1", "dim": 4704}]}
    each = memory.estimate("reduce", 10_000, {"input": 784, "conv1": 4704}, 4)          # one worker's share
    monkeypatch.setenv(memory.LIMIT_VARIABLE, str(memory.BASE_BYTES + 2 * each))
    assert memory.workers_that_fit("reduce", index, 8) == 2
    monkeypatch.setenv(memory.LIMIT_VARIABLE, str(memory.BASE_BYTES + 2 * each - 1))
    assert memory.workers_that_fit("reduce", index, 8) == 1
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "1M")
    assert memory.workers_that_fit("reduce", index, 8) == 1                # never fewer than one
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "0")                         # check off: as many as asked
    assert memory.workers_that_fit("reduce", index, 3) == 3
    assert memory.workers_that_fit("probe", {**index, "dtype": "float16"}, 1) == 1

_OUTPUTS = {"extract": ["data/activations"], "reduce": ["data/embeddings/pca", "metrics/embeddings/pca.json"],
            "probe": ["metrics/probes.json"], "diagnose": ["metrics/diagnostics.json", "plots/diagnostics"],
            "projector": ["data/projector"], "render": ["plots/figures", "metrics/render.json"]}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(_OUTPUTS))
def test_stage_that_does_not_fit_stops_before_writing(stage: str, staged_ws) -> None:
    """A memory limit below the estimate: one error line naming the knobs, exit 1, no outputs."""
    from tests.conftest import run_cli

    args = ("reduce", "pca") if stage == "reduce" else (stage,)
    proc = run_cli(*args, cwd=staged_ws, check=False, env={memory.LIMIT_VARIABLE: "300M"})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len([line for line in lines if line.startswith("error:")]) == 1 and "Traceback" not in proc.stderr
    error = next(line for line in lines if line.startswith("error:"))
    assert "needs about" in error and "300M" in error and "extract.n_samples" in error and "extract.split" in error
    for out in _OUTPUTS[stage]:
        assert not (staged_ws / out).exists(), out
    if stage in ("extract", "render"):
        return                  # the slowest two: that they run with enough memory, every other test shows
    ok = run_cli(*args, cwd=staged_ws, check=False, env={memory.LIMIT_VARIABLE: "64G"})
    assert ok.returncode == 0, ok.stderr
