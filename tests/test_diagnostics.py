"""Dead / saturated units and class tightness: pure functions on synthetic activations with known
answers, the figures, and the diagnose stage through the CLI on the tiny staged workspace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import diagnostics as dg
from pipeline.plots import diagnostics as pd
from tests.conftest import run_cli

# --- which layers get unit numbers ---------------------------------------------------------------

LENET_LAYERS = [{"name": n, "type": t} for n, t in [
    ("conv1", "Conv2d"), ("act1", "Tanh"), ("pool1", "AvgPool2d"), ("conv2", "Conv2d"), ("act2", "Tanh"),
    ("pool2", "AvgPool2d"), ("flatten", "Flatten"), ("fc1", "Linear"), ("act3", "Tanh"), ("logits", "Linear")]]


def test_layer_kinds_pooling_inherits_and_pre_activations_have_none():
    kinds = dg.layer_kinds(LENET_LAYERS)
    assert kinds == {"conv1": None, "act1": "tanh", "pool1": "tanh", "conv2": None, "act2": "tanh",
                     "pool2": "tanh", "flatten": "tanh", "fc1": None, "act3": "tanh", "logits": None}
    cnn = [{"name": "conv1", "type": "Conv2d"}, {"name": "bn1", "type": "BatchNorm2d"},
           {"name": "act1", "type": "ReLU"}, {"name": "pool1", "type": "MaxPool2d"},
           {"name": "conv2", "type": "Conv2d"}, {"name": "pool2", "type": "MaxPool2d"}]
    kinds = dg.layer_kinds(cnn)
    assert kinds["act1"] == kinds["pool1"] == "relu"
    assert kinds["bn1"] is None and kinds["pool2"] is None           # pooling a pre-activation: no rule
    # an activation module of an unknown type, named like an activation, takes the model's activation
    assert dg.layer_kinds([{"name": "act3", "type": "Hardtanh"}], default="tanh") == {"act3": "tanh"}
    assert dg.layer_kinds([{"name": "fc1", "type": "Hardtanh"}], default="tanh") == {"fc1": None}


def test_resolved_activation_arch_defaults():
    assert dg.resolved_activation({"model": {"arch": "lenet", "activation": None}}) == "tanh"
    assert dg.resolved_activation({"model": {"arch": "cnn", "activation": None}}) == "relu"
    assert dg.resolved_activation({"model": {"arch": "lenet", "activation": "sigmoid"}}) == "sigmoid"


# --- dead and saturated units ------------------------------------------------------------------------

def test_dense_relu_dead_units_exact():
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(40, 6)), 0).astype(np.float32)
    acts[:, 1] = 0.0                                    # dead: exactly zero
    acts[:, 4] = 1e-8                                   # dead: below eps
    acts[:, 5] = 0.0
    acts[7, 5] = 0.3                                    # alive on one input only
    stats = dg.unit_activity(acts, (6,), "relu", eps=1e-6)
    assert stats["activity"][1] == 0 and stats["activity"][4] == 0
    assert stats["activity"][5] == pytest.approx(1 / 40)
    np.testing.assert_allclose(stats["activity"], stats["density"])     # dense: the same thing
    assert np.isnan(stats["saturated"])
    summary = dg.dead_summary(stats["activity"], "relu", stats["saturated"], stats["density"])
    assert summary["n_dead"] == 2 and summary["n_units"] == 6
    assert summary["dead_fraction"] == pytest.approx(2 / 6)
    assert "saturated_fraction" not in summary                          # rectifiers do not saturate


def test_conv_channel_dead_only_when_inactive_everywhere():
    n, c, h, w = 10, 3, 2, 2
    maps = np.zeros((n, c, h, w), dtype=np.float32)
    maps[3, 0, 1, 1] = 0.5                               # channel 0: one position of one image
    maps[:, 1] = 1.0                                     # channel 1: everywhere
    stats = dg.unit_activity(maps.reshape(n, -1), (c, h, w), "relu")
    np.testing.assert_allclose(stats["activity"], [1 / n, 1.0, 0.0])
    np.testing.assert_allclose(stats["density"], [1 / (n * h * w), 1.0, 0.0])
    assert dg.dead_summary(stats["activity"], "relu")["n_dead"] == 1


def test_tanh_and_sigmoid_saturation():
    acts = np.array([[0.999, 0.2, -0.995],
                     [-0.999, 0.995, -0.999],
                     [0.9999, 0.0, 0.5]], dtype=np.float32)
    stats = dg.unit_activity(acts, (3,), "tanh", saturation=0.99)
    np.testing.assert_allclose(stats["activity"], [0.0, 2 / 3, 1 / 3])    # unit 0 always saturated: dead
    assert stats["saturated"] == pytest.approx(6 / 9)
    summary = dg.dead_summary(stats["activity"], "tanh", stats["saturated"])
    assert summary["n_dead"] == 1 and summary["saturated_fraction"] == pytest.approx(6 / 9)

    sig = np.array([[0.995, 0.5], [0.004, 0.995]], dtype=np.float32)
    stats = dg.unit_activity(sig, (2,), "sigmoid", saturation=0.99)
    np.testing.assert_allclose(stats["activity"], [0.0, 0.5])
    assert stats["saturated"] == pytest.approx(3 / 4)
    # tanh zero is the responsive centre, not dead
    assert dg.unit_activity(np.zeros((4, 2)), (2,), "tanh")["activity"].tolist() == [1.0, 1.0]


def test_unit_activity_chunks_match_brute_force():
    rng = np.random.default_rng(1)
    acts = np.maximum(rng.normal(size=(700, 4 * 3 * 3)) - 1.5, 0).astype(np.float32)   # > one chunk of rows
    stats = dg.unit_activity(acts, (4, 3, 3), "relu")
    active = acts.reshape(700, 4, 9) > 1e-6
    np.testing.assert_allclose(stats["activity"], active.any(axis=2).mean(axis=0))
    np.testing.assert_allclose(stats["density"], active.mean(axis=(0, 2)))


def test_unit_activity_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown activation kind"):
        dg.unit_activity(np.zeros((2, 3)), (3,), "softplus")
    with pytest.raises(ValueError, match="columns"):
        dg.unit_activity(np.zeros((2, 8)), (3, 2, 2), "relu")


# --- class tightness ---------------------------------------------------------------------------------

def test_class_tightness_known_values():
    # class 0 at 0 +- 1, class 1 at 10 +- 2 (1-D): within 1 and 2, centroid gap 10
    x = np.array([[-1.0], [1.0], [8.0], [12.0]])
    y = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(dg.class_tightness(x, y, 2), [0.1, 0.2])
    # three classes on a line at 0, 3, 6 (gaps 3, 3, 6 -> mean 4), spreads 1, 0, 2
    x = np.array([[-1.0], [1.0], [3.0], [3.0], [4.0], [8.0]])
    y = np.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(dg.class_tightness(x, y, 3), [1 / 4, 0.0, 2 / 4])
    summary = dg.tightness_summary(dg.class_tightness(x, y, 3), ["a", "b", "c"])
    assert summary == pytest.approx({"a": 0.25, "b": 0.0, "c": 0.5, "mean": 0.25})


def test_class_tightness_absent_class_and_coinciding_centroids():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 2.0]])
    y = np.array([0, 0, 2, 2])
    t = dg.class_tightness(x, y, 3)
    assert np.isnan(t[1]) and np.isfinite(t[[0, 2]]).all()
    assert dg.tightness_summary(t, ["a", "b", "c"])["mean"] == pytest.approx(np.nanmean(t))
    assert np.isnan(dg.class_tightness(np.zeros((6, 3)), np.array([0, 0, 1, 1, 2, 2]), 3)).all()   # dead layer


def test_class_tightness_chunks_match_brute_force():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 5)) + np.repeat(np.eye(3, 5) * 4, 200, axis=0)
    y = np.repeat(np.arange(3), 200)
    cents = np.stack([x[y == k].mean(0) for k in range(3)])
    within = np.array([np.linalg.norm(x[y == k] - cents[k], axis=1).mean() for k in range(3)])
    gaps = [np.linalg.norm(cents[i] - cents[j]) for i in range(3) for j in range(i + 1, 3)]
    np.testing.assert_allclose(dg.class_tightness(x.astype(np.float32), y, 3), within / np.mean(gaps), rtol=1e-5)


# --- figures and colour helpers -------------------------------------------------------------------

def test_activity_histograms_dead_bar_counts_dead_units():
    activity = {"act1": np.array([0.0, 0.0, 0.5, 1.0]), "act2": np.array([0.2, 0.9, 0.9])}
    summaries = {n: dg.dead_summary(a, "relu") for n, a in activity.items()}
    fig = pd.activity_histograms(["act1", "act2"], activity, summaries, {"act1": "relu", "act2": "relu"},
                                 n_inputs=50)
    heights = [[p.get_height() for p in ax.patches if p.get_gid() == "dead-bar"] for ax in fig.axes[:2]]
    assert heights == [[2], [0]]
    assert "2/4 dead" in fig.axes[0].get_title()
    with pytest.raises(ValueError):
        pd.activity_histograms([], {}, {}, {}, n_inputs=1)


def test_activity_histograms_say_saturated_for_tanh_and_count_whole_units():
    activity = {"act1": np.array([0.0, 0.0, 0.0, 0.5, 1.0]), "act2": np.array([0.0, 0.9, 0.9])}
    summaries = {"act1": dg.dead_summary(activity["act1"], "tanh", 0.4),
                 "act2": dg.dead_summary(activity["act2"], "relu")}
    fig = pd.activity_histograms(["act1", "act2"], activity, summaries, {"act1": "tanh", "act2": "relu"},
                                 n_inputs=50)
    assert "3/5 saturated" in fig.axes[0].get_title() and "dead" not in fig.axes[0].get_title()
    assert "1/3 dead" in fig.axes[1].get_title()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("saturated" in t for t in legend) and any(t.startswith("dead") for t in legend)
    assert "saturated =" in fig._suptitle.get_text() and "dead =" in fig._suptitle.get_text()
    fig.canvas.draw()
    for ax in fig.axes[:2]:
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    only_tanh = pd.activity_histograms(["act1"], activity, summaries, {"act1": "tanh"}, n_inputs=50)
    assert not any("dead" in t.get_text() for t in only_tanh.legends[0].get_texts())
    assert "dead" not in only_tanh._suptitle.get_text()


def test_tightness_bars_one_bar_per_class_shared_scale():
    t = {"fc1": np.array([0.5, 0.7, 0.2]), "fc2": np.array([0.1, np.nan, 0.3])}
    fig = pd.tightness_bars(["fc1", "fc2"], t, ["a", "b", "c"])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [len(ax.patches) for ax in axes] == [3, 3]
    assert axes[0].get_ylim() == axes[1].get_ylim()
    assert [p.get_height() for p in axes[0].patches] == pytest.approx([0.5, 0.7, 0.2])


def test_rgb_filter_tiles_per_filter_symmetric_scale():
    w = np.zeros((3, 3, 2, 2))
    w[0, 0, 0, 0] = 2.0                                  # red peak of filter 0
    w[0, 2, 1, 1] = -1.0                                 # half as strong, negative blue
    w[1, 1, 0, 1] = -0.01                                # a weak filter still reaches full contrast
    tiles = pd.rgb_filter_tiles(w)
    assert tiles.shape == (3, 2, 2, 3)
    assert tiles[0, 0, 0, 0] == pytest.approx(1.0) and tiles[0, 1, 1, 2] == pytest.approx(0.25)
    assert tiles[1, 0, 1, 1] == pytest.approx(0.0)
    np.testing.assert_allclose(tiles[2], 0.5)           # all-zero filter: mid-grey
    assert pd.rgb_filter_tiles(np.ones((2, 1, 3, 3))).shape == (2, 3, 3)
    with pytest.raises(ValueError):
        pd.rgb_filter_tiles(np.ones((2, 4, 3, 3)))
    fig = pd.rgb_filter_figure(w, layer="conv1")
    assert sum(ax.get_visible() for ax in fig.axes) == 3


def test_display_images_channel_last():
    rgb = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    out = pd.display_images(rgb)
    assert out.shape == (2, 4, 5, 3) and out[1, 2, 3, 1] == rgb[1, 1, 2, 3]
    assert pd.display_images(rgb[:, :1]).shape == (2, 4, 5)


# --- the stage -----------------------------------------------------------------------------------

def _layers(ws: Path) -> list[dict]:
    return json.loads((ws / "data/activations/layers.json").read_text())["layers"]


@pytest.mark.slow
def test_diagnose_cli_metrics_per_layer(staged_ws: Path):
    proc = run_cli("diagnose", cwd=staged_ws)
    metrics = json.loads((staged_ws / "metrics/diagnostics.json").read_text())
    classes = json.loads((staged_ws / "data/activations/layers.json").read_text())["classes"]
    names = [row["name"] for row in _layers(staged_ws)]
    assert set(metrics) == set(names) | {"summary"}
    for name in names:
        assert set(metrics[name]["tightness"]) == set(classes) | {"mean"}
        assert metrics[name]["tightness"]["mean"] > 0
    for name in ("act1", "pool1", "act2", "pool2", "act3", "act4"):    # tanh LeNet: unit numbers
        m = metrics[name]
        assert 0.0 <= m["dead_fraction"] <= 1.0 and 0.0 <= m["saturated_fraction"] <= 1.0
    for name in ("input", "conv1", "conv2", "fc1", "fc2", "logits"):    # pre-activations: none
        assert "dead_fraction" not in metrics[name]
    assert metrics["act1"]["n_units"] == 6 and metrics["act3"]["n_units"] == 120
    assert metrics["summary"]["n_units"] == 6 + 16 + 120 + 84          # activation layers only
    # every number is a number: `dvc metrics diff` friendly
    flat = [v for m in metrics.values() for v in m.values() if not isinstance(v, dict)]
    assert all(isinstance(v, (int, float)) for v in flat)
    for fig in ("activity.png", "tightness.png"):
        assert (staged_ws / "plots/diagnostics" / fig).stat().st_size > 10_000
    assert "warning" not in proc.stderr


@pytest.mark.slow
def test_diagnose_warns_about_a_mostly_dead_layer(staged_ws: Path):
    path = staged_ws / "data/activations/act3.npy"
    acts = np.load(path)
    acts[:, :100] = 1.0                                  # 100 of 120 tanh units always saturated
    np.save(path, acts)
    proc = run_cli("diagnose", cwd=staged_ws)
    metrics = json.loads((staged_ws / "metrics/diagnostics.json").read_text())
    assert metrics["act3"]["n_dead"] == 100
    assert metrics["summary"]["layers_mostly_dead"] == 1
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "act3" in warnings[0] and "100 of 120" in warnings[0]


def test_diagnose_missing_activations_is_one_line_and_leaves_nothing(staged_ws: Path):
    (staged_ws / "data/activations/act2.npy").unlink()
    proc = run_cli("diagnose", cwd=staged_ws, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "act2.npy" in proc.stderr and "Traceback" not in proc.stderr
    assert not (staged_ws / "metrics/diagnostics.json").exists()
    assert not (staged_ws / "plots/diagnostics").exists()
