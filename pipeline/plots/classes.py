"""How the classes sit in a layer: outliers, which classes are neighbours, the output's class vectors.

Distances are measured in the layer's own activation space (all its features), not on a 2-D
map: t-SNE and UMAP distort distances between clusters, the activations do not.

- :func:`class_outliers` / :func:`outliers_figure`: per class, the image closest to the class
  centroid (typical) and the ones farthest from it.
- :func:`class_separation` / :func:`class_distance_grid` / :func:`class_distance_figure`:
  centroid distances in units of the within-class spread, for every layer (small multiples)
  and in detail for one layer.
- :func:`class_embedding_figure`: the output layer's weight vector of each class, PCA'd to 2-D.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pipeline.plots.common import OUTLINE, annotate_cells, class_colors, grid_shape, hide_unused, new_figure

__all__ = ["OutlierRow", "class_outliers", "outliers_figure", "class_separation", "class_distance_grid",
           "class_distance_figure", "class_embedding", "class_embedding_figure"]


@dataclass
class OutlierRow:
    """One class: the row index of its most typical image and of its farthest ones (farthest first)."""

    cls: int
    typical: int
    typical_distance: float
    outliers: np.ndarray              # (m,) row indices
    distances: np.ndarray             # (m,) their distances to the class centroid


def class_outliers(features: np.ndarray, labels: np.ndarray, n_classes: int, n_outliers: int) -> list[OutlierRow]:
    """Per class present in ``labels``: distances of its points to the class mean in ``features``
    (n, d); the closest point and the ``n_outliers`` farthest (fewer if the class is small)."""
    x = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    rows = []
    for k in range(n_classes):
        idx = np.flatnonzero(labels == k)
        if not idx.size:
            continue
        pts = x[idx]
        dist = np.linalg.norm(pts - pts.mean(axis=0), axis=1)
        order = np.argsort(dist, kind="stable")
        typical = order[0]
        far = order[::-1][:min(n_outliers, max(len(idx) - 1, 0))]
        rows.append(OutlierRow(k, int(idx[typical]), float(dist[typical]), idx[far], dist[far]))
    return rows


def outliers_figure(images: np.ndarray, rows: Sequence[OutlierRow], classes: Sequence[str], *, layer: str,
                    n_outliers: int, preds: np.ndarray | None = None, colors: np.ndarray | None = None) -> Figure:
    """A grid: one row per class; the typical image first (framed in the class colour), then the
    farthest ones, farthest first, each with its distance; misclassified ones show the
    prediction in red. ``images`` are display images indexed like the rows of the layer.

    One axes holds every image, each placed in a cell of one unit (one axes per image, 90 for
    ten classes, took ten times as long to draw)."""
    colors = class_colors(len(classes)) if colors is None else colors
    cols = 1 + n_outliers
    tile = 0.95
    fig = new_figure(cols * tile + 1.2, len(rows) * (tile + 0.22) + 1.1)
    ax = fig.subplots()
    step_x, step_y, apart = 1.08, 1.3, 0.25         # cell pitch (room for the distance below), typical set apart

    def column_x(j: int) -> float:
        return j * step_x + (apart if j else 0.0)

    def place(r: int, j: int, index: int, note: str, frame: Any = None, width: float = 0.8,
              note_color: str = "black") -> None:
        x0, y0 = column_x(j), r * step_y
        image = images[index]
        if image.ndim == 2:
            ax.imshow(image, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest", extent=(x0, x0 + 1, y0 + 1, y0))
        else:
            ax.imshow(image, interpolation="nearest", extent=(x0, x0 + 1, y0 + 1, y0))
        ax.add_patch(Rectangle((x0, y0), 1, 1, fill=False, edgecolor="black" if frame is None else frame, linewidth=width))
        ax.text(x0 + 0.5, y0 + 1.04, note, ha="center", va="top", fontsize=7, color=note_color)

    for r, row in enumerate(rows):
        place(r, 0, row.typical, f"d={row.typical_distance:.3g}", frame=colors[row.cls], width=3)
        ax.text(-0.12, r * step_y + 0.5, str(classes[row.cls]), ha="right", va="center", fontsize=12,
                fontweight="bold")
        for j, (i, d) in enumerate(zip(row.outliers, row.distances)):
            i = int(i)
            if preds is not None and int(preds[i]) != row.cls:
                place(r, j + 1, i, f"d={d:.3g}\n→ {classes[int(preds[i])]}", frame="crimson", width=2,
                      note_color="crimson")
            else:
                place(r, j + 1, i, f"d={d:.3g}")
    for j, title in enumerate(["typical"] + [f"farthest {k + 1}" if k == 0 else f"{k + 1}" for k in range(n_outliers)]):
        ax.text(column_x(j) + 0.5, -0.08, title, ha="center", va="bottom", fontsize=9)
    ax.set_xlim(-0.05, column_x(cols - 1) + 1.05)
    ax.set_ylim(len(rows) * step_y, -0.05)
    ax.set_aspect("equal")
    ax.set_axis_off()
    wrong = "; red: misclassified (→ predicted class)" if preds is not None else ""
    fig.suptitle(f"Outliers in layer {layer}: per class the image closest to the class centroid, then the "
                 f"{n_outliers} farthest\n(d = Euclidean distance to the class centroid in the layer's "
                 f"activations{wrong})", fontsize=10)
    return fig


def class_separation(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) distances between class centroids divided by the pooled within-class RMS radius
    (sqrt of the mean squared distance of a point to its class centroid). Unit-free, so layers
    of any width compare: 1 means the centroids are one typical spread apart. Diagonal 0; NaN
    for classes absent from ``labels``."""
    x = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    centres = np.full((n_classes, x.shape[1]), np.nan)
    sq, count = 0.0, 0
    for k in range(n_classes):
        mask = labels == k
        if mask.any():
            centres[k] = x[mask].mean(axis=0)
            sq += float(((x[mask] - centres[k]) ** 2).sum())
            count += int(mask.sum())
    radius = max(float(np.sqrt(sq / max(count, 1))), 1e-12)     # every class a single point: huge ratios
    diff = centres[:, None, :] - centres[None, :, :]              # (K, K, d)
    return np.sqrt((diff ** 2).sum(axis=-1)) / radius


def _off_diagonal(matrix: np.ndarray) -> np.ndarray:
    return np.where(np.eye(len(matrix), dtype=bool), np.nan, matrix)


def _nearest(matrix: np.ndarray) -> list[tuple[int, int]]:
    """(row, column of its smallest off-diagonal value) for every row that has one."""
    m = _off_diagonal(np.asarray(matrix, dtype=float))
    return [(i, int(np.nanargmin(m[i]))) for i in range(len(m)) if np.isfinite(m[i]).any()]


def class_distance_grid(layers: Sequence[str], matrices: Mapping[str, np.ndarray], classes: Sequence[str], *,
                        max_cols: int = 5) -> Figure:
    """Small multiples, one per layer in forward order. Each panel has its own colour scale
    (dark = the closest classes of that layer) so the neighbour structure shows even where all
    classes still overlap; the red dot marks each row's nearest class, and the title gives the
    layer's mean separation (comparable across layers)."""
    rows, cols = grid_shape(len(layers), max_cols)
    panel = 2.6
    fig = new_figure(cols * panel + 0.4, rows * (panel + 0.4) + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    k = len(classes)
    for i, (ax, name) in enumerate(zip(axes, layers)):
        m = _off_diagonal(matrices[name])
        ax.imshow(m, cmap="viridis", interpolation="nearest")
        near = _nearest(m)
        if near:
            r, c = zip(*near)
            ax.scatter(c, r, s=14 if k <= 12 else 5, color="red", edgecolors="white", linewidths=0.5,
                       gid="nearest-class")
        mean = float(np.nanmean(m)) if np.isfinite(m).any() else float("nan")
        ax.set_title(f"{i + 1}. {name}\nmean separation {mean:.2f}", fontsize=9)
        if k <= 12:
            ax.set_xticks(range(k), [str(c) for c in classes], fontsize=7)
            ax.set_yticks(range(k), [str(c) for c in classes], fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        if i % cols == 0:
            ax.set_ylabel("class", fontsize=8)
    hide_unused(axes, len(layers))
    fig.suptitle("Class neighbours, layer by layer: distance between class centroids / within-class spread\n"
                 "colour per panel (dark = closest pair, light = farthest); red dot: nearest class of each row",
                 fontsize=11)
    return fig


def class_distance_figure(matrix: np.ndarray, classes: Sequence[str], *, layer: str) -> Figure:
    """One layer in detail: the separation values in the cells, each class's nearest other class boxed."""
    m = _off_diagonal(np.asarray(matrix, dtype=float))
    k = len(classes)
    side = float(np.clip(0.55 * k + 2.2, 5.0, 11.0))
    fig = new_figure(side + 1.3, side)
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap="viridis", interpolation="nearest")
    if k <= 20:
        annotate_cells(ax, m, image, "{:.1f}", fontsize=8)
    for i, j in _nearest(m):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2,
                               gid="nearest-class"))
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=0 if k <= 12 else 90)
    ax.set_yticks(range(k), [str(c) for c in classes])
    ax.set_xlabel("class")
    ax.set_ylabel("class")
    ax.set_title(f"Class neighbours in layer {layer}: centroid distance / within-class spread\n"
                 f"red box: the nearest other class of each row", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="centroid distance / spread")
    return fig


def class_embedding(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the class weight vectors (K, d): (K, 2) coordinates and the (2,) explained-variance ratios."""
    w = np.asarray(weights, dtype=np.float64)
    centred = w - w.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    coords = u[:, :2] * s[:2]
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    total = float((s ** 2).sum())
    ratios = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    return coords, np.pad(ratios, (0, 2 - len(ratios)))


def class_embedding_figure(weights: np.ndarray, classes: Sequence[str], *, layer: str,
                           colors: np.ndarray | None = None) -> Figure:
    """Left: each class's weight vector in the output layer (K, d), PCA'd to 2-D and labelled.
    Right: cosine similarity between the vectors (classes the output layer finds alike)."""
    w = np.asarray(weights, dtype=np.float64)
    k = len(classes)
    colors = class_colors(k) if colors is None else colors
    coords, ratios = class_embedding(w)
    fig = new_figure(12.5, 5.6)
    ax, sim_ax = fig.subplots(1, 2, width_ratios=[1.0, 1.05])
    ax.scatter(coords[:, 0], coords[:, 1], c=colors[:k], s=160, edgecolors="0.2", linewidths=0.8, zorder=3)
    for i, name in enumerate(classes):
        ax.annotate(str(name), coords[i], xytext=(7, 5), textcoords="offset points", fontsize=12,
                    fontweight="bold", path_effects=OUTLINE)
    ax.axhline(0, color="0.85", linewidth=0.8, zorder=0)
    ax.axvline(0, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlabel(f"PC 1 ({ratios[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({ratios[1]:.0%} of variance)")
    ax.margins(0.15)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"Class vectors of {layer} ({k} x {w.shape[1]} weights), PCA to 2-D", fontsize=10)
    norms = np.linalg.norm(w, axis=1)
    unit = w / np.where(norms > 0, norms, 1.0)[:, None]
    sim = unit @ unit.T
    image = sim_ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    if k <= 15:
        annotate_cells(sim_ax, sim, image, fontsize=7, skip_diagonal=True)
    sim_ax.set_xticks(range(k), [str(c) for c in classes], rotation=0 if k <= 12 else 90)
    sim_ax.set_yticks(range(k), [str(c) for c in classes])
    sim_ax.set_xlabel("class")
    sim_ax.set_ylabel("class")
    sim_ax.set_title("Cosine similarity of the class vectors", fontsize=10)
    fig.colorbar(image, ax=sim_ax, shrink=0.8, label="cosine similarity")
    return fig
