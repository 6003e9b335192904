"""Figures of the compare command: two runs side by side.

- :func:`cka_heatmap`: linear CKA between every layer of run A (rows) and of run B (columns),
  values written in the cells.
- :func:`maps_side_by_side`: the 2-D maps of one layer of each run (usually the layer before the
  output), with the same class colours, each titled with the numbers that say which is better.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from pipeline.config import METHOD_NAMES
from pipeline.plots.common import (axis_labels, class_colors, class_legend, draw_classes, label_centroids,
                                   marker_size, new_figure)

__all__ = ["cka_heatmap", "maps_side_by_side", "method_name"]


_MAX_ANNOTATED = 40          # layers per side above which cell values are too small to print


def method_name(method: str) -> str:
    """Display name of a reduction method: PCA, t-SNE, UMAP."""
    return METHOD_NAMES.get(method, method)


def cka_heatmap(matrix: np.ndarray, layers_a: Sequence[str], layers_b: Sequence[str], *, label_a: str,
                label_b: str, mark_a: str | None = None, mark_b: str | None = None,
                n_points: int | None = None) -> Figure:
    """(len(layers_a), len(layers_b)) CKA values in [0, 1] as a heatmap; NaN cells (undefined:
    constant or non-finite layer) are hatched grey. ``mark_a`` / ``mark_b`` name a layer whose tick
    label is drawn bold (the layer before the output)."""
    matrix = np.asarray(matrix, dtype=float)
    rows, cols = len(layers_a), len(layers_b)
    if matrix.shape != (rows, cols):
        raise ValueError(f"matrix shape {matrix.shape} does not match {rows} x {cols} layer names")
    cell = 0.55 if max(rows, cols) <= 20 else 0.32
    fig = new_figure(max(5.5, cols * cell + 2.8), max(4.5, rows * cell + 2.0))
    ax = fig.add_subplot()
    ax.set_facecolor("0.85")
    cmap = colormaps["viridis"]
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto",
                      interpolation="nearest")
    nan_r, nan_c = np.nonzero(~np.isfinite(matrix))
    for r, c in zip(nan_r, nan_c):
        ax.add_patch(_hatched_cell(r, c))
    if max(rows, cols) <= _MAX_ANNOTATED:
        size = 8 if max(rows, cols) <= 16 else 6
        for r in range(rows):
            for c in range(cols):
                value = matrix[r, c]
                if not np.isfinite(value):
                    ax.text(c, r, "n/a", ha="center", va="center", fontsize=size, color="0.3")
                    continue
                # dark text on the light (high) end of viridis, white on the dark end
                color = "black" if value >= 0.6 else "white"
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=size, color=color)
    ax.set_xticks(range(cols), labels=list(layers_b), rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(rows), labels=list(layers_a))
    for tick, name in zip(ax.get_xticklabels(), layers_b):
        if name == mark_b:
            tick.set_fontweight("bold")
    for tick, name in zip(ax.get_yticklabels(), layers_a):
        if name == mark_a:
            tick.set_fontweight("bold")
    ax.set_xlabel(f"layers of B: {label_b}")
    ax.set_ylabel(f"layers of A: {label_a}")
    ax.tick_params(length=0)
    points = f" on the same {n_points} test images" if n_points else ""
    ax.set_title(f"Linear CKA between layers{points}\n(1 = same representation up to rotation and scale)",
                 fontsize=10)
    fig.colorbar(image, ax=ax, label="linear CKA", shrink=0.8)
    return fig


def _hatched_cell(r: int, c: int):
    from matplotlib.patches import Rectangle

    return Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor="0.85", edgecolor="0.6", hatch="//", linewidth=0)


def maps_side_by_side(coords_a: np.ndarray, coords_b: np.ndarray, labels: np.ndarray, classes: Sequence[str], *,
                      method: str, title_a: str, title_b: str, scores_a: str = "", scores_b: str = "",
                      colors: np.ndarray | None = None) -> Figure:
    """Two 2-D maps of the same images (A left, B right), coloured by class with one palette.
    ``title_*`` is the panel's heading (run and layer), ``scores_*`` a second line of numbers.
    3-D maps show their first two components."""
    labels = np.asarray(labels)
    colors = class_colors(len(classes)) if colors is None else colors
    fig = new_figure(12.5, 6.2)
    axes = fig.subplots(1, 2)
    xl, yl, _ = axis_labels(method)
    for ax, coords, title, scores in ((axes[0], coords_a, title_a, scores_a), (axes[1], coords_b, title_b, scores_b)):
        coords = np.asarray(coords, dtype=float)[:, :2]
        if len(coords) != len(labels):
            raise ValueError(f"{title}: {len(coords)} points but {len(labels)} labels")
        draw_classes(ax, coords, labels, colors, size=marker_size(len(coords), 5.5))
        label_centroids(ax, coords, labels, classes, colors, fontsize=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title}\n{scores}" if scores else title, fontsize=10)
    class_legend(axes[1], classes, colors)
    fig.suptitle(f"{method_name(method)} maps of the layer before the output, {len(labels)} test images",
                 fontsize=12)
    return fig
