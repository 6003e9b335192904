"""What the weights look like: filter montages, weight images, redundant filters.

Weights are signed, so every view uses a diverging colour map centred on zero (blue negative,
red positive, white zero) with a symmetric scale; RGB filters are shown as colour images with
zero at mid-grey.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pipeline.plots.common import annotate_cells, grid_shape, hide_spines, hide_unused, new_figure, symmetric_limit
from pipeline.redundancy import filter_correlations, redundant_pairs

__all__ = ["filter_montage", "conv_weights_grid", "weight_images", "filter_correlations", "redundant_pairs",
           "redundancy_figure", "DIVERGING"]

DIVERGING = "RdBu_r"


def _rgb(tile: np.ndarray, vmax: float) -> np.ndarray:
    """(3, h, w) signed weights -> (h, w, 3) in 0..1, zero at mid-grey."""
    return np.clip(np.transpose(tile, (1, 2, 0)) / (2 * vmax) + 0.5, 0.0, 1.0)


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def filter_montage(weights: np.ndarray, *, layer: str, max_filters: int = 64, max_cols: int = 8) -> Figure:
    """First-layer filters (F, C, kh, kw), one tile each, numbered, drawn as one image
    (:func:`pipeline.plots.filters.mosaic`, 1 px gaps). One channel: a diverging colour map on
    one symmetric scale for all (weak or dead filters look pale), with a colour bar. Three (RGB
    input): colour tiles from :func:`~pipeline.plots.diagnostics.rgb_filter_tiles`, each filter on
    its own symmetric scale (mid-grey = 0), so the colour and shape of weak filters stay visible."""
    from matplotlib import colormaps

    from pipeline.plots.diagnostics import rgb_filter_tiles
    from pipeline.plots.filters import mosaic

    w = np.asarray(weights, dtype=float)
    if w.ndim != 4:
        raise ValueError(f"expected conv weights (F, C, kh, kw), got shape {w.shape}")
    n_all, c, kh, kw = w.shape
    w = w[:max_filters]
    n = len(w)
    rows, cols = grid_shape(n, max_cols)
    tile = float(np.clip(7.0 / cols, 0.7, 1.4))
    fig = new_figure(max(cols * tile + 1.2, 4.5), rows * (tile + 0.25) + 1.0)
    ax = fig.subplots()
    vmax = symmetric_limit(w)
    if c == 3:                                                  # (n, kh, kw, 3) in [0, 1], gaps white
        grid = np.ones((rows * cols, kh, kw, 3))
        grid[:n] = rgb_filter_tiles(w)
        image = None
        ax.imshow(mosaic(grid.reshape(rows, cols, kh, kw, 3), fill=1.0), interpolation="nearest")
    else:
        grid = np.full((rows * cols, kh, kw), np.nan)           # NaN: the gaps and empty cells, white
        grid[:n] = w[:, 0] if c == 1 else w.mean(axis=1)
        cmap = colormaps[DIVERGING].with_extremes(bad="white")
        image = ax.imshow(mosaic(grid.reshape(rows, cols, kh, kw)), cmap=cmap, vmin=-vmax, vmax=vmax,
                          interpolation="nearest")
    for i in range(n):                                          # the number above each tile
        r, k = divmod(i, cols)
        ax.text(k * (kw + 1) + (kw - 1) / 2, r * (kh + 1) - 0.55, f"#{i}", ha="center", va="bottom", fontsize=8)
    _no_ticks(ax)
    hide_spines(ax)
    shown = f" (first {n} of {n_all})" if n < n_all else ""
    chan = "" if c in (1, 3) else f", mean over {c} input channels"
    fig.suptitle(f"{layer}: {n_all} filters of {kh}x{kw}{shown}{chan}", fontsize=11)
    if image is not None:
        fig.colorbar(image, ax=ax, shrink=0.8, label="weight", pad=0.02)
    else:
        peaks = np.abs(w).max(axis=(1, 2, 3))
        fig.supxlabel("RGB, each filter scaled to its own max |w| (mid-grey = 0; a channel is brighter where its "
                      f"weight is positive)\nmax |w| per filter: {peaks.min():.3g} .. {peaks.max():.3g}", fontsize=8)
    return fig


def conv_weights_grid(weights: np.ndarray, *, layer: str, max_rows: int = 16, max_cols: int = 16) -> Figure:
    """A deeper conv layer (F_out, F_in, kh, kw): one row per output filter, one column per input
    channel, capped at ``max_rows`` x ``max_cols`` tiles; one symmetric scale for all tiles, drawn
    as one image (:func:`pipeline.plots.filters.mosaic`) with the rows and columns named on its axes."""
    from matplotlib import colormaps

    from pipeline.plots.filters import mosaic

    w = np.asarray(weights, dtype=float)
    if w.ndim != 4:
        raise ValueError(f"expected conv weights (F_out, F_in, kh, kw), got shape {w.shape}")
    f_out, f_in, kh, kw = w.shape
    shown = w[:max_rows, :max_cols]
    rows, cols = shown.shape[:2]
    tile = float(np.clip(min(9.0 / cols, 11.0 / rows), 0.4, 1.1))
    fig = new_figure(max(cols * tile + 2.0, 4.6), rows * (tile + 0.1) + 1.1)
    ax = fig.subplots()
    vmax = symmetric_limit(shown)
    cmap = colormaps[DIVERGING].with_extremes(bad="white")
    image = ax.imshow(mosaic(shown), cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xticks([c * (kw + 1) + (kw - 1) / 2 for c in range(cols)], [f"in {c}" for c in range(cols)], fontsize=8)
    ax.set_yticks([r * (kh + 1) + (kh - 1) / 2 for r in range(rows)], [f"out {r}" for r in range(rows)], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    hide_spines(ax)
    cap = []
    if f_out > rows:
        cap.append(f"first {rows} of {f_out} filters")
    if f_in > cols:
        cap.append(f"first {cols} of {f_in} input channels")
    extra = f" ({', '.join(cap)})" if cap else ""
    fig.suptitle(f"{layer}: {f_out} filters x {f_in} input channels, {kh}x{kw}{extra}\n"
                 f"row = output filter, column = input channel", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=min(0.6, 5.0 / (rows * tile)), aspect=15, label="weight", pad=0.02)
    return fig


def weight_images(weights: np.ndarray, input_shape: Sequence[int], *, layer: str,
                  unit_names: Sequence[str] | None = None, max_units: int = 32, max_cols: int = 8,
                  what: str = "unit") -> Figure:
    """Rows of a dense layer's weight matrix (units, C*H*W) reshaped to the input image: what
    each unit (or class, for a linear model's logits) responds to. Each tile has its own
    symmetric scale (units differ in norm); red pixels push the unit up, blue push it down."""
    w = np.asarray(weights, dtype=float)
    c, h, wd = (int(s) for s in input_shape)
    if w.ndim != 2 or w.shape[1] != c * h * wd:
        raise ValueError(f"expected weights (units, {c * h * wd}) for input {tuple(input_shape)}, got {w.shape}")
    n_all = len(w)
    w = w[:max_units]
    n = len(w)
    rows, cols = grid_shape(n, max_cols)
    tile = 1.25
    fig = new_figure(cols * tile + 0.6, rows * (tile + 0.3) + 1.0)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes[:n]):
        img = w[i].reshape(c, h, wd)
        vmax = symmetric_limit(img)
        if c == 3:
            ax.imshow(_rgb(img, vmax), interpolation="nearest")
        else:
            ax.imshow(img.mean(axis=0), cmap=DIVERGING, vmin=-vmax, vmax=vmax, interpolation="nearest")
        name = unit_names[i] if unit_names is not None and i < len(unit_names) else f"{what} {i}"
        ax.set_title(str(name), fontsize=9)
        _no_ticks(ax)
    hide_unused(axes, n)
    shown = f"first {n} of {n_all} {what}s" if n < n_all else f"{n_all} {what}s"
    fig.suptitle(f"{layer}: weight images ({shown}, reshaped to the {h}x{wd} input)\n"
                 f"red raises the {what}'s value, blue lowers it; each tile on its own symmetric scale",
                 fontsize=10)
    return fig


def _correlation_panel(fig, ax, corr: np.ndarray, pairs, *, threshold: float, label: str, title: str) -> None:
    """One correlation matrix with its near-duplicate pairs boxed (gid ``redundant-pair``)."""
    f = len(corr)
    image = ax.imshow(corr, cmap=DIVERGING, vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    if f <= 16:
        annotate_cells(ax, corr, image, fontsize=7 if f > 10 else 8, skip_diagonal=True)
    for a, b, _ in pairs:
        ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.2,
                               gid="redundant-pair"))
    step = max(1, f // 24)
    ticks = np.arange(0, f, step)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(labelsize=8)
    ax.set_xlabel("filter")
    ax.set_ylabel("filter")
    listed = ", ".join(f"{a}~{b} ({r:+.2f})" for a, b, r in pairs[:6]) + (" ..." if len(pairs) > 6 else "")
    ax.set_title(f"{title}: {len(pairs)} near-duplicate pair{'s' if len(pairs) != 1 else ''} "
                 f"(|r| >= {threshold:g}, boxed)" + (f"\n{listed}" if pairs else ""), fontsize=10)


def redundancy_figure(weights: np.ndarray, *, layer: str, threshold: float, max_thumbnails: int = 24,
                      activation_corr: np.ndarray | None = None, max_shift: int = 0,
                      n_images: int | None = None) -> Figure:
    """Correlation matrix of a layer's filters with every near-duplicate pair (|r| >= threshold)
    boxed (patches with gid ``redundant-pair``), and the filters themselves underneath (when there
    are few enough) so the indices can be matched to pictures. With ``activation_corr``
    (:func:`pipeline.redundancy.activation_correlations` of the layer's maps on ``n_images``
    images, max over shifts up to ``max_shift`` px) a second matrix beside it: filters whose maps
    are the same up to a small shift, which the weights alone miss."""
    w = np.asarray(weights, dtype=float)
    corr = filter_correlations(w)
    pairs = redundant_pairs(corr, threshold)
    f = len(w)
    panels = [(corr, pairs, "correlation of the filters' weights", "weights")]
    if activation_corr is not None:
        act = np.asarray(activation_corr, dtype=float)
        if act.shape != corr.shape:
            raise ValueError(f"activation_corr has shape {act.shape}, the layer has {f} filters")
        shift = f", best shift <= {max_shift} px" if max_shift else ""
        on = f" on {n_images} images" if n_images else ""
        panels.append((act, redundant_pairs(act, threshold), f"correlation of the output maps{shift}",
                       f"maps{on}"))
    thumbs = w.ndim == 4 and f <= max_thumbnails
    side = float(np.clip(0.42 * f + 2.5, 5.0, 10.0))
    n_panels = len(panels)
    fig = new_figure(n_panels * (side + 1.4), side + (1.3 if thumbs else 0.4))
    if thumbs:
        grid = fig.add_gridspec(2, f * n_panels, height_ratios=[side, max(side / f, 0.5) + 0.2])
        axes = [fig.add_subplot(grid[0, k * f:(k + 1) * f]) for k in range(n_panels)]
        small = [fig.add_subplot(grid[1, k]) for k in range(f)]               # under the weights panel
    else:
        grid = fig.add_gridspec(1, n_panels)
        axes = [fig.add_subplot(grid[0, k]) for k in range(n_panels)]
        small = []
    for ax, (matrix, found, label, title) in zip(axes, panels):
        _correlation_panel(fig, ax, matrix, found, threshold=threshold, label=label,
                           title=f"{layer}, {title}" if n_panels > 1 else layer)
    if small:
        vmax = symmetric_limit(w)
        for i, sub in enumerate(small):
            if w.shape[1] == 3:
                sub.imshow(_rgb(w[i], vmax), interpolation="nearest")
            else:
                sub.imshow(w[i].mean(axis=0), cmap=DIVERGING, vmin=-vmax, vmax=vmax, interpolation="nearest")
            _no_ticks(sub)
            sub.set_xlabel(str(i), fontsize=8)
    return fig
