"""The extract stage: every layer from input to output in one hooked pass, snapshots, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline import paths
from pipeline.config import ModelConfig
from pipeline.models import build_model
from pipeline.activations import choose_layers, record_activations
from pipeline.errors import ConfigError
from tests.conftest import run_cli, write_params


def test_layers_json_and_arrays(pipeline_ws):
    act = pipeline_ws / paths.ACTIVATIONS
    index = json.loads((act / "layers.json").read_text())
    names = [row["name"] for row in index["layers"]]
    assert names[0] == "input" and names[-1] == "logits" and "pool1" in names and "flatten" in names
    assert index["penultimate"] == "act4" and index["snapshot_layers"] == ["act4"]
    n = index["n"]
    assert n == 120
    for row in index["layers"]:
        array = np.load(act / f"{row['name']}.npy")
        assert array.shape == (n, row["dim"]) and array.dtype == np.float32
        assert row["dim"] == int(np.prod(row["shape"]))
    labels = np.load(act / "labels.npy")
    assert np.bincount(labels, minlength=10).min() >= 11          # stratified: 12 per class
    preds, conf, logits = (np.load(act / f) for f in ("preds.npy", "confidence.npy", "logits.npy"))
    assert np.array_equal(preds, logits.argmax(1))
    assert np.allclose(conf, np.exp(logits.max(1)) / np.exp(logits).sum(1), atol=1e-5)
    assert not list(act.rglob("*.partial"))


def test_snapshots_recorded_for_each_saved_step(pipeline_ws):
    act = pipeline_ws / paths.ACTIVATIONS
    index = json.loads((act / "layers.json").read_text())
    assert [s["step"] for s in index["snapshots"]] == [0, 5, 10, 15, 18]     # 540 of 600 trained: 9 steps/epoch
    final = np.load(act / "act4.npy")
    last = np.load(act / index["snapshots"][-1]["dir"] / "act4.npy")
    first = np.load(act / index["snapshots"][0]["dir"] / "act4.npy")
    assert np.allclose(final, last, atol=1e-6)                 # the last snapshot is the final model
    assert not np.allclose(final, first, atol=1e-3)            # step 0 is the untrained network


def test_single_pass_equals_running_each_prefix():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="lenet"), (1, 28, 28), 10).eval()
    images = torch.randint(0, 256, (37, 1, 28, 28), dtype=torch.uint8)
    normalize = lambda x: x.float() / 255.0 - 0.5                          # noqa: E731
    layers = choose_layers(model, None)
    from pipeline.models import describe_layers

    dims = {r["name"]: int(np.prod(r["shape"])) for r in describe_layers(model, (1, 28, 28))}
    dims["input"] = 784
    sinks = {name: np.zeros((37, dims[name]), np.float32) for name in layers}
    logits = record_activations(model, images, normalize, layers, sinks, batch_size=10)
    x = normalize(images)
    with torch.no_grad():
        for i, (name, _) in enumerate(model.named_layers()):
            prefix = torch.nn.Sequential(*list(model.layers.children())[: i + 1])
            assert np.allclose(sinks[name], prefix(x).reshape(37, -1).numpy(), atol=1e-5), name
        assert np.allclose(logits.numpy(), model(x).numpy(), atol=1e-5)
    assert np.allclose(sinks["input"], x.reshape(37, -1).numpy())
    assert not model.training


def test_choose_layers_keeps_forward_order_and_rejects_unknown():
    model = build_model(ModelConfig(arch="lenet"), (1, 28, 28), 10)
    assert choose_layers(model, ["fc1", "input", "conv1"]) == ["input", "conv1", "fc1"]
    with pytest.raises(ConfigError, match=r"extract.layers: unknown layer 'conv9'; valid names: input, conv1, act1"):
        choose_layers(model, ["conv9"])


@pytest.mark.parametrize(
    "overrides, code, expected",
    [
        ({"extract": {"n_samples": 5000}}, 2,
         "error: extract.n_samples = 5000 is larger than the test split (200 images); use at most 200, or null for all of them"),
        ({"extract": {"layers": ["conv1", "fc7"]}}, 2, "error: extract.layers: unknown layer 'fc7'; valid names: input"),
        ({"extract": {"snapshot_layers": ["nope"]}}, 2, "error: extract.snapshot_layers: unknown layer 'nope'"),
    ],
)
def test_bad_extract_params(staged_ws, overrides, code, expected):
    write_params(staged_ws, overrides)
    proc = run_cli("extract", cwd=staged_ws, check=False)
    assert proc.returncode == code
    assert proc.stderr.strip().splitlines()[-1].startswith(expected)
    assert "Traceback" not in proc.stderr
    assert not (staged_ws / paths.ACTIVATIONS).exists()


@pytest.mark.slow
def test_float16_and_layer_subset(staged_ws):
    write_params(staged_ws, {"extract": {"dtype": "float16", "layers": ["pool2", "fc1"], "n_samples": 50}})
    run_cli("extract", cwd=staged_ws)
    act = staged_ws / paths.ACTIVATIONS
    index = json.loads((act / "layers.json").read_text())
    assert [r["name"] for r in index["layers"]] == ["pool2", "fc1"]
    assert np.load(act / "pool2.npy").dtype == np.float16 and np.load(act / "fc1.npy").shape == (50, 120)
    assert not (act / "conv1.npy").exists()


@pytest.mark.slow
@pytest.mark.parametrize("split, n_samples", [("all", None), ("train", 90)])
def test_split_train_and_all(staged_ws, split, n_samples):
    """extract.split: the activations of the input layer are the chosen pool's images, and
    split_images (what render and projector show) returns the same images for indices.npy."""
    from pipeline.datasets import load_prepared, split_images

    write_params(staged_ws, {"extract": {"split": split, "n_samples": n_samples, "layers": ["input", "fc1"],
                                         "dtype": "float16"}})
    run_cli("extract", cwd=staged_ws)
    act = staged_ws / paths.ACTIVATIONS
    index = json.loads((act / "layers.json").read_text())
    data = load_prepared(staged_ws / paths.PREPARED)
    pool = (np.concatenate([data.test_images, data.train_images]) if split == "all" else data.train_images)
    labels = (np.concatenate([data.test_labels, data.train_labels]) if split == "all" else data.train_labels)
    n = len(pool) if n_samples is None else n_samples
    assert index["split"] == split and index["n"] == n
    assert split != "all" or n == 800                                       # 200 test + 600 training images
    rows = np.load(act / "indices.npy")
    assert len(rows) == n and np.array_equal(np.load(act / "labels.npy"), labels[rows])
    images = split_images(staged_ws / paths.PREPARED, split, rows)
    assert np.array_equal(images, pool[rows])
    x = np.load(act / "input.npy").astype(np.float32)
    mean, std = data.info["mean"][0], data.info["std"][0]
    expected = (images.reshape(n, -1).astype(np.float32) / 255.0 - mean) / std      # what the model saw
    assert np.allclose(x, expected, atol=0.01 * np.abs(expected).max())
    with pytest.raises(Exception, match="reach past"):
        split_images(staged_ws / paths.PREPARED, split, np.array([len(pool)]))
