"""Colour (3-channel, CIFAR-shaped) inputs through render: RGB filter tiles, RGB images in every figure.

The slow test needs no CIFAR download: it writes ``data/prepared`` itself in the fetch format
(ARTIFACTS.md), 3x32x32 uint8 images made from mnist-5k digits - strokes tinted by class on a
coloured background, so colour carries real structure - then runs train -> extract -> reduce
pca -> ``python -m pipeline render``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import paths
from pipeline.plots.common import class_colors
from pipeline.plots.diagnostics import rgb_filter_tiles
from pipeline.plots.weights import filter_montage
from tests.conftest import run_cli, run_in_process, write_params

PNG = b"\x89PNG\r\n\x1a\n"


def colourize(grey: np.ndarray, labels: np.ndarray, seed: int, side: int = 32) -> np.ndarray:
    """(N, 1, 28, 28) uint8 digits -> (N, 3, side, side) uint8: centred, the ink in the class's tab10
    colour, the background a random muted colour per image (seeded)."""
    n, _, h, w = grey.shape
    top, left = (side - h) // 2, (side - w) // 2
    ink = np.zeros((n, side, side), dtype=np.float64)
    ink[:, top:top + h, left:left + w] = grey[:, 0] / 255.0                       # (N, S, S) in [0, 1]
    fg = class_colors(10)[np.asarray(labels) % 10, :3]                            # (N, 3)
    bg = np.random.default_rng(seed).uniform(0.25, 0.75, size=(n, 3))            # (N, 3)
    rgb = bg[:, :, None, None] * (1 - ink[:, None]) + fg[:, :, None, None] * ink[:, None]
    return np.round(rgb * 255).astype(np.uint8)


def write_colour_prepared(src: Path, dst: Path) -> dict:
    """Read a grey ``data/prepared`` (fetch output) and write its colour version to ``dst``."""
    from pipeline.datasets import Prepared, _channel_stats, load_prepared, save_prepared

    grey = load_prepared(src)
    train = colourize(grey.train_images, grey.train_labels, seed=1)
    test = colourize(grey.test_images, grey.test_labels, seed=2)
    mean, std = _channel_stats(train)
    info = {**grey.info, "dataset": "colour-digits", "source": "mnist-5k tinted by the tests",
            "shape": list(train.shape[1:]), "mean": mean, "std": std}
    save_prepared(dst, Prepared(train, grey.train_labels, test, grey.test_labels, list(grey.classes), info))
    return info


def test_rgb_tiles_are_symmetric_per_filter_and_in_unit_range() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 3, 4, 4))
    w[1] *= 100.0                                                    # a strong filter must not pale the others
    w[2] = 0.0                                                       # an all-zero filter
    w[3, :, 0, 0] = 0.0                                              # zero weights inside a filter
    tiles = rgb_filter_tiles(w)
    assert tiles.shape == (5, 4, 4, 3)
    assert tiles.min() >= 0.0 and tiles.max() <= 1.0
    assert np.allclose(tiles[2], 0.5)                                # zero -> mid-grey
    assert np.allclose(tiles[3, 0, 0], 0.5)
    for f in (0, 1, 3, 4):                                           # each filter reaches 0 or 1 at its max |w|
        extreme = np.abs(tiles[f] - 0.5).max()
        assert extreme == pytest.approx(0.5)
    flipped = rgb_filter_tiles(-w)
    assert np.allclose(flipped, 1.0 - tiles)                         # symmetric around zero


def test_filter_montage_draws_the_rgb_tiles_of_three_channel_filters() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(7, 3, 5, 5)) * np.array([1, 10, 0.1, 1, 1, 1, 1])[:, None, None, None]
    fig = filter_montage(w, layer="conv1")
    (drawn,) = [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images]   # one mosaic, 7 tiles in a row
    assert drawn.shape == (5, 7 * 6 - 1, 3)
    for k in range(7):
        assert np.allclose(drawn[:, 6 * k:6 * k + 5], rgb_filter_tiles(w)[k])
    assert any("own max |w|" in t.get_text() for t in fig.texts)
    grey = filter_montage(w[:, :1], layer="conv1")                   # one channel: a colour bar, not RGB
    assert any(ax.get_label() == "<colorbar>" for ax in grey.axes)


@pytest.mark.slow
def test_render_colour_inputs(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace
    write_params(ws, {"data": {"n_train": 300, "n_test": 100},
                      "model": {"arch": "cnn", "filters": 4, "conv_blocks": 2, "kernel_size": 3, "hidden": [16]},
                      "train": {"epochs": 1, "snapshot_every": 3}, "extract": {"n_samples": 100},
                      "render": {"dpi": 50}})
    run_in_process(ws, monkeypatch, ("fetch",))
    grey = ws / "grey"
    (ws / paths.PREPARED).rename(grey)
    info = write_colour_prepared(grey, ws / paths.PREPARED)
    assert info["shape"] == [3, 32, 32]
    run_in_process(ws, monkeypatch, ("train",), ("extract",), ("reduce", "pca"))
    run_cli("render", cwd=ws)

    figures = ws / paths.FIGURES
    files = {p.name for p in figures.iterdir()}
    index = json.loads((ws / paths.ACTIVATIONS / "layers.json").read_text())
    layer = index["penultimate"]
    expected = {"filters_conv1.png", "filters_conv2.png", "redundancy_conv1.png", "feature_maps.png",
                "dense_activations.png", "confusion.png", f"outliers_{layer}.png", "class_distances.png",
                "progression_pca.png", "dataset_mean_std.png", f"evolution_pca_{layer}.gif",
                "scatter_pca_input.png"}
    assert expected <= files
    for name in files:
        head = (figures / name).read_bytes()[:8]
        assert head == PNG if name.endswith(".png") else head[:6] == b"GIF89a", name

    # The colour reaches the figures: the input images are drawn in colour (not averaged to grey).
    def colourful(name: str) -> float:
        with Image.open(figures / name) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=float)
        return float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).max(axis=2).mean())
    assert colourful("outliers_" + layer + ".png") > 5.0
    assert colourful("filters_conv1.png") > 2.0

    from pipeline.config import load_params
    from pipeline.stages import render

    inp = render.load_inputs(load_params(ws / "params.yaml").render)
    raw = np.load(ws / paths.PREPARED / "test_images.npy")
    assert inp.images.shape == (100, 32, 32, 3)
    assert np.array_equal(inp.images, raw[inp.indices].transpose(0, 2, 3, 1))     # RGB as stored, not normalised
