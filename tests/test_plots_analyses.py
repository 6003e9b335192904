"""Figures of the analyses added for issue 17 A: filters over training, dataset montage,
thumbnail map, feature maps of two images (pure functions on synthetic arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import artifacts
from pipeline.plots import filters as fp


def _snapshots(n: int, shape=(6, 1, 5, 5), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=shape)
    return [base * (0.1 + k) for k in range(n)]


def test_filter_tiles_first_layer_rows_and_deeper_layer_out_by_in():
    w = np.arange(20 * 1 * 3 * 3, dtype=float).reshape(20, 1, 3, 3)
    tiles, rows, cols = fp.filter_tiles(w, first_layer=True, max_cols=8)
    assert tiles.shape == (3, 8, 3, 3) and rows == ["#0", "#8", "#16"]
    np.testing.assert_array_equal(tiles[1, 2], w[10, 0])                 # row-major: filter 8 + 2
    assert np.isnan(tiles[2, 4:]).all() and not np.isnan(tiles[2, :4]).any()
    deep = np.random.default_rng(0).normal(size=(16, 6, 5, 5))
    tiles, rows, cols = fp.filter_tiles(deep, first_layer=False, max_out=8, max_in=4)
    assert tiles.shape == (8, 4, 5, 5) and rows[3] == "out 3" and cols[2] == "in 2"
    np.testing.assert_array_equal(tiles[5, 3], deep[5, 3])                # one kernel slice, not a mean
    rgb, _, _ = fp.filter_tiles(np.ones((4, 3, 2, 2)), first_layer=True)
    assert rgb.shape == (1, 4, 2, 2, 3)


def test_filter_evolution_figure_one_block_per_snapshot_on_one_shared_scale():
    frames = _snapshots(5)
    steps = [0, 1, 2, 4, 7]
    fig = fp.filter_evolution_figure(frames, steps=steps, epochs=[0, 0.1, 0.2, 0.4, 0.7],
                                     accuracies=[0.1, 0.2, 0.3, 0.5, 0.9], layer="conv1", first_layer=True)
    blocks = [sub for sub in fig.subfigs[0].subfigs if sub.axes]
    assert [b._suptitle.get_text().split(" · ")[0] for b in blocks] == [f"step {s}" for s in steps]
    vmax = max(np.abs(f).max() for f in frames)
    limits = {im.get_clim() for b in blocks for ax in b.axes for im in ax.images}
    assert limits == {(-vmax, vmax)}                                       # one scale for every snapshot
    assert sum(len(b.axes) for b in blocks) == 5 * 6
    assert "one symmetric colour scale" in fig._suptitle.get_text()
    capped = fp.filter_evolution_figure(_snapshots(20), steps=list(range(20)), layer="conv1", first_layer=True,
                                        max_frames=4)
    titles = [b._suptitle.get_text() for b in capped.subfigs[0].subfigs if b.axes]
    assert titles[0].startswith("step 0") and titles[-1].startswith("step 19") and len(titles) == 4
    with pytest.raises(ValueError, match="differ in shape"):
        fp.filter_evolution_figure([np.ones((2, 1, 3, 3)), np.ones((3, 1, 3, 3))], steps=[0, 1], layer="c",
                                   first_layer=True)


def test_filter_evolution_deeper_layer_per_input_channel_and_gif(tmp_path: Path):
    frames = _snapshots(3, shape=(4, 3, 3, 3))
    fig = fp.filter_evolution_figure(frames, steps=[0, 2, 4], layer="conv2", first_layer=False)
    blocks = [b for b in fig.subfigs[0].subfigs if b.axes]
    assert len(blocks) == 3 and all(len(b.axes) == 4 * 3 for b in blocks)
    assert "4 filters x 3 input channels" in fig._suptitle.get_text()
    anim = fp.filter_evolution_animation(frames, steps=[0, 2, 4], layer="conv2", first_layer=False)
    path = tmp_path / "filters.gif"
    artifacts.save_animation(path, anim, dpi=40, fps=4)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
        first = np.asarray(gif.convert("RGB"))
        gif.seek(2)
        last = np.asarray(gif.convert("RGB"))
    assert np.abs(first.astype(int) - last.astype(int)).sum() > 0         # the weights grew: frames differ
