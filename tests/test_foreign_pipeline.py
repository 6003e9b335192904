"""torchvision models through the whole pipeline: real `dvc repro` in a temporary git repository.

As cheap as the pipeline allows: 200 training images, one epoch, 100 test images, snapshots every 4
steps. ResNet-18 (small stem) through every stage with `dvc repro`, then `compare` against a LeNet
experiment on the same images (CKA across architectures); mobilenet_v3_small (no ReLU modules,
flattened maps) through the stages that depend on the architecture: train, extract, diagnose.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli, run_in_process, write_params
from tests.dvc_repo import dvc, git, make_repo, stages_ran

TINY = {"data": {"n_train": 200, "n_test": 100}, "train": {"epochs": 1, "batch_size": 50, "snapshot_every": 4},
        "extract": {"n_samples": 100}, "probe": {"max_iter": 100}}

EXPECTED = {
    "torchvision:resnet18": {
        "layers": ["input", "stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"],
        # 28 px, small stem: 64x28x28 = 50,176 values per image are pooled (> 16,384), 256x7x7 are not
        "spatial": {"stem": "mean", "layer1": "mean", "layer2": "mean", "layer3": "flatten", "layer4": "flatten",
                    "avgpool": "flatten", "fc": "flatten"},
        "dims": {"stem": 64, "layer1": 64, "layer2": 128, "layer3": 256 * 7 * 7, "layer4": 512 * 4 * 4,
                 "avgpool": 512, "fc": 10},
        "first_conv": "conv1", "relu_layers": ["stem", "layer1", "layer2", "layer3", "layer4"],
    },
    "torchvision:mobilenet_v3_small": {
        "layers": ["input", *(f"features.{i}" for i in range(13)), "avgpool", "classifier.0", "classifier.1",
                   "classifier.3"],
        "spatial": {"features.0": "flatten", "classifier.3": "flatten"},
        "dims": {"features.0": 16 * 28 * 28, "features.12": 576 * 2 * 2, "avgpool": 576, "classifier.1": 1024},
        "first_conv": "features.0.0", "relu_layers": [],
    },
}


def _json(path: Path):
    return json.loads(path.read_text())


def _check_layers(root: Path, arch: str) -> dict:
    """model.json and layers.json of ``arch`` as EXPECTED says; the layers.json index."""
    want = EXPECTED[arch]
    meta = _json(root / "data/model/model.json")
    assert meta["arch"] == arch and meta["output_layer"] == want["layers"][-1]
    index = _json(root / "data/activations/layers.json")
    rows = {row["name"]: row for row in index["layers"]}
    assert [row["name"] for row in index["layers"]] == want["layers"]
    assert index["penultimate"] == want["layers"][-2] and index["spatial"] == "auto"
    for name, pooling in want["spatial"].items():
        assert rows[name]["spatial"] == pooling, (name, rows[name])
    for name, dim in want["dims"].items():
        assert rows[name]["dim"] == dim, (name, rows[name])
        assert np.load(root / f"data/activations/{name}.npy", mmap_mode="r").shape == (100, dim)
    snaps = index["snapshots"]
    assert len(snaps) >= 2 and all((root / "data/activations" / s["dir"] / f"{index['penultimate']}.npy").exists()
                                   for s in snaps)
    return index


def _check_diagnostics(root: Path, arch: str, index: dict) -> None:
    want, rows = EXPECTED[arch], {row["name"]: row for row in index["layers"]}
    diag = _json(root / "metrics/diagnostics.json")
    for name in want["relu_layers"]:
        assert "dead_fraction" in diag[name], (name, diag[name])
    if want["relu_layers"]:
        assert diag["summary"]["n_units"] == sum(rows[n]["shape"][0] for n in want["relu_layers"])


@pytest.mark.slow
def test_mobilenet_through_the_architecture_stages(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_params(workspace, {**TINY, "model": {"arch": "torchvision:mobilenet_v3_small"}})
    run_in_process(workspace, monkeypatch, ("fetch",), ("train",), ("extract",), ("diagnose",))
    index = _check_layers(workspace, "torchvision:mobilenet_v3_small")
    _check_diagnostics(workspace, "torchvision:mobilenet_v3_small", index)


@pytest.mark.slow
def test_whole_pipeline(tmp_path: Path) -> None:
    arch = "torchvision:resnet18"
    want = EXPECTED[arch]
    root = make_repo(tmp_path / "repo", {**TINY, "model": {"arch": arch}})
    out = dvc("repro", cwd=root).stdout
    assert {"fetch", "train", "extract", "probe", "render", "diagnose", "export", "projector",
            "reduce@pca", "reduce@tsne", "reduce@umap"} <= stages_ran(out)
    index = _check_layers(root, arch)

    probes = _json(root / "metrics/probes.json")
    assert all(0.0 <= probes[name]["accuracy"] <= 1.0 for name in want["layers"])
    for method in ("pca", "tsne", "umap"):
        emb = _json(root / f"metrics/embeddings/{method}.json")
        assert set(want["layers"]) <= set(emb), method

    _check_diagnostics(root, arch, index)

    export = _json(root / "metrics/export.json")
    for fmt in ("onnx", "torchscript"):
        assert export[fmt]["argmax_agreement"] == 1.0, export
        assert export[fmt]["max_abs_diff"] < 1e-3, export

    figures = {p.name for p in (root / "plots/figures").iterdir()}
    first = want["first_conv"]
    for name in (f"filters_{first}.png", f"redundancy_{first}.png", "feature_maps.png", "dense_activations.png",
                 f"outliers_{index['penultimate']}.png", "class_distances.png", "class_embedding.png",
                 "confusion.png", "progression_tsne.png"):
        assert name in figures, (name, sorted(figures))
    assert any(n.startswith("evolution_") and n.endswith(".gif") for n in figures), sorted(figures)
    pooled = [n for n, p in want["spatial"].items() if p != "flatten"]
    if pooled:                                  # the map titles say which layers were pooled
        csv = next((root / "plots/points/tsne").glob(f"*_{pooled[0]}.csv")).read_text()
        assert "mean-pooled" in csv.splitlines()[1], csv.splitlines()[:2]

    # CKA across architectures: LeNet (an experiment of extract and what it needs) on the same images
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "resnet run", cwd=root)
    exp = dvc("exp", "run", "extract", "-S", "model.arch=lenet", "-n", "lenet", cwd=root)
    assert "train" in stages_ran(exp.stdout)
    proc = run_cli("compare", "HEAD", "lenet", cwd=root)
    cka = _json(root / "plots/compare/cka.json")
    assert cka["layers_a"] == want["layers"] and cka["layers_b"][0] == "input" and "act4" in cka["layers_b"]
    m = np.array(cka["matrix"], dtype=float)
    assert m.shape == (len(want["layers"]), len(cka["layers_b"]))
    assert m[0, 0] == pytest.approx(1.0, abs=1e-6)              # the same input pixels
    assert np.isfinite(m).all() and (m >= 0).all() and (m <= 1 + 1e-9).all()
    assert "resnet18" in proc.stdout and "lenet" in proc.stdout


_FACTORY = '''
from torch import nn


def tiny(input_shape, n_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, n_classes))
'''


@pytest.mark.slow
def test_custom_factory_is_a_dependency_of_train(tmp_path: Path) -> None:
    """model.arch: custom in a real DVC repository: the factory under models/ trains, and editing it
    reruns train (models/ is a dvc.yaml dependency)."""
    root = make_repo(tmp_path / "repo", {**TINY, "model": {"arch": "custom", "factory": "models.nets:tiny"}})
    (root / "models" / "nets.py").write_text(_FACTORY)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "a custom model", cwd=root)
    out = dvc("repro", "train", cwd=root).stdout
    assert {"fetch", "train"} <= stages_ran(out)
    meta = _json(root / "data/model/model.json")
    assert [row["name"] for row in meta["layers"]] == ["0", "1", "2", "3", "4"]
    assert meta["model"]["factory"] == "models.nets:tiny"
    assert stages_ran(dvc("repro", "train", cwd=root).stdout) == set()          # nothing changed
    (root / "models" / "nets.py").write_text(_FACTORY.replace("nn.Conv2d(c, 4, 3", "nn.Conv2d(c, 4, 5").replace(
        "padding=1", "padding=2"))
    assert stages_ran(dvc("repro", "train", cwd=root).stdout) == {"train"}
