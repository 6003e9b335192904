"""The reduce stage: outputs in the ARTIFACTS.md formats, bad layers skipped and recorded."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import paths
from pipeline.config import load_params, parse_params
from pipeline.errors import ConfigError, UserError
from pipeline.reducers import prepare
from pipeline.stages import reduce as reduce_stage
from tests.conftest import TINY_PARAMS, run_cli

CLASSES = ["zero", "one", "two"]


def write_activations(root: Path, layers: dict[str, np.ndarray], labels: np.ndarray, *,
                      preds: np.ndarray | None = None, snapshots: dict[int, dict[str, np.ndarray]] | None = None,
                      snapshot_layers: list[str] | None = None) -> Path:
    """A data/activations/ folder in the extract format (ARTIFACTS.md), from arrays."""
    act = root / paths.ACTIVATIONS
    act.mkdir(parents=True, exist_ok=True)
    for name, x in layers.items():
        np.save(act / f"{name}.npy", x)
    np.save(act / "labels.npy", labels.astype(np.int64))
    np.save(act / "indices.npy", np.arange(len(labels), dtype=np.int64))
    if preds is not None:
        np.save(act / "preds.npy", preds.astype(np.int64))
    entries = []
    for step, arrays in (snapshots or {}).items():
        sub = f"snapshots/step_{step:06d}"
        (act / sub).mkdir(parents=True, exist_ok=True)
        for name, x in arrays.items():
            np.save(act / sub / f"{name}.npy", x)
        entries.append({"step": step, "epoch": step / 10, "dir": sub})
    index = {
        "arch": "lenet", "task": "classify", "dataset": "synthetic", "classes": CLASSES,
        "n": len(labels), "dtype": "float32",
        "layers": [{"name": n, "type": "Linear", "shape": [x.shape[1]], "dim": x.shape[1]} for n, x in layers.items()],
        "output_layer": list(layers)[-1], "penultimate": list(layers)[-2] if len(layers) > 1 else list(layers)[0],
        "snapshot_layers": snapshot_layers or [], "snapshots": entries,
    }
    (act / "layers.json").write_text(json.dumps(index))
    return act


def blobs(n_per: int = 20, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per)
    centres = rng.normal(scale=6.0, size=(3, dim))
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def params(**reduce):
    base = {"pca_dims": 10, "tsne": {"perplexity": 10, "early_exaggeration_iter": 30, "n_iter": 60},
            "umap": {"n_neighbors": 8, "n_epochs": 30}}
    for key, value in reduce.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return parse_params({"reduce": base})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def synthetic(workspace: Path) -> dict:
    """A workspace whose activations hold a good layer, a constant, a NaN and an inf layer."""
    x, labels = blobs()
    rng = np.random.default_rng(1)
    preds = labels.copy()
    preds[:5] = (labels[:5] + 1) % 3
    nan = x.copy()
    nan[2, 3] = np.nan
    inf = x.copy()
    inf[0, 0] = np.inf
    layers = {"input": x, "dead": np.zeros((len(x), 16), np.float32), "nan": nan, "inf": inf,
              "hidden": (x @ rng.normal(size=(8, 5))).astype(np.float32)}
    snaps = {step: {"hidden": (layers["hidden"] * (0.2 + step / 40) + rng.normal(scale=0.5, size=(60, 5)))
                    .astype(np.float32)} for step in (0, 10, 20)}
    snaps[30] = {"hidden": layers["hidden"]}
    write_activations(workspace, layers, labels, preds=preds, snapshots=snaps, snapshot_layers=["hidden"])
    return {"labels": labels, "preds": preds, "layers": layers}


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_reduce_writes_every_output(synthetic: dict, method: str, capfd: pytest.CaptureFixture) -> None:
    result = reduce_stage.run(params(), method)
    err = capfd.readouterr().err
    labels = synthetic["labels"]
    out = paths.embedding_dir(method)
    metrics = json.loads(paths.embedding_metrics(method).read_text())
    info = json.loads((out / "info.json").read_text())

    assert list(metrics) == ["input", "dead", "nan", "inf", "hidden"]       # forward order
    assert sorted(result["skipped"]) == ["dead", "inf", "nan"]
    for bad, reason in [("dead", "constant layer"), ("nan", "NaN or infinite"), ("inf", "NaN or infinite")]:
        assert reason in metrics[bad]["skipped"]
        assert info["layers"][bad]["status"] == "skipped" and reason in info["layers"][bad]["reason"]
        assert f"layer {bad} skipped" in err
        assert not (out / f"{bad}.npy").exists()
    for good in ("input", "hidden"):
        m = metrics[good]
        assert m["knn_accuracy"] == 1.0 and "knn_accuracy_full" not in m        # the probe stage's now
        assert 0.9 < m["trustworthiness"] <= 1.0 and -1 <= m["silhouette"] <= 1
        assert ("explained_variance" in m) == (method == "pca")
        if method == "pca":                                    # with and without reduce.sphereize (off here)
            x = np.load(paths.ACTIVATIONS / f"{good}.npy")
            other = prepare(x, 2, 0, sphereize=True).ratios[:2].sum()
            assert m["explained_variance_plain"] == m["explained_variance"]
            assert m["explained_variance_sphereized"] == pytest.approx(other, abs=1e-5)
        coords = np.load(out / f"{good}.npy")
        assert coords.shape == (60, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
        assert info["layers"][good]["status"] == "ok" and "seconds" not in info["layers"][good]
        assert json.loads(paths.reduce_log(method).read_text())["layers"][good] >= 0     # timings: logs/
        place = list(metrics).index(good) + 1                                # 1-based, from the input
        rows = read_csv(paths.points_dir(method) / f"{place:02d}_{good}.csv")
        assert list(rows[0]) == ["x", "y", "label", "class", "prediction", "correct", "map"]
        title = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}[method] + f": {good} (layer {place} of 5)"
        assert {r["map"] for r in rows} == {title}
        assert len(rows) == 60
        assert [int(r["label"]) for r in rows] == labels.tolist()
        assert [r["class"] for r in rows] == [CLASSES[i] for i in labels]
        assert [int(r["correct"]) for r in rows] == (synthetic["preds"] == labels).astype(int).tolist()
        np.testing.assert_allclose([float(r["x"]) for r in rows], coords[:, 0], rtol=1e-4, atol=1e-4)
    assert info["method"] == method and info["n_components"] == 2 and info["n"] == 60

    # snapshots: every step, the final one equal to the main map, the sequence aligned
    assert info["snapshots"] == {"hidden": [0, 10, 20, 30]}
    frames = [np.load(out / "snapshots" / "hidden" / f"step_{s:06d}.npy") for s in (0, 10, 20, 30)]
    np.testing.assert_array_equal(frames[-1], np.load(out / "hidden.npy"))
    assert [f["step"] for f in info["snapshot_metrics"]["hidden"]] == [0, 10, 20, 30]
    for a, b in zip(frames[1:], frames[:-1]):
        # adjacent frames of an aligned sequence are closer than the frame and its mirror image
        mirrored = b * np.array([-1.0, 1.0])
        assert np.linalg.norm(a - b) < np.linalg.norm(a - mirrored)


def test_reduce_3d_points_have_z(workspace: Path) -> None:
    x, labels = blobs()
    write_activations(workspace, {"input": x, "fc": x[:, :4] * 2}, labels)           # no preds (autoencoder)
    reduce_stage.run(params(pca={"n_components": 3}), "pca")
    rows = read_csv(paths.points_dir("pca") / "02_fc.csv")
    assert list(rows[0]) == ["x", "y", "z", "label", "class", "map"]
    assert np.load(paths.embedding_dir("pca") / "fc.npy").shape == (60, 3)


def test_identical_layers_are_mapped_once(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, labels = blobs()
    hidden = np.tanh(x[:, :6])
    write_activations(workspace, {"input": x, "pool2": hidden, "flatten": hidden.copy()}, labels)
    fits = []
    from pipeline import mapping

    real_embed = mapping.embed
    monkeypatch.setattr(mapping, "embed", lambda x, *a, **k: fits.append(x.shape) or real_embed(x, *a, **k))
    reduce_stage.run(params(), "pca")
    assert fits == [(60, 8), (60, 6)]                                              # flatten: no second fit
    info = json.loads((paths.embedding_dir("pca") / "info.json").read_text())
    assert info["layers"]["flatten"]["same_as"] == "pool2"
    metrics = json.loads(paths.embedding_metrics("pca").read_text())
    assert metrics["flatten"] == metrics["pool2"]
    out = paths.embedding_dir("pca")
    np.testing.assert_array_equal(np.load(out / "flatten.npy"), np.load(out / "pool2.npy"))
    flatten, pool2 = (read_csv(paths.points_dir("pca") / name) for name in ("03_flatten.csv", "02_pool2.csv"))
    assert {r.pop("map") for r in flatten} == {"PCA: flatten (layer 3 of 3)"}
    assert {r.pop("map") for r in pool2} == {"PCA: pool2 (layer 2 of 3)"}
    assert flatten == pool2


def test_too_few_points_clamp_and_record(workspace: Path, capfd: pytest.CaptureFixture) -> None:
    x, labels = blobs(n_per=3)                                                        # 9 points
    write_activations(workspace, {"input": x, "fc": x[:, :5]}, labels)
    reduce_stage.run(params(tsne={"perplexity": 30}), "tsne")
    metrics = json.loads(paths.embedding_metrics("tsne").read_text())
    assert metrics["fc"]["clamped"].startswith("perplexity 30 -> 2.67")
    assert ("warning: reduce tsne: perplexity 30 -> 2.67 (only 9 points; at most (n - 1) / 3) for layers input, fc"
            in capfd.readouterr().err.splitlines())
    info = json.loads((paths.embedding_dir("tsne") / "info.json").read_text())
    assert info["layers"]["fc"]["params"]["perplexity"] == pytest.approx(8 / 3, abs=1e-3)
    assert np.isfinite(np.load(paths.embedding_dir("tsne") / "fc.npy")).all()


def test_unknown_method_is_one_line(workspace: Path) -> None:
    with pytest.raises(UserError, match=r"^unknown reduce method 'isomap'; use one of pca, tsne, umap"):
        reduce_stage.run(params(), "isomap")
    # the command line refuses it before the stage runs: a usage error (exit 2) listing the choices
    proc = run_cli("reduce", "isomap", cwd=workspace, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'isomap' is not one of 'pca', 'tsne', 'umap'" in proc.stderr.strip().splitlines()[-1]


def test_unsupported_combination_fails_before_touching_outputs(synthetic: dict) -> None:
    reduce_stage.run(params(), "tsne")
    before = paths.embedding_metrics("tsne").read_text()
    with pytest.raises(ConfigError, match="reduce.tsne.method = exact"):
        reduce_stage.run(params(tsne={"method": "exact"}), "tsne")
    assert paths.embedding_metrics("tsne").read_text() == before


def test_no_mappable_layer_is_an_error_and_leaves_nothing(workspace: Path) -> None:
    labels = np.repeat(np.arange(3), 4)
    write_activations(workspace, {"input": np.ones((12, 4), np.float32)}, labels)
    with pytest.raises(UserError, match="no layer could be mapped .*input: constant layer"):
        reduce_stage.run(params(), "pca")
    for out in (paths.embedding_dir("pca"), paths.embedding_metrics("pca"), paths.points_dir("pca")):
        assert not out.exists()


def test_missing_activations_is_a_user_error(workspace: Path) -> None:
    with pytest.raises(UserError, match="layers.json.*not found; run the stage that makes it"):
        reduce_stage.run(params(), "pca")


def test_row_count_mismatch_is_a_user_error(workspace: Path) -> None:
    x, labels = blobs()
    write_activations(workspace, {"input": x, "fc": x[:40]}, labels)
    with pytest.raises(UserError, match="40 rows but labels.npy has 60; rerun extract"):
        reduce_stage.run(params(), "pca")
    assert not paths.embedding_dir("pca").exists()


@pytest.mark.slow
def test_cli_reduce_and_probe_on_the_tiny_pipeline(staged_ws: Path) -> None:
    """Real fetch -> train -> extract outputs; reduce pca, reduce tsne and probe as a user runs them."""
    index = json.loads((staged_ws / "data/activations/layers.json").read_text())
    names = [row["name"] for row in index["layers"]]
    n = index["n"]
    for method in ("pca", "tsne"):
        run_cli("reduce", method, cwd=staged_ws)
        metrics = json.loads((staged_ws / f"metrics/embeddings/{method}.json").read_text())
        assert list(metrics) == names
        info = json.loads((staged_ws / f"data/embeddings/{method}/info.json").read_text())
        for name in names:
            if "skipped" in metrics[name]:
                assert info["layers"][name]["status"] == "skipped"
                continue
            coords = np.load(staged_ws / f"data/embeddings/{method}/{name}.npy")
            assert coords.shape == (n, 2) and np.isfinite(coords).all()
            assert 0.0 <= metrics[name]["knn_accuracy"] <= 1.0
            place = names.index(name) + 1
            assert len(read_csv(staged_ws / f"plots/points/{method}/{place:02d}_{name}.csv")) == n
        assert sum("skipped" not in m for m in metrics.values()) >= len(names) - 1
        # chance is 0.1: digits separate somewhat even in pixels (t-SNE), less on 2 principal axes
        assert metrics["input"]["knn_accuracy"] > (0.5 if method == "tsne" else 0.25)
        for layer in index["snapshot_layers"]:
            steps = [s["step"] for s in index["snapshots"]]
            assert info["snapshots"][layer] == steps
            last = np.load(staged_ws / f"data/embeddings/{method}/snapshots/{layer}/step_{steps[-1]:06d}.npy")
            np.testing.assert_array_equal(last, np.load(staged_ws / f"data/embeddings/{method}/{layer}.npy"))
        if method == "tsne":
            assert info["layers"]["input"]["params"]["perplexity"] == TINY_PARAMS["reduce"]["tsne"]["perplexity"]

    run_cli("probe", cwd=staged_ws)
    probes = json.loads((staged_ws / "metrics/probes.json").read_text())
    assert list(probes) == names and len(names) >= 10                       # input + every LeNet layer
    assert probes["input"]["knn_accuracy"] > 0.5                            # pixels: chance is 0.1
    widths = {row["name"]: row["dim"] for row in index["layers"]}
    max_dims = load_params(staged_ws / "params.yaml").probe.max_dims
    for name in names:
        assert 0.0 <= probes[name]["accuracy"] <= 1.0 and 0.0 <= probes[name]["knn_accuracy"] <= 1.0
        if widths[name] <= max_dims:                                         # probed as it is
            assert probes[name]["dims"] == widths[name], name
        else:                                                                # PCA-reduced first
            assert 1 <= probes[name]["dims"] <= max_dims, name
    assert probes[index["penultimate"]]["accuracy"] > 0.3                      # 2 epochs: well above chance


def _tree_bytes(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots for p in sorted([root] if root.is_file() else root.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_worker_processes_write_the_same_bytes(synthetic: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """reduce and probe map / probe the layers in worker processes: every output file is the same
    as when the stage's own process does all of it (skipped layers and snapshot frames included)."""
    from pipeline.stages import probe as probe_stage

    outputs = (paths.embedding_dir("tsne"), paths.embedding_metrics("tsne"), paths.points_dir("tsne"),
               paths.PROBE_METRICS)
    found = []
    for workers in ("1", "2"):
        monkeypatch.setenv("HIDDEN_SPACES_WORKERS", workers)
        reduce_stage.run(params(), "tsne")
        probe_stage.run(parse_params({}, "test"))
        found.append(_tree_bytes(*outputs))
    assert len(found[0]) > 10 and found[0] == found[1]
