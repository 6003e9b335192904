"""Maps of a layer's activations (PCA / t-SNE / UMAP coordinates), coloured by class.

- :func:`scatter_embedding`: one layer, one method; class names at the class medians.
- :func:`progression_grid`: every layer of one method from input to output, so the classes can
  be seen pulling apart layer by layer; each panel's title carries the map's kNN accuracy.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from pipeline.plots.common import (axis_labels, class_colors, class_legend, draw_classes, grid_shape,
                                   hide_unused, label_centroids, marker_size, method_label, new_figure)

__all__ = ["scatter_embedding", "progression_grid", "score_line", "variance_note"]

_SCORE_NAMES = (("knn_accuracy", "kNN accuracy"), ("trustworthiness", "trustworthiness"),
                ("silhouette", "silhouette"), ("explained_variance", "explained variance"))
_EV_KEYS = ("explained_variance_plain", "explained_variance_sphereized")


def variance_note(scores: Mapping[str, object] | None) -> str:
    """"EV 0.45 · sphereized 0.31" (share of variance the map's components keep, without and with
    reduce.sphereize) from a PCA layer's metrics; empty when they are not there."""
    values = [(scores or {}).get(key) for key in _EV_KEYS]
    if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in values):
        return ""
    return f"EV {values[0]:.2f} · sphereized {values[1]:.2f}"


def score_line(scores: Mapping[str, object] | None) -> str:
    """"kNN acc 0.91 · trust 0.95 · ..." from a layer's entry in metrics/embeddings/<method>.json."""
    if not scores:
        return ""
    parts = []
    for key, name in _SCORE_NAMES:
        value = scores.get(key)
        if isinstance(value, (int, float)) and np.isfinite(value):
            parts.append(f"{name} {value:.2f}")
    return " · ".join(parts)


def scatter_embedding(coords: np.ndarray, labels: np.ndarray, classes: Sequence[str], *, method: str,
                      layer: str, scores: Mapping[str, object] | None = None, kind: str | None = None,
                      colors: np.ndarray | None = None) -> Figure:
    """The map of one layer: (n, 2) on flat axes, (n, 3) on 3-D axes; class names at the medians."""
    coords = np.asarray(coords, dtype=float)
    labels = np.asarray(labels)
    colors = class_colors(len(classes)) if colors is None else colors
    three_d = coords.shape[1] >= 3
    fig = new_figure(7.6, 6.2)
    ax = fig.add_subplot(projection="3d" if three_d else None)
    draw_classes(ax, coords, labels, colors, size=marker_size(len(coords), 5.5))
    label_centroids(ax, coords, labels, classes, colors, fontsize=11)
    xl, yl, zl = axis_labels(method)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    if three_d:
        ax.set_zlabel(zl)
    else:
        ax.set_aspect("equal", adjustable="datalim")
    kind_text = f" ({kind})" if kind and kind != layer else ""
    line = " · ".join(part for part in (score_line(scores), variance_note(scores)) if part)
    ax.set_title(f"{method_label(method)} map of layer {layer}{kind_text}, {len(coords)} test images"
                 + (f"\n{line}" if line else ""), fontsize=12)
    # 3-D axes draw the z label outside their box, where the legend would sit
    class_legend(ax, classes, colors, bbox_to_anchor=(1.12, 0.5) if three_d else (1.01, 0.5))
    return fig


def progression_grid(layers: Sequence[str], coords: Mapping[str, np.ndarray], labels: np.ndarray,
                     classes: Sequence[str], *, method: str, knn: Mapping[str, float | None] | None = None,
                     kinds: Mapping[str, str] | None = None, skipped: Mapping[str, str] | None = None,
                     notes: Mapping[str, str] | None = None, colors: np.ndarray | None = None,
                     max_cols: int = 5) -> Figure:
    """One panel per layer, in forward order. A layer without coordinates gets a panel saying why
    (``skipped[layer]``), so the grid always has exactly ``len(layers)`` panels. 3-D maps show
    their first two components (noted in the title). ``notes[layer]`` is added to the panel's
    title after the kNN accuracy (e.g. PCA's explained variance, :func:`variance_note`)."""
    labels = np.asarray(labels)
    colors = class_colors(len(classes)) if colors is None else colors
    knn, kinds, skipped, notes = knn or {}, kinds or {}, skipped or {}, notes or {}
    rows, cols = grid_shape(len(layers), max_cols)
    panel = 2.9
    fig = new_figure(cols * panel + 1.3, rows * (panel + 0.35) + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    xl, yl, _ = axis_labels(method)
    three_d = False
    for i, (ax, name) in enumerate(zip(axes, layers)):
        kind = kinds.get(name)
        head = f"{i + 1}. {name}" + (f" ({kind})" if kind and kind != name else "")
        xy = coords.get(name)
        if xy is None:
            ax.text(0.5, 0.5, f"not mapped\n{skipped.get(name, 'no coordinates')}", ha="center", va="center",
                    fontsize=8, color="0.4", wrap=True, transform=ax.transAxes)
            ax.set_title(head, fontsize=9.5)
        else:
            xy = np.asarray(xy, dtype=float)
            three_d = three_d or xy.shape[1] >= 3
            draw_classes(ax, xy[:, :2], labels, colors, size=marker_size(len(xy), panel))
            acc = knn.get(name)
            score = f"kNN acc {acc:.2f}" if isinstance(acc, (int, float)) and np.isfinite(acc) else "kNN acc n/a"
            extra = f"\n{notes[name]}" if notes.get(name) else ""
            ax.set_title(f"{head}\n{score}{extra}", fontsize=9.5)
        ax.set_xticks([])
        ax.set_yticks([])
        if i % cols == 0:
            ax.set_ylabel(yl, fontsize=8)
        if i >= len(layers) - cols:
            ax.set_xlabel(xl, fontsize=8)
    hide_unused(axes, len(layers))
    note = " (first 2 of 3 components)" if three_d else ""
    fig.suptitle(f"{method_label(method)} maps, layer by layer from input to output{note}", fontsize=13)
    class_legend(fig, classes, colors, loc="outside right center", bbox_to_anchor=None, fontsize=10)
    return fig
