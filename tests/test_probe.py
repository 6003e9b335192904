"""The probe stage: linear-probe accuracy per layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import paths
from pipeline.config import ProbeConfig, parse_params
from pipeline.errors import UserError
from pipeline.stages import probe as probe_stage
from pipeline.probes import linear_probe, split
from tests.test_reduce_stage import write_activations


def separable(n_per: int = 40, dim: int = 6, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per)
    return rng.normal(scale=5.0, size=(k, dim))[labels] + rng.normal(size=(len(labels), dim)), labels


def test_split_is_stratified_seeded_and_disjoint() -> None:
    labels = np.repeat(np.arange(5), 20)
    train, test = split(labels, 0.3, seed=0)
    assert len(test) == 30 and len(train) == 70 and not set(train) & set(test)
    assert np.bincount(labels[test]).tolist() == [6] * 5
    again = split(labels, 0.3, seed=0)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(split(labels, 0.3, seed=1)[1], test)


def test_split_without_stratification_when_a_class_is_a_singleton() -> None:
    labels = np.array([0] * 10 + [1] * 10 + [2])
    train, test = split(labels, 0.3, seed=0)
    assert len(train) + len(test) == 21


def test_library_defaults_are_the_params_defaults() -> None:
    """linear_probe's and knn_in_layer's keyword defaults match params.yaml's `probe` section (its
    one home)."""
    import inspect

    from pipeline.probes import knn_in_layer

    def defaults(fn) -> dict:
        return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}

    section = ProbeConfig().model_dump()
    assert defaults(linear_probe) == {k: v for k, v in section.items() if k != "knn_k"}
    assert {"k": section["knn_k"], "seed": section["seed"]} == {k: v for k, v in defaults(knn_in_layer).items()
                                                                if k != "max_values"}


def test_probe_on_separable_classes_is_perfect() -> None:
    x, labels = separable()
    result = linear_probe(x, labels)
    assert result == {"accuracy": 1.0, "dims": 6, "converged": True}


def test_probe_on_noise_is_near_chance() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 150)
    result = linear_probe(rng.normal(size=(600, 20)), labels)
    assert abs(result["accuracy"] - 0.25) < 0.1


def test_wide_layers_are_pca_reduced() -> None:
    x, labels = separable(n_per=30, dim=300)
    result = linear_probe(x, labels, max_dims=16)
    assert result["dims"] == 16 and result["accuracy"] == 1.0
    # never more PCA dims than training points
    assert linear_probe(x, labels, max_dims=200)["dims"] == 84


def test_dead_layer_gives_chance_not_a_crash() -> None:
    labels = np.repeat(np.arange(4), 25)
    result = linear_probe(np.zeros((100, 8)), labels)
    assert result["accuracy"] <= 0.3 and result["dims"] == 8


def test_nan_layer_is_skipped() -> None:
    x, labels = separable()
    x[1, 1] = np.nan
    assert "NaN or infinite" in linear_probe(x, labels)["skipped"]


def test_probe_stage_writes_metrics(workspace: Path, capfd: pytest.CaptureFixture) -> None:
    x, labels = separable(n_per=30, dim=8, k=3)
    noisy = np.random.default_rng(1).normal(size=(90, 5)).astype(np.float32)
    bad = x.astype(np.float32)
    bad[0, 0] = np.inf
    write_activations(workspace, {"input": noisy, "fc": x.astype(np.float32), "flat": x.astype(np.float32),
                                  "broken": bad}, labels)
    result = probe_stage.run(parse_params({"probe": {"seed": 3}}))
    saved = json.loads(paths.PROBE_METRICS.read_text())
    assert saved == result
    assert list(saved) == ["input", "fc", "flat", "broken"]
    assert saved["fc"] == saved["flat"] == {"accuracy": 1.0, "dims": 8, "knn_accuracy": 1.0}
    assert saved["input"]["accuracy"] < 0.7
    assert "NaN or infinite" in saved["broken"]["skipped"]
    assert "layer broken skipped" in capfd.readouterr().err


def test_probe_stage_without_activations(workspace: Path) -> None:
    with pytest.raises(UserError, match="run the stage that makes it"):
        probe_stage.run(parse_params({}))
    assert not paths.PROBE_METRICS.exists()


@pytest.mark.parametrize("n, dim, k", [(300, 40, 10), (40, 300, 40), (40, 300, 12), (50, 50, 50)])
def test_principal_axes_are_the_exact_pca_axes(n: int, dim: int, k: int) -> None:
    """Covariance (more points than features) or Gram route: the projections of scikit-learn's
    exact PCA, column by column up to sign; zero columns where the training part has no variance."""
    from sklearn.decomposition import PCA

    from pipeline.probes import principal_axes

    rng = np.random.default_rng(n + dim)
    x = rng.normal(size=(n + 20, dim)) * np.linspace(3.0, 0.1, dim)          # distinct variances
    train, test = x[:n], x[n:]
    got_train, got_test = principal_axes(train, test, k)
    rank = min(k, n - 1, dim)                                                  # centring removes one
    pca = PCA(n_components=rank, svd_solver="full").fit(train)
    want_train, want_test = pca.transform(train), pca.transform(test)
    signs = np.sign((got_train[:, :rank] * want_train).sum(axis=0))
    np.testing.assert_allclose(got_train[:, :rank] * signs, want_train, atol=1e-8)
    np.testing.assert_allclose(got_test[:, :rank] * signs, want_test, atol=1e-8)
    assert got_train.shape == (n, k) and not got_train[:, rank:].any()


def test_knn_in_layer_scores_a_stratified_sample_above_the_cap() -> None:
    from pipeline.probes import knn_in_layer
    from pipeline.quality import knn_accuracy

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    x = (rng.normal(size=(200, 30)) + 3.0 * labels[:, None]).astype(np.float32)
    whole = knn_in_layer(x, labels, k=5, seed=1)
    assert whole == {"knn_accuracy": round(knn_accuracy(x, labels, 5, seed=1, dtype=np.float32), 6)}
    assert whole["knn_accuracy"] > 0.9
    sampled = knn_in_layer(x, labels, k=5, seed=1, max_values=80 * 30)        # 80 points fit under the cap
    assert sampled["knn_sample"] == 80 and sampled["knn_accuracy"] > 0.9
    assert knn_in_layer(x[:3], labels[:3]) == {}                              # too few points: undefined
