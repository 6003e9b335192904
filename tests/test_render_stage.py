"""The render stage on a real tiny pipeline: every figure file, the DVC confusion CSV, the metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline import paths
from pipeline.config import FIGURE_FAMILIES, load_params
from pipeline.errors import ConfigError
from pipeline.stages import render
from tests.conftest import run_cli, run_in_process, write_params

PNG = b"\x89PNG\r\n\x1a\n"


def low_dpi(ws: Path, **render_params) -> None:
    """Draw at 50 dpi in tests: the files and their contents are the same, rasterising is cheaper."""
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["render"] = {"dpi": 50, **render_params}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))


def write_synthetic_embedding(ws: Path, method: str, *, dims: int = 3, skip: str | None = None) -> list[str]:
    """data/embeddings/<method>/ and metrics/embeddings/<method>.json in the reduce format (ARTIFACTS.md),
    from a numpy PCA of the activations; ``skip`` is recorded as a skipped layer (no coordinates)."""
    act = ws / paths.ACTIVATIONS
    index = json.loads((act / "layers.json").read_text())
    labels = np.load(act / "labels.npy")
    out = ws / paths.embedding_dir(method)
    out.mkdir(parents=True)
    info = {"method": method, "n_components": dims, "layers": {}, "snapshots": {}}
    metrics = {}
    mapped = []
    for row in index["layers"]:
        name = row["name"]
        if name == skip:
            info["layers"][name] = {"status": "skipped", "reason": "synthetic skip"}
            metrics[name] = {"skipped": "synthetic skip"}
            continue
        x = np.load(act / f"{name}.npy").astype(np.float64)
        x -= x.mean(axis=0)
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        np.save(out / f"{name}.npy", (u[:, :dims] * s[:dims]).astype(np.float32))
        info["layers"][name] = {"status": "ok", "reason": None}
        metrics[name] = {"knn_accuracy": 0.5, "trustworthiness": 0.9}
        mapped.append(name)
    assert len(labels) == index["n"]
    (out / "info.json").write_text(json.dumps(info))
    (ws / paths.EMBEDDING_METRICS).mkdir(parents=True, exist_ok=True)
    (ws / paths.embedding_metrics(method)).write_text(json.dumps(metrics))
    return mapped


def independent_redundant_pairs(ws: Path, layer: str, threshold: float) -> int:
    from safetensors.numpy import load_file

    state = load_file(str(ws / paths.MODEL / "model.safetensors"))
    (key,) = [k for k in state if k.endswith(f"{layer}.weight")]
    flat = state[key].reshape(len(state[key]), -1).astype(np.float64)
    corr = np.corrcoef(flat)
    return int(sum(abs(corr[i, j]) >= threshold for i in range(len(flat)) for j in range(i + 1, len(flat))))


@pytest.mark.slow
def test_render_on_the_tiny_pipeline(staged_ws: Path) -> None:
    ws = staged_ws
    low_dpi(ws)
    run_cli("reduce", "pca", cwd=ws)                                     # the real reduce format
    tsne_layers = write_synthetic_embedding(ws, "tsne", dims=3, skip="flatten")
    proc = run_cli("render", cwd=ws)
    assert "data/embeddings/umap not found" in proc.stderr              # missing method: warned, skipped

    index = json.loads((ws / paths.ACTIVATIONS / "layers.json").read_text())
    layers = [row["name"] for row in index["layers"]]
    figures = ws / paths.FIGURES
    files = sorted(p.name for p in figures.iterdir())
    assert not [f for f in files if f.startswith(".")]                 # no temporary files left
    layer = index["penultimate"]
    expected = {f"scatter_pca_{name}.png" for name in layers} | {f"scatter_tsne_{name}.png" for name in tsne_layers}
    expected |= {"dataset_mean_std.png", "progression_pca.png", "progression_tsne.png", "filters_conv1.png", "filters_conv2.png",
                 "redundancy_conv1.png", "feature_maps.png", "dense_activations.png", "confusion.png",
                 f"outliers_{layer}.png", "class_distances.png", f"class_distances_{layer}.png",
                 "class_embedding.png", f"evolution_pca_{layer}.png", f"evolution_pca_{layer}.gif",
                 "redundancy_conv2.png", "filters_evolution_conv1.png", "filters_evolution_conv1.gif",
                 "filters_evolution_conv2.png", "filters_evolution_conv2.gif", "feature_maps_confident_unsure.png",
                 "dataset_montage.png"}
    expected |= {f"thumbnails_{m}_{name}.png" for m in ("pca", "tsne") for name in ("input", layer)}
    assert set(files) == expected
    assert "scatter_tsne_flatten.png" not in files and not any("umap" in f for f in files)
    for name in files:
        data = (figures / name).read_bytes()
        if name.endswith(".png"):
            assert data[:8] == PNG, name
            with Image.open(figures / name) as im:
                assert min(im.size) >= 100, name
    with Image.open(figures / f"evolution_pca_{layer}.gif") as gif:
        assert gif.n_frames == len(index["snapshots"]) >= 2
    with Image.open(figures / "filters_evolution_conv2.gif") as gif:
        assert gif.n_frames == len(index["snapshots"])                # one frame per weight snapshot

    labels = np.load(ws / paths.ACTIVATIONS / "labels.npy")
    preds = np.load(ws / paths.ACTIVATIONS / "preds.npy")
    with open(ws / paths.CONFUSION, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["actual", "predicted"]
    assert len(rows) == len(labels) == index["n"]
    classes = index["classes"]
    assert [r["actual"] for r in rows] == [classes[i] for i in labels]
    assert [r["predicted"] for r in rows] == [classes[i] for i in preds]

    metrics = json.loads((ws / paths.RENDER_METRICS).read_text())
    threshold = load_params(ws / "params.yaml").render.redundancy_threshold
    assert metrics["redundant_filter_pairs"] == {"conv1": independent_redundant_pairs(ws, "conv1", threshold)}
    assert list(metrics["redundancy"]) == ["conv1", "conv2"]            # every conv layer
    for conv in ("conv1", "conv2"):
        row = metrics["redundancy"][conv]
        assert row["weight_pairs"] == independent_redundant_pairs(ws, conv, threshold)
        assert row["filters"] == index["layers"][layers.index(conv)]["shape"][0]
        assert 0 <= row["redundant_fraction"] <= 1 and row["activation_pairs"] >= 0
    assert metrics["figures"] == len(files)
    assert metrics["accuracy"] == pytest.approx(float((labels == preds).mean()))
    assert list(metrics["class_separation"]) == layers


@pytest.mark.slow
def test_bad_sample_index_is_one_line_and_leaves_nothing(staged_ws: Path) -> None:
    low_dpi(staged_ws, sample_index=100_000)
    proc = run_cli("render", cwd=staged_ws, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: render.sample_index = 100000")
    assert "Traceback" not in proc.stderr
    assert not (staged_ws / paths.FIGURES).exists() and not (staged_ws / paths.RENDER_METRICS).exists()


def test_unknown_render_layer_names_the_valid_ones(staged_ws: Path) -> None:
    params = load_params(staged_ws / "params.yaml")
    params.render.layer = "fc9"
    with pytest.raises(ConfigError, match=r"render.layer = fc9: .*use one of input, conv1"):
        render.run(params)
    assert not (staged_ws / paths.FIGURES).exists()


def test_dense_layers_pick_activations_after_linear_layers(staged_ws: Path) -> None:
    params = load_params(staged_ws / "params.yaml")
    inp = render.load_inputs(params.render)
    assert render.dense_layers(inp) == ["act3", "act4", "logits"]          # LeNet: fc1->act3, fc2->act4
    assert inp.images.shape == (inp.index["n"], 28, 28) and inp.images.dtype == np.uint8
    raw = np.load(staged_ws / paths.PREPARED / "test_images.npy")
    assert np.array_equal(inp.images, raw[inp.indices, 0])               # the un-normalised uint8 pixels


@pytest.mark.slow
def test_render_mlp_without_embeddings(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_params(workspace, {"data": {"n_train": 200}, "model": {"arch": "mlp", "hidden": [32, 16]},
                             "train": {"epochs": 1}, "extract": {"n_samples": 60}, "render": {"dpi": 50}})
    run_in_process(workspace, monkeypatch, ("fetch",), ("train",), ("extract",))
    proc = run_cli("render", cwd=workspace)
    for method in ("pca", "tsne", "umap"):
        assert f"data/embeddings/{method} not found" in proc.stderr
    files = {p.name for p in (workspace / paths.FIGURES).iterdir()}
    assert {"weights_fc1.png", "redundancy_fc1.png", "dense_activations.png", "confusion.png",
            "class_embedding.png", "outliers_act2.png", "class_distances.png"} <= files
    assert not any(f.startswith(("scatter_", "progression_", "filters_", "feature_maps", "evolution_")) for f in files)
    metrics = json.loads((workspace / paths.RENDER_METRICS).read_text())
    assert set(metrics["redundant_filter_pairs"]) == {"fc1"}


@pytest.mark.slow
def test_numbers_come_before_drawing_and_jobs_draw_anywhere(staged_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """render.json is the planners' pure pass: known before any figure is drawn, the same however
    many are drawn; every job pickles and draws its file on its own, as a worker process would."""
    import pickle

    from pipeline.figures import FigureJob, draw, draw_all

    write_synthetic_embedding(staged_ws, "pca", dims=2)
    low_dpi(staged_ws)
    params = load_params(staged_ws / "params.yaml")
    plan = render.plan_figures(render.load_inputs(params.render), params.render)
    assert {"redundant_filter_pairs", "max_filter_correlation", "accuracy", "outliers",
            "class_separation"} <= set(plan.metrics)
    names = [job.name for job in plan.jobs]
    assert len(names) == len(set(names)) and all(isinstance(job, FigureJob) for job in plan.jobs)
    job = pickle.loads(pickle.dumps(next(j for j in plan.jobs if j.name == "progression_pca.png")))
    (staged_ws / "one").mkdir()
    assert draw(job, staged_ws / "one", dpi=50) == "progression_pca.png"
    assert (staged_ws / "one" / "progression_pca.png").read_bytes()[:8] == PNG
    for other in plan.jobs:
        pickle.dumps(other)
    # render.figures: each family's planner gives its own figures, together all of them, and the
    # numbers of every family whichever are drawn
    inp = render.load_inputs(params.render)
    by_family = {family: [job.name for job in render.plan_figures(
        inp, params.render.model_copy(update={"figures": [family]})).jobs] for family in FIGURE_FAMILIES}
    assert sorted(sum(by_family.values(), [])) == sorted(names)
    assert all(by_family[f] for f in FIGURE_FAMILIES if f not in ("evolution", "autoencoder"))   # no snapshot maps here
    assert {"filters_evolution_conv1.gif", "confusion.png"} <= set(by_family["filters_evolution"] + by_family["classifier"])
    # the stage drawing two families (GIFs and PNGs, in two worker processes): render.json is still
    # the whole plan's numbers, so it cannot depend on which figures were drawn (every figure is
    # drawn by test_render_on_the_tiny_pipeline)
    low_dpi(staged_ws, figures=["filters_evolution", "classifier"])
    params = load_params(staged_ws / "params.yaml")
    chosen = set(by_family["filters_evolution"] + by_family["classifier"])
    monkeypatch.setenv("HIDDEN_SPACES_WORKERS", "2")
    render.run(params)
    written = json.loads((staged_ws / paths.RENDER_METRICS).read_text())
    assert written == json.loads(json.dumps({**plan.metrics, "figures": len(chosen)}))
    assert sorted(p.name for p in (staged_ws / paths.FIGURES).iterdir()) == sorted(chosen)
    # drawn in two worker processes above, here in this one: the same bytes, GIFs included
    (staged_ws / "serial").mkdir()
    some = [job for job in plan.jobs if job.name in chosen]
    draw_all(some, staged_ws / "serial", dpi=params.render.dpi, workers=1)
    for job in some:
        assert (staged_ws / "serial" / job.name).read_bytes() == (staged_ws / paths.FIGURES / job.name).read_bytes(), job.name


@pytest.mark.parametrize("value, message", [
    (["maps", "filters"], "params.yaml: render.figures.1 = filters: must be 'maps', 'weights', 'feature_maps', "),
    ([], "params.yaml: render.figures = []: empty list; leave it out (null) for every figure, or name families "
         "such as [maps]")])
def test_bad_figure_family_is_one_line(staged_ws: Path, value: list, message: str) -> None:
    low_dpi(staged_ws, figures=value)
    proc = run_cli("render", cwd=staged_ws, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {message}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (staged_ws / paths.FIGURES).exists()


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_worker_count_is_one_line(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.errors import UsageError
    from pipeline.runtime import worker_processes

    monkeypatch.setenv("HIDDEN_SPACES_WORKERS", value)
    with pytest.raises(UsageError, match=f"HIDDEN_SPACES_WORKERS='{value}' is not a whole number"):
        worker_processes(60)
    monkeypatch.setenv("HIDDEN_SPACES_WORKERS", "8")
    assert worker_processes(3) == 3                         # never more processes than jobs
    monkeypatch.delenv("HIDDEN_SPACES_WORKERS")
    assert worker_processes(3) == 1                         # a handful of jobs: not worth a process
