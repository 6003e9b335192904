"""What the network does with single images, and how often it is right.

- :func:`feature_maps_figure`: every spatial layer's maps for one test image.
- :func:`dense_activations_figure`: the dense layers' values for chosen images (e.g. the most
  confident correct prediction and the least confident wrong one), numbers in the cells.
- :func:`confusion_figure`: counts with row-normalised colour, and per-class accuracy bars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from pipeline.plots.common import annotate_cells, class_colors, hide_spines, new_figure, show_image, symmetric_limit

__all__ = ["FeatureMaps", "DenseCase", "MapsCase", "feature_maps_figure", "feature_maps_comparison",
           "dense_activations_figure", "confusion_matrix", "confusion_figure", "pick_cases", "dense_grid_width"]


@dataclass
class FeatureMaps:
    """One spatial layer's output for one image: (C, h, w)."""

    name: str
    kind: str
    maps: np.ndarray


@dataclass
class DenseCase:
    """One image and its dense-layer values (layer -> (d,) vector)."""

    title: str
    image: np.ndarray                       # display image, (H, W) grey or (H, W, 3)
    values: Mapping[str, np.ndarray] = field(default_factory=dict)


def _maps_scale(values: np.ndarray) -> dict[str, Any]:
    """imshow's colour arguments for feature maps: a diverging scale centred on 0 when ``values``
    has negatives, a sequential one from 0 otherwise (after ReLU); mosaic gaps (NaN) in white."""
    from matplotlib import colormaps

    if np.nanmin(values) < 0:
        vmax = symmetric_limit(values)
        return dict(cmap=colormaps["RdBu_r"].with_extremes(bad="white"), vmin=-vmax, vmax=vmax)
    return dict(cmap=colormaps["magma"].with_extremes(bad="white"), vmin=0.0,
                vmax=max(float(np.nanmax(values)), 1e-12))


def feature_maps_figure(image: np.ndarray, layers: Sequence[FeatureMaps], *, caption: str,
                        max_channels: int = 16) -> Figure:
    """The image, then one row per layer with up to ``max_channels`` maps, drawn as one mosaic
    image per row (gid ``maps-row``). A layer with negative values uses a diverging scale centred
    on 0, a non-negative one (after ReLU, pooling of ReLU) a sequential scale from 0; one scale per
    row, with its colour bar at the row's end."""
    from pipeline.plots.filters import mosaic

    if not layers:
        raise ValueError("no spatial layers to show")
    cols = min(max_channels, max(fm.maps.shape[0] for fm in layers))
    rows = len(layers)
    tile = float(np.clip(13.0 / cols, 0.75, 1.5))
    fig = new_figure(tile * cols + 4.2, max(tile * rows + 0.9, 3.6))
    # columns: image | layer name | the row's maps | colour bar
    grid = fig.add_gridspec(rows, 4, width_ratios=[2.0, 1.0, float(cols), 0.12])
    image_ax = fig.add_subplot(grid[:, 0])            # spans every row: no row gets taller for the caption
    show_image(image_ax, image)
    image_ax.set_xlabel(caption, fontsize=9)
    for r, fm in enumerate(layers):
        maps = np.asarray(fm.maps, dtype=float)
        n = min(cols, maps.shape[0])
        kw = _maps_scale(maps)
        name_ax = fig.add_subplot(grid[r, 1])
        name_ax.set_axis_off()
        more = f"\n(first {n} of {maps.shape[0]})" if n < maps.shape[0] else ""
        name_ax.text(1.0, 0.5, f"{fm.name}\n{fm.kind}\n{'x'.join(str(d) for d in maps.shape)}{more}",
                     ha="right", va="center", fontsize=8.5, transform=name_ax.transAxes)
        ax = fig.add_subplot(grid[r, 2])
        h, w = maps.shape[1:]
        # in channel units: channel c's map starts at x = c in every row, so the columns line up
        # whatever the map size (a 5x5 map and its 1-pixel gap fill one unit, as a 28x28 one does)
        unit = w + 1
        artist = ax.imshow(mosaic(maps[None, :n]), interpolation="nearest", gid="maps-row",
                           extent=(0, (n * unit - 1) / unit, h / unit, 0), **kw)
        ax.set_xlim(0, cols)
        ax.set_ylim(1, 0)                             # every row one unit tall: the same scale in every row
        ax.set_anchor("W")
        # channel numbers above the first row, and above channels the row before did not have
        named = [c for c in range(n) if r == 0 or layers[r - 1].maps.shape[0] < c + 1]
        ax.set_xticks([c + w / unit / 2 for c in named], [f"ch {c}" for c in named], fontsize=7)
        ax.tick_params(length=0, pad=2, labeltop=True, labelbottom=False)
        ax.set_yticks([])
        hide_spines(ax)
        cax = fig.add_subplot(grid[r, 3])
        cb = fig.colorbar(artist, cax=cax)
        cb.ax.tick_params(labelsize=7)
    fig.suptitle("Feature maps of one test image, layer by layer (rows) and channel by channel (columns)",
                 fontsize=11)
    return fig


@dataclass
class MapsCase:
    """One image and its spatial layers' maps, for :func:`feature_maps_comparison`."""

    label: str                              # short row label, e.g. "confident"
    caption: str                            # e.g. "test image 17, true 3, predicted 3 (p=1.00)"
    image: np.ndarray                       # display image, (H, W) grey or (H, W, 3)
    layers: Sequence[FeatureMaps] = field(default_factory=list)


def feature_maps_comparison(cases: Sequence[MapsCase], *, max_channels: int = 16) -> Figure:
    """Two (or more) images' feature maps side by side, layer by layer: for each layer one row
    per case, next to each other, with the case's image at the row's start; the cases of a layer
    share one colour scale (diverging around 0 when the layer has negative values, sequential
    from 0 otherwise) so their maps compare directly. At most ``max_channels`` channels a row,
    drawn as one mosaic image per row (gid ``maps-row``)."""
    from pipeline.plots.filters import mosaic

    if not cases or not cases[0].layers:
        raise ValueError("need at least one case with spatial layers")
    names = [fm.name for fm in cases[0].layers]
    for case in cases[1:]:
        if [fm.name for fm in case.layers] != names:
            raise ValueError("every case must show the same layers in the same order")
    n_cases = len(cases)
    widest = min(max_channels, max(fm.maps.shape[0] for fm in cases[0].layers))
    rows = len(names) * n_cases
    row_h = 0.75
    fig = new_figure(min(widest, 16) * 0.75 + 4.2, row_h * rows + 0.35 * len(names) + 1.3)
    heights = []
    for j in range(len(names)):
        heights += [1.0] * n_cases + ([0.3] if j < len(names) - 1 else [])
    grid = fig.add_gridspec(len(heights), 4, width_ratios=[0.9, 1.1, max(widest, 1) * 0.9, 0.12],
                            height_ratios=heights)
    for j, name in enumerate(names):
        stack = [np.asarray(case.layers[j].maps, dtype=float)[:max_channels] for case in cases]
        values = np.concatenate([m.ravel() for m in stack])
        kw = _maps_scale(values)
        first = j * (n_cases + 1)
        name_ax = fig.add_subplot(grid[first:first + n_cases, 1])
        name_ax.set_axis_off()
        fm = cases[0].layers[j]
        full = np.asarray(fm.maps).shape
        more = f"\n(first {max_channels} of {full[0]})" if full[0] > max_channels else ""
        name_ax.text(1.0, 0.5, f"{name}\n{fm.kind}\n{'x'.join(str(d) for d in full)}{more}", ha="right",
                     va="center", fontsize=8.5, transform=name_ax.transAxes)
        artist = None
        for c_i, (case, maps) in enumerate(zip(cases, stack)):
            r = first + c_i
            image_ax = fig.add_subplot(grid[r, 0])
            show_image(image_ax, case.image)
            image_ax.set_ylabel(case.label, fontsize=7.5, gid="case-label")
            ax = fig.add_subplot(grid[r, 2])
            artist = ax.imshow(mosaic(maps[None]), interpolation="nearest", gid="maps-row", **kw)
            ax.set_anchor("W")
            h, w = maps.shape[1:]
            ax.set_yticks([])
            if c_i == 0:
                step = max(1, len(maps) // 8)
                ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(0, len(maps), step)],
                              [f"ch {c}" for c in range(0, len(maps), step)], fontsize=6)
                ax.tick_params(length=0, pad=1, labeltop=True, labelbottom=False)
            else:
                ax.set_xticks([])
            hide_spines(ax)
        cax = fig.add_subplot(grid[first:first + n_cases, 3])
        fig.colorbar(artist, cax=cax).ax.tick_params(labelsize=7)
    fig.suptitle("Feature maps, layer by layer, one row per image (one colour scale per layer)\n"
                 + "\n".join(f"{case.label}: {case.caption}" for case in cases), fontsize=10)
    return fig


def dense_grid_width(d: int) -> int:
    """Cells per row when a (d,) vector is drawn as a near-square heatmap (a bit wider than tall)."""
    return max(1, min(d, math.ceil(math.sqrt(1.5 * d))))


def dense_activations_figure(cases: Sequence[DenseCase], layers: Sequence[str], classes: Sequence[str], *,
                             output_layer: str | None = None, max_numbers: int = 160) -> Figure:
    """One row per case: the image, then one heatmap per dense layer with the value in each cell
    (when the layer has at most ``max_numbers`` units); units run row by row. Each layer keeps
    one scale across the cases so they can be compared; the output layer is one row labelled
    with the class names, its argmax boxed."""
    if not cases or not layers:
        raise ValueError("need at least one case and one dense layer")
    dims = {name: int(np.asarray(cases[0].values[name]).size) for name in layers}
    outputs = {name for name in layers if name == output_layer and dims[name] == len(classes)}
    widths = {name: dims[name] if name in outputs else dense_grid_width(d) for name, d in dims.items()}
    heights = {name: math.ceil(dims[name] / widths[name]) for name in layers}
    cell = 0.38
    col_w = [2.2] + [max(widths[n] * cell, 2.4) for n in layers]
    row_h = max(2.6, max(heights.values()) * cell + 0.55)
    fig = new_figure(sum(col_w) + 0.8, row_h * len(cases) + 1.4)
    # the last grid row holds one horizontal colour bar per layer (cax), so all rows align
    grid = fig.add_gridspec(len(cases) + 1, len(layers) + 1, width_ratios=col_w,
                            height_ratios=[row_h] * len(cases) + [0.12])
    limits = {n: symmetric_limit(np.concatenate([np.ravel(c.values[n]) for c in cases])) for n in layers}
    for r, case in enumerate(cases):
        show_image(fig.add_subplot(grid[r, 0]), case.image, case.title, fontsize=9)
        for j, name in enumerate(layers):
            ax = fig.add_subplot(grid[r, j + 1])
            v = np.asarray(case.values[name], dtype=float).ravel()
            wdt, hgt = widths[name], heights[name]
            padded = np.full(wdt * hgt, np.nan)
            padded[:v.size] = v
            table = padded.reshape(hgt, wdt)
            im = ax.imshow(table, cmap="RdBu_r", vmin=-limits[name], vmax=limits[name], aspect="equal",
                           interpolation="nearest")
            if v.size <= max_numbers:
                decimals = 1 if limits[name] >= 10 else 2
                annotate_cells(ax, table, im, f"{{:.{decimals}f}}", fontsize=6.5 if wdt <= 14 else 5.5)
            ax.set_yticks([])
            if name in outputs:
                ax.set_xticks(range(len(classes)), [str(c) for c in classes], fontsize=8)
                ax.add_patch(_box(int(np.argmax(v)), 0))
            else:
                ax.set_xticks([])
            if r == 0:
                what = "class scores" if name in outputs else f"{v.size} units, row by row"
                ax.set_title(f"{name}\n({what})", fontsize=10)
            if r == len(cases) - 1:
                cb = fig.colorbar(im, cax=fig.add_subplot(grid[-1, j + 1]), orientation="horizontal")
                cb.ax.tick_params(labelsize=7)
    fig.suptitle("Dense-layer activations of two test images (one colour scale per layer)", fontsize=11)
    return fig


def _box(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2)


def pick_cases(labels: np.ndarray, preds: np.ndarray, confidence: np.ndarray) -> dict[str, int]:
    """Row indices of the most confident correct prediction and the least confident wrong one
    (a key is missing when there is no such prediction)."""
    labels, preds, confidence = np.asarray(labels), np.asarray(preds), np.asarray(confidence)
    out: dict[str, int] = {}
    right = np.flatnonzero(preds == labels)
    wrong = np.flatnonzero(preds != labels)
    if right.size:
        out["most_confident_correct"] = int(right[np.argmax(confidence[right])])
    if wrong.size:
        out["least_confident_wrong"] = int(wrong[np.argmin(confidence[wrong])])
    return out


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    return np.bincount(labels * n_classes + preds, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_figure(cm: np.ndarray, classes: Sequence[str], *, colors: np.ndarray | None = None) -> Figure:
    """Left: counts, coloured by the row-normalised fraction (recall per true class). Right: the
    accuracy of each class, with the overall accuracy as a dashed line."""
    cm = np.asarray(cm)
    k = len(classes)
    colors = class_colors(k) if colors is None else colors
    totals = cm.sum(axis=1)
    frac = cm / np.maximum(totals, 1)[:, None]
    per_class = np.where(totals > 0, np.diag(cm) / np.maximum(totals, 1), np.nan)
    overall = float(np.trace(cm) / max(cm.sum(), 1))
    side = float(np.clip(0.55 * k + 2.0, 4.5, 11.0))
    fig = new_figure(side * 1.9 + 0.8, side + 0.6)
    grid = fig.add_gridspec(1, 2, width_ratios=[1.15, 0.85])
    ax = fig.add_subplot(grid[0, 0])
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=9 if k <= 12 else 7,
                            color="white" if frac[i, j] > 0.55 else "black")
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=0 if k <= 12 else 90)
    ax.set_yticks(range(k), [str(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix ({int(cm.sum())} test images, accuracy {overall:.3f})\n"
                 "numbers: counts; colour: fraction of the true class", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the row")
    bar_ax = fig.add_subplot(grid[0, 1])
    x = np.arange(k)
    bar_ax.bar(x, np.nan_to_num(per_class), color=colors, edgecolor="0.2", linewidth=0.5)
    for i, value in enumerate(per_class):
        if np.isfinite(value):
            bar_ax.text(i, value + 0.01, f"{value:.2f}", ha="center", va="bottom", fontsize=8,
                        rotation=90 if k > 12 else 0)
    bar_ax.axhline(overall, color="0.2", linestyle="--", linewidth=1, label=f"overall {overall:.3f}")
    bar_ax.set_xticks(x, [str(c) for c in classes], rotation=0 if k <= 12 else 90)
    low = float(np.nanmin(per_class)) if np.isfinite(per_class).any() else 0.0
    bar_ax.set_ylim(max(0.0, min(low - 0.1, 0.8)), 1.06)
    bar_ax.set_xlabel("class")
    bar_ax.set_ylabel("accuracy (recall)")
    bar_ax.set_title("Accuracy per class", fontsize=10)
    bar_ax.legend(loc="lower right", fontsize=8)
    return fig
