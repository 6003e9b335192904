"""Thumbnail maps ("activation atlas" style) and the dataset montage: pictures of the data itself.

- :func:`atlas_cells`: lay a ``grid`` x ``grid`` lattice over a 2-D map and pick, in every cell
  that holds points, the point nearest the cell's centre.
- :func:`thumbnail_map`: those points' input images drawn at their cells, edged in the class
  colour, over a faint scatter of the map: what a region of the map means, at a glance.
- :func:`dataset_montage`: a grid of examples, one row per class.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pipeline.plots.common import (axis_labels, class_colors, class_legend, draw_classes, hide_spines,
                                   method_label, new_figure)

__all__ = ["atlas_cells", "thumbnail_map", "dataset_montage"]


def atlas_cells(coords: np.ndarray, grid: int, *, trim: float = 1.0) -> tuple[np.ndarray, np.ndarray, tuple]:
    """``(cells, rows, bounds)`` of a ``grid`` x ``grid`` lattice laid over the 2-D ``coords``
    (n, >=2; only the first two columns are used).

    The lattice covers the ``trim`` .. ``100 - trim`` percentiles of each axis (stray points
    outside fall in the edge cells); ``bounds`` is ``(x0, x1, y0, y1)``. ``cells`` (m, 2) are the
    (column, row) of every cell holding at least one point, ``rows`` (m,) the index of the point
    nearest that cell's centre (ties: the lower index), in cell order (row-major from the lower
    left). Non-finite points are ignored."""
    xy = np.asarray(coords, dtype=float)
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise ValueError(f"expected coords (n, 2), got shape {xy.shape}")
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    xy = xy[:, :2]
    ok = np.flatnonzero(np.isfinite(xy).all(axis=1))
    if not len(ok):
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64), (0.0, 1.0, 0.0, 1.0)
    lo = np.percentile(xy[ok], trim, axis=0)
    hi = np.percentile(xy[ok], 100 - trim, axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    hi = lo + span
    size = span / grid
    cell = np.clip(np.floor((xy[ok] - lo) / size).astype(np.int64), 0, grid - 1)          # (n_ok, 2) col, row
    centre = lo + (cell + 0.5) * size
    dist = np.linalg.norm((xy[ok] - centre) / size, axis=1)                               # in cell units
    key = cell[:, 1] * grid + cell[:, 0]
    order = np.lexsort((ok, dist, key))                                                    # by cell, then nearest
    first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
    return cell[first], ok[first], (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


def thumbnail_map(coords: np.ndarray, images: np.ndarray, labels: np.ndarray, classes: Sequence[str], *,
                  method: str, layer: str, grid: int = 20, colors: np.ndarray | None = None,
                  size: float = 9.0) -> Figure:
    """A 2-D map of ``layer`` with, in every cell of a ``grid`` x ``grid`` lattice that holds
    points, the input image (``images`` (n, H, W) grey or (n, H, W, 3), display form) of the point
    nearest the cell's centre, edged in its class colour; the map's points faintly behind.
    Thumbnail artists carry gid ``thumbnail``."""
    labels = np.asarray(labels)
    colors = class_colors(len(classes)) if colors is None else colors
    xy = np.asarray(coords, dtype=float)[:, :2]
    if len(xy) != len(images) or len(xy) != len(labels):
        raise ValueError(f"{len(xy)} points, {len(images)} images and {len(labels)} labels must match")
    cells, rows, (x0, x1, y0, y1) = atlas_cells(xy, grid)
    fig = new_figure(size + 1.6, size)
    ax = fig.add_subplot()
    finite = np.isfinite(xy).all(axis=1)
    draw_classes(ax, xy[finite], labels[finite], colors, alpha=0.18)
    w, h = (x1 - x0) / grid, (y1 - y0) / grid
    pad = 0.06
    grey = np.asarray(images).ndim == 3
    for (col, row), i in zip(cells, rows):
        left, bottom = x0 + col * w, y0 + row * h
        extent = (left + pad * w, left + (1 - pad) * w, bottom + pad * h, bottom + (1 - pad) * h)
        if grey:
            ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255, extent=extent, interpolation="nearest",
                      zorder=3, gid="thumbnail")
        else:
            ax.imshow(images[i], extent=extent, interpolation="nearest", zorder=3, gid="thumbnail")
        ax.add_patch(Rectangle((extent[0], extent[2]), extent[1] - extent[0], extent[3] - extent[2], fill=False,
                               edgecolor=colors[labels[i]], linewidth=1.2, zorder=4))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("auto")
    xl, yl, _ = axis_labels(method)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_xticks([])
    ax.set_yticks([])
    class_legend(ax, classes, colors, title="class (edge)")
    ax.set_title(f"Thumbnail map of {layer} ({method_label(method)}): in each of the {len(cells)} occupied cells "
                 f"of a {grid}x{grid} grid,\nthe test image nearest the cell's centre, edged in its class colour",
                 fontsize=10)
    return fig


def dataset_montage(images: np.ndarray, labels: np.ndarray, classes: Sequence[str], *, per_class: int = 10,
                    dataset: str = "dataset", max_classes: int = 20, colors: np.ndarray | None = None,
                    counts: Sequence[int] | None = None) -> Figure:
    """One row per class (the first ``max_classes``), its first ``per_class`` images in row order
    (``images`` display form, (n, H, W) or (n, H, W, 3) uint8), the class name and its image count
    (``counts[c]``: of the whole set the images were picked from; default: of ``labels``) at the
    row's start in its colour; a class with fewer images leaves its row short. Each row is one
    mosaic image (gid ``montage-row``)."""
    from matplotlib import colormaps

    from pipeline.plots.filters import mosaic

    labels = np.asarray(labels)
    images = np.asarray(images)
    k = min(len(classes), max_classes)
    colors = class_colors(len(classes)) if colors is None else colors
    counts = np.bincount(labels, minlength=len(classes)) if counts is None else np.asarray(counts)
    grey = images.ndim == 3
    h, w = images.shape[1:3]
    fig = new_figure(per_class * 0.75 + 1.4, k * 0.8 + 0.8)
    axes = fig.subplots(k, 1, squeeze=False)[:, 0]
    cmap = colormaps["gray_r"].with_extremes(bad="white")
    for c, ax in enumerate(axes):
        rows = np.flatnonzero(labels == c)[:per_class]
        tiles = np.full((1, per_class, h, w) + (() if grey else (3,)), np.nan if grey else 1.0)
        for j, i in enumerate(rows):
            tiles[0, j] = images[i] if grey else images[i] / 255.0
        if grey:
            ax.imshow(mosaic(tiles), cmap=cmap, vmin=0, vmax=255, interpolation="nearest", gid="montage-row")
        else:
            ax.imshow(mosaic(tiles, fill=1.0), interpolation="nearest", gid="montage-row")
        ax.set_xticks([])
        ax.set_yticks([])
        hide_spines(ax)
        ax.set_ylabel(f"{classes[c]}\n({int(counts[c])})", rotation=0, ha="right", va="center",
                      fontsize=9, color=colors[c], fontweight="bold")
    more = f" (first {k} of {len(classes)} classes)" if k < len(classes) else ""
    fig.suptitle(f"{dataset}: the first {per_class} training images of each class{more} "
                 f"(images per class in brackets)", fontsize=10)
    return fig
