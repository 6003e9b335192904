"""Conv filters over training: the same filters at every weight snapshot, on one colour scale.

- :func:`filter_tiles`: one snapshot's weights as a grid of tiles. A first layer (1 or 3 input
  channels) gives one tile per filter, in rows of ``max_cols``; a deeper layer gives one row per
  output filter and one column per input channel (each kernel slice on its own, not averaged).
- :func:`filter_evolution_figure`: the snapshots stacked top to bottom (evenly chosen when there
  are many), each labelled with its step, epoch and accuracy.
- :func:`filter_evolution_animation`: one GIF frame per snapshot.

Every tile of every snapshot uses one symmetric scale (the largest |w| over all of them), so a
filter that grows from the small random start to a strong edge detector visibly darkens, and
frames can be compared; RGB filters map that scale to mid-grey = 0.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure

from pipeline.plots.common import hide_spines, new_figure, symmetric_limit
from pipeline.plots.evolution import frame_title, pick_frames

__all__ = ["filter_tiles", "filter_evolution_figure", "filter_evolution_animation", "shared_filter_limit", "mosaic"]

DIVERGING = "RdBu_r"


def _check(weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    if w.ndim != 4:
        raise ValueError(f"expected conv weights (F_out, F_in, kh, kw), got shape {w.shape}")
    return w


def filter_tiles(weights: np.ndarray, *, first_layer: bool, max_cols: int = 16, max_out: int = 8,
                 max_in: int = 8) -> tuple[np.ndarray, list[str], list[str]]:
    """``(tiles, row_labels, col_labels)``: tiles (rows, cols, kh, kw) for one channel or
    (rows, cols, kh, kw, 3) signed weights for an RGB first layer; empty cells are NaN.

    ``first_layer`` with 1 or 3 input channels: every filter is one tile, row-major in rows of
    ``max_cols``. Otherwise: rows are output filters (first ``max_out``), columns input channels
    (first ``max_in``)."""
    w = _check(weights)
    f_out, f_in, kh, kw = w.shape
    if first_layer and f_in in (1, 3):
        cols = min(f_out, max_cols)
        rows = math.ceil(f_out / cols)
        shape = (rows, cols, kh, kw) + ((3,) if f_in == 3 else ())
        tiles = np.full(shape, np.nan)
        for i in range(f_out):
            tiles[i // cols, i % cols] = np.transpose(w[i], (1, 2, 0)) if f_in == 3 else w[i, 0]
        return tiles, [f"#{r * cols}" for r in range(rows)], [str(c) for c in range(cols)]
    rows, cols = min(f_out, max_out), min(f_in, max_in)
    return w[:rows, :cols].copy(), [f"out {r}" for r in range(rows)], [f"in {c}" for c in range(cols)]


def mosaic(tiles: np.ndarray, gap: int = 1, fill: float = np.nan) -> np.ndarray:
    """(rows, cols, h, w[, 3]) tiles as one (rows*(h+gap)-gap, cols*(w+gap)-gap[, 3]) image with
    ``gap`` pixels of ``fill`` between them: one ``imshow`` instead of one axes per tile (a grid
    of hundreds of axes is what makes such figures slow)."""
    tiles = np.asarray(tiles, dtype=float)
    rows, cols, h, w = tiles.shape[:4]
    extra = tiles.shape[4:]
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *extra), fill)
    for r in range(rows):
        for c in range(cols):
            out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tiles[r, c]
    return out


def shared_filter_limit(frames: Sequence[np.ndarray]) -> float:
    """The symmetric colour limit of all frames: max |w| over every shown tile of every snapshot."""
    return max(symmetric_limit(np.nan_to_num(np.asarray(f, dtype=float), nan=0.0)) for f in frames)


def _rgb(tile: np.ndarray, vmax: float) -> np.ndarray:
    return np.clip(0.5 + 0.5 * np.nan_to_num(tile, nan=0.0) / vmax, 0.0, 1.0)


def _block_image(tiles: np.ndarray, vmax: float) -> np.ndarray:
    """The mosaic of one snapshot: signed weights for a colour map, or RGB in 0..1 (gaps white)."""
    if tiles.ndim == 5:
        return mosaic(np.where(np.isnan(tiles), 1.0, _rgb(tiles, vmax)), fill=1.0)
    return mosaic(tiles)


def _draw_block(fig, tiles: np.ndarray, vmax: float, label: str, *, row_labels: Sequence[str],
                col_labels: Sequence[str]):
    """One snapshot in ``fig`` (a subfigure): its tiles as one mosaic image under its label (row
    and column names as ticks when there are several rows); returns the image artist."""
    from matplotlib import colormaps

    rows, cols, h, w = tiles.shape[:4]
    ax = fig.subplots()
    cmap = colormaps[DIVERGING].with_extremes(bad="white")
    image = _block_image(tiles, vmax)
    if image.ndim == 3:
        artist = ax.imshow(image, interpolation="nearest", gid="filter-block")
    else:
        artist = ax.imshow(image, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest", gid="filter-block")
    hide_spines(ax)
    if rows > 1:
        ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(cols)], col_labels, fontsize=6)
        ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(rows)], row_labels, fontsize=6)
        ax.tick_params(length=0, pad=1, labeltop=True, labelbottom=False)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(label, fontsize=8, gid="frame-label")
    return artist


def _frame_labels(steps: Sequence[int], epochs, accuracies) -> list[str]:
    out = []
    for k, step in enumerate(steps):
        epoch = epochs[k] if epochs is not None else None
        acc = accuracies[k] if accuracies is not None else None
        out.append(frame_title(int(step), epoch, acc))
    return out


def _describe(layer: str, weights: np.ndarray, tiles: np.ndarray, first_layer: bool) -> str:
    f_out, f_in, kh, kw = weights.shape
    if first_layer and f_in in (1, 3):
        return f"{layer}: {f_out} filters of {kh}x{kw}" + (" (RGB)" if f_in == 3 else "")
    rows, cols = tiles.shape[:2]
    cap = []
    if rows < f_out:
        cap.append(f"first {rows} of {f_out} filters")
    if cols < f_in:
        cap.append(f"first {cols} of {f_in} input channels")
    return (f"{layer}: {f_out} filters x {f_in} input channels, {kh}x{kw}, one tile per input channel"
            + (f" ({', '.join(cap)})" if cap else ""))


def _prepare(frames, steps, epochs, accuracies, layer, first_layer, max_frames, max_cols, max_out, max_in):
    if not len(frames):
        raise ValueError("no snapshots to show")
    if len(steps) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(steps)} steps")
    frames = [_check(f) for f in frames]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"snapshots of {layer} differ in shape: {sorted(shapes)}")
    chosen = pick_frames(len(frames), max_frames)
    made = [filter_tiles(frames[i], first_layer=first_layer, max_cols=max_cols, max_out=max_out, max_in=max_in)
            for i in chosen]
    tiles = [m[0] for m in made]
    labels = _frame_labels([steps[i] for i in chosen], [epochs[i] for i in chosen] if epochs is not None else None,
                           [accuracies[i] for i in chosen] if accuracies is not None else None)
    return frames, chosen, tiles, made[0][1], made[0][2], labels, shared_filter_limit(tiles)


def _colour_key(fig, vmax: float, grey: bool) -> str:
    """A colour bar of the shared scale in ``fig`` (a narrow subfigure), or the RGB rule as text."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if grey:
        fig.colorbar(ScalarMappable(Normalize(-vmax, vmax), DIVERGING), cax=fig.add_subplot(), label="weight")
        return "one symmetric colour scale for every snapshot"
    return f"RGB, mid-grey = 0, one scale for every snapshot (max |w| {vmax:.3g})"


def filter_evolution_figure(frames: Sequence[np.ndarray], *, steps: Sequence[int], layer: str, first_layer: bool,
                            epochs: Sequence[float | None] | None = None,
                            accuracies: Sequence[float | None] | None = None, max_frames: int | None = None,
                            max_cols: int = 16, max_out: int = 8, max_in: int = 8) -> Figure:
    """The layer's filters at each snapshot (``frames[k]`` the (F_out, F_in, kh, kw) weights after
    ``steps[k]`` steps) in training order, at most ``max_frames`` evenly chosen (first and last
    always; default 16 for a first layer, 9 for a deeper one), each block titled with its step,
    epoch and accuracy, all tiles on one symmetric colour scale with one colour bar. A first
    layer's one-row blocks are stacked top to bottom; deeper layers' blocks (output filter x
    input channel) fill a grid left to right."""
    single = first_layer and np.asarray(frames[0]).ndim == 4 and np.asarray(frames[0]).shape[1] in (1, 3) \
        if len(frames) else False
    frames, chosen, tiles, row_labels, col_labels, labels, vmax = _prepare(
        frames, steps, epochs, accuracies, layer, first_layer, max_frames or (16 if single else 9), max_cols,
        max_out, max_in)
    rows, cols = tiles[0].shape[:2]
    block_cols = 1 if rows * cols <= 16 and rows == 1 else min(3, len(tiles))
    block_rows = math.ceil(len(tiles) / block_cols)
    cell = float(np.clip(8.0 / (cols * block_cols), 0.3, 0.75))
    block_w, block_h = cols * cell + (0.6 if rows > 1 else 0.1), rows * cell + (0.55 if rows > 1 else 0.3)
    fig = new_figure(max(block_cols * block_w + 1.0, 7.0), block_rows * block_h + 1.0)
    main, key = fig.subfigures(1, 2, width_ratios=[block_cols * block_w, 0.9])
    blocks = np.atleast_1d(main.subfigures(block_rows, block_cols, squeeze=False).ravel())
    for k, sub in enumerate(blocks):
        if k < len(tiles):
            _draw_block(sub, tiles[k], vmax, labels[k], row_labels=row_labels, col_labels=col_labels)
    scale = _colour_key(key, vmax, tiles[0].ndim == 4)
    shown = f", {len(chosen)} of {len(frames)} snapshots" if len(chosen) < len(frames) else ""
    order = "top: initialisation, bottom: final" if block_cols == 1 else "left to right, top to bottom"
    fig.suptitle(f"Filters during training: {_describe(layer, frames[0], tiles[0], first_layer)}\n"
                 f"{order}{shown}; {scale}", fontsize=10)
    return fig


def filter_evolution_animation(frames: Sequence[np.ndarray], *, steps: Sequence[int], layer: str,
                               first_layer: bool, epochs: Sequence[float | None] | None = None,
                               accuracies: Sequence[float | None] | None = None, max_frames: int = 60,
                               max_cols: int = 16, max_out: int = 8, max_in: int = 8,
                               interval_ms: int = 400) -> FuncAnimation:
    """One frame per snapshot (at most ``max_frames``): the tile grid of
    :func:`filter_evolution_figure` with the step, epoch and accuracy above it, on the one
    colour scale shared by every frame; save it with ``artifacts.save_animation``."""
    frames, chosen, tiles, row_labels, col_labels, labels, vmax = _prepare(
        frames, steps, epochs, accuracies, layer, first_layer, max_frames, max_cols, max_out, max_in)
    rows, cols = tiles[0].shape[:2]
    cell = float(np.clip(7.0 / cols, 0.35, 0.8))
    fig = new_figure(max(cols * cell + 1.6, 5.0), rows * cell + 1.4)
    main, key = fig.subfigures(1, 2, width_ratios=[cols * cell + 0.4, 0.9])
    artist = _draw_block(main, tiles[0], vmax, labels[0], row_labels=row_labels, col_labels=col_labels)
    label = main._suptitle
    _colour_key(key, vmax, tiles[0].ndim == 4)
    fig.suptitle(f"Filters during training\n{_describe(layer, frames[0], tiles[0], first_layer)}", fontsize=9)

    def update(k: int):
        artist.set_data(_block_image(tiles[k], vmax))
        label.set_text(labels[k])
        return [artist, label]

    return FuncAnimation(fig, update, frames=len(tiles), interval=interval_ms, blit=False, repeat=True)
