"""Pieces every figure shares: class colours, image display, grids, scatter drawing.

Figures are built with :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so no
global figure registry grows while a stage draws dozens of them and the functions stay pure.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "class_colors", "new_figure", "grid_shape", "display_images", "show_image", "hide_unused", "hide_spines",
    "draw_classes", "class_centroids", "label_centroids", "class_legend", "marker_size", "marker_alpha",
    "symmetric_limit", "method_label", "axis_labels", "draw_order", "annotate_cells", "OUTLINE",
]

# White halo behind text drawn over data (readable on any colour).
OUTLINE = [patheffects.withStroke(linewidth=2.5, foreground="white")]

_METHOD_LABELS = {"pca": "PC", "tsne": "t-SNE", "umap": "UMAP"}


def class_colors(n_classes: int) -> np.ndarray:
    """(K, 4) RGBA, the same for every figure: tab10 up to 10 classes, tab20 up to 20, then turbo."""
    if n_classes <= 10:
        return colormaps["tab10"](np.arange(n_classes))
    if n_classes <= 20:
        return colormaps["tab20"](np.arange(n_classes))
    return colormaps["turbo"](np.linspace(0.05, 0.95, n_classes))


def new_figure(width: float, height: float, *, layout: str | None = "constrained") -> Figure:
    """A Figure not registered with pyplot (nothing to close globally; garbage-collected)."""
    return Figure(figsize=(width, height), layout=layout)


def grid_shape(n: int, max_cols: int = 5) -> tuple[int, int]:
    """(rows, cols) of a near-square grid of ``n`` panels with at most ``max_cols`` columns."""
    if n <= 0:
        return 1, 1
    if n <= 3:
        return 1, n
    low = min(max_cols, math.ceil(math.sqrt(n)))
    # fewest empty cells, then the wider grid (figures read better in landscape)
    cols = min(range(low, max(low, max_cols) + 1), key=lambda c: (math.ceil(n / c) * c - n, -c))
    return math.ceil(n / cols), cols


def hide_unused(axes: Sequence[Axes], used: int) -> None:
    for ax in list(axes)[used:]:
        ax.set_visible(False)


def hide_spines(ax: Axes) -> None:
    """No frame around ``ax``: a mosaic image with its own white gaps needs none."""
    for spine in ax.spines.values():
        spine.set_visible(False)


def display_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) as stored in data/prepared -> (N, H, W) grey or (N, H, W, 3) RGB for imshow."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {images.shape}")
    if images.shape[1] == 1:
        return images[:, 0]
    if images.shape[1] == 3:
        return np.transpose(images, (0, 2, 3, 1))
    return images.mean(axis=1).astype(images.dtype)          # any other channel count: the mean


def show_image(ax: Axes, image: np.ndarray, title: str | None = None, *, fontsize: float = 9) -> None:
    """One display image ((H, W) grey, dark ink on white, or (H, W, 3) RGB) without ticks."""
    if image.ndim == 2:
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def marker_size(n_points: int, panel_inches: float = 5.0) -> float:
    """Scatter marker area (pt^2) that keeps ~1000 points readable in a panel of this size."""
    return float(np.clip(12.0 * (panel_inches / 5.0) ** 2 * math.sqrt(1000 / max(n_points, 1)), 1.0, 40.0))


def marker_alpha(n_points: int) -> float:
    """Scatter opacity: 0.75 up to 2,000 points, then falling as 1 / sqrt(n) to 0.2 at 28,000 and
    beyond, so dense maps (10,000-70,000 points) show where points pile up instead of a solid blot."""
    return float(np.clip(0.75 * math.sqrt(2000 / max(n_points, 1)), 0.2, 0.75))


def draw_order(n_points: int) -> np.ndarray:
    """The seeded shuffle every scatter draws its points in (so no class always lies on top)."""
    return np.random.default_rng(0).permutation(n_points)


def draw_classes(ax: Axes, coords: np.ndarray, labels: np.ndarray, colors: np.ndarray, *,
                 size: float | None = None, alpha: float | None = None) -> object:
    """One rasterized scatter of (n, 2 or 3) ``coords`` coloured by class, points drawn in
    :func:`draw_order` (an animation moving them must use the same order). Marker size and
    opacity follow the number of points (:func:`marker_size`, :func:`marker_alpha`) unless given."""
    coords = np.asarray(coords, dtype=float)
    labels = np.asarray(labels)
    alpha = marker_alpha(len(coords)) if alpha is None else alpha
    order = draw_order(len(coords))
    c = colors[labels[order]]
    s = marker_size(len(coords)) if size is None else size
    if coords.shape[1] >= 3 and getattr(ax, "name", "") == "3d":
        return ax.scatter(coords[order, 0], coords[order, 1], coords[order, 2], c=c, s=s, alpha=alpha,
                          linewidths=0, rasterized=True, depthshade=False)
    return ax.scatter(coords[order, 0], coords[order, 1], c=c, s=s, alpha=alpha, linewidths=0, rasterized=True)


def class_centroids(coords: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, d) per-class medians (robust to the stray points t-SNE/UMAP throw out); NaN for absent classes."""
    out = np.full((n_classes, coords.shape[1]), np.nan)
    for k in range(n_classes):
        mask = labels == k
        if mask.any():
            out[k] = np.median(coords[mask], axis=0)
    return out


def label_centroids(ax: Axes, coords: np.ndarray, labels: np.ndarray, classes: Sequence[str], colors: np.ndarray,
                    *, fontsize: float = 10) -> list:
    """Class names at the class medians, in a white box edged with the class colour."""
    centres = class_centroids(np.asarray(coords, dtype=float), np.asarray(labels), len(classes))
    texts = []
    three_d = coords.shape[1] >= 3 and getattr(ax, "name", "") == "3d"
    for k, name in enumerate(classes):
        if np.isnan(centres[k]).any():
            continue
        box = dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor=colors[k], linewidth=1.5, alpha=0.85)
        pos = tuple(centres[k][:3]) if three_d else tuple(centres[k][:2])
        texts.append(ax.text(*pos, name, fontsize=fontsize, fontweight="bold", ha="center", va="center",
                             bbox=box, zorder=5, gid="centroid-label"))
    return texts


def class_legend(fig_or_ax, classes: Sequence[str], colors: np.ndarray, *, title: str = "class",
                 loc: str = "center left", bbox_to_anchor: tuple = (1.01, 0.5), ncol: int = 1,
                 fontsize: float = 9):
    """A legend of class colours (one round marker per class)."""
    handles = [Line2D([], [], marker="o", linestyle="", markersize=7, markerfacecolor=colors[k],
                      markeredgewidth=0, label=str(name)) for k, name in enumerate(classes)]
    return fig_or_ax.legend(handles=handles, title=title, loc=loc, bbox_to_anchor=bbox_to_anchor, ncol=ncol,
                            fontsize=fontsize, title_fontsize=fontsize, frameon=False, handletextpad=0.2,
                            columnspacing=0.8)


def symmetric_limit(values: np.ndarray) -> float:
    """max |value| (at least a tiny positive number), for colour scales centred on zero."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    vmax = float(np.abs(finite).max()) if finite.size else 0.0
    return vmax if vmax > 0 else 1e-12


def method_label(method: str) -> str:
    return _METHOD_LABELS.get(method, method)


def axis_labels(method: str) -> tuple[str, str, str]:
    """Axis names of a map: "PC 1", "t-SNE 1", "UMAP 1", ..."""
    base = method_label(method)
    return f"{base} 1", f"{base} 2", f"{base} 3"


def annotate_cells(ax: Axes, values: np.ndarray, image, fmt: str = "{:.2f}", *, fontsize: float = 8,
                   skip_diagonal: bool = False, skip_zero: bool = False) -> int:
    """Write each finite cell of a 2-D ``values`` (drawn by ``image``, an imshow result) in
    black or white, whichever contrasts with the cell's colour. Returns the number of texts."""
    values = np.asarray(values, dtype=float)
    count = 0
    for (i, j), v in np.ndenumerate(values):
        if not np.isfinite(v) or (skip_diagonal and i == j) or (skip_zero and v == 0):
            continue
        r, g, b, _ = image.cmap(image.norm(v))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                color="white" if dark else "black")
        count += 1
    return count
