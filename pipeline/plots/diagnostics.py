"""Figures of the diagnose stage, and colour helpers for 3-channel (CIFAR-10) inputs.

- :func:`activity_histograms`: per layer, a histogram of how often each unit is active (dead
  units are the red bar at 0), small multiples in forward order.
- :func:`tightness_bars`: per layer, each class's tightness (spread around its centroid /
  mean centroid gap) as bars on one shared scale, so depth can be read across panels.
- :func:`display_images` (re-exported from :mod:`pipeline.plots.common`) and
  :func:`rgb_filter_tiles` / :func:`rgb_filter_figure`: colour inputs and first-layer filters.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from pipeline.plots.common import class_colors, display_images, grid_shape, hide_unused, new_figure

__all__ = ["activity_histograms", "tightness_bars", "display_images", "rgb_filter_tiles", "rgb_filter_figure"]

_DEAD = "#d62728"
_ALIVE = "#4c72b0"


_SATURATING = ("tanh", "sigmoid")


def _words(kind: str) -> tuple[str, str, str]:
    """(what a useless unit is called, its bar's legend, the x axis) for one activation kind: a
    tanh / sigmoid unit that never responds is saturated on every input, not "dead" at zero."""
    if kind in _SATURATING:
        return ("saturated", "saturated on every input (no gradient)",
                "fraction of values where the unit is not saturated")
    return "dead", "dead (never active)", "fraction of values where the unit is active"


def activity_histograms(layers: Sequence[str], activity: Mapping[str, np.ndarray],
                        summaries: Mapping[str, Mapping[str, float]], kinds: Mapping[str, str], *,
                        n_inputs: int, bins: int = 20, max_cols: int = 4) -> Figure:
    """One panel per layer: histogram of each unit's active fraction (0..1; ``activity[layer]`` is
    (U,), for conv channels the fraction of inputs x positions, :func:`pipeline.diagnostics.unit_activity`'s ``density``)
    over the ``n_inputs`` extracted inputs. Units never active get their own red bar left of 0:
    "dead" for rectifiers, "saturated" for tanh / sigmoid (the words of the title, bar, legend and
    axis follow the layer's kind); the title gives that count, and the saturated share of values
    for tanh / sigmoid. The y axis counts whole units."""
    from matplotlib.ticker import MaxNLocator

    if not layers:
        raise ValueError("no layers to draw")
    rows, cols = grid_shape(len(layers), max_cols)
    fig = new_figure(cols * 3.0 + 0.4, rows * 2.5 + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    legend: dict[str, object] = {}
    for i, (ax, name) in enumerate(zip(axes, layers)):
        kind = str(kinds[name])
        word, bar_label, xlabel = _words(kind)
        a = np.asarray(activity[name], dtype=float)
        dead = a == 0
        counts, _ = np.histogram(a[~dead], bins=edges)
        alive = "not saturated on some inputs" if kind in _SATURATING else "active on some inputs"
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=_ALIVE, edgecolor="white",
               linewidth=0.5, label=alive)
        width = 1.0 / bins
        ax.bar([-width], [int(dead.sum())], width=width, align="edge", color=_DEAD, edgecolor="white",
               linewidth=0.5, label=bar_label, gid="dead-bar")
        s = summaries[name]
        title = f"{i + 1}. {name} ({kind})\n{int(s['n_dead'])}/{int(s['n_units'])} {word}"
        if "saturated_fraction" in s and np.isfinite(s["saturated_fraction"]):
            title += f", {100 * s['saturated_fraction']:.0f}% values saturated"
        ax.set_title(title, fontsize=9, color=_DEAD if s["dead_fraction"] > 0.5 else "black")
        ax.set_xlim(-1.5 * width, 1.0 + 0.5 * width)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))     # units are counted, never fractional
        ax.tick_params(labelsize=7)
        if i // cols == rows - 1 or i + cols >= len(layers):
            ax.set_xlabel(xlabel, fontsize=8)
        if i % cols == 0:
            ax.set_ylabel("units", fontsize=8)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    hide_unused(axes, len(layers))
    fig.legend(list(legend.values()), list(legend.keys()), loc="outside lower center", ncol=min(len(legend), 4),
               fontsize=8, frameon=False)
    present = {str(kinds[n]) in _SATURATING for n in layers}
    rule = []
    if False in present:
        rule.append("dead = never active on any input at any position")
    if True in present:
        rule.append("saturated = in the flat tail of tanh / sigmoid on every input at every position")
    fig.suptitle(f"Unit activity on {n_inputs} extracted inputs (conv channels: share of inputs x positions;\n"
                 f"{'; '.join(rule)})", fontsize=11)
    return fig


def tightness_bars(layers: Sequence[str], tightness: Mapping[str, np.ndarray], classes: Sequence[str], *,
                   max_cols: int = 4) -> Figure:
    """One panel per layer: a bar per class (class colours) of its tightness, all panels on one
    y-scale, the dashed line at the layer's mean. Lower = the class is clustered more tightly."""
    if not layers:
        raise ValueError("no layers to draw")
    rows, cols = grid_shape(len(layers), max_cols)
    k = len(classes)
    fig = new_figure(cols * max(2.8, 0.28 * k + 1.0) + 0.4, rows * 2.4 + 1.0)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    colors = class_colors(k)
    values = np.concatenate([np.asarray(tightness[n], dtype=float) for n in layers])
    finite = values[np.isfinite(values)]
    top = float(finite.max()) * 1.1 if finite.size else 1.0
    for i, (ax, name) in enumerate(zip(axes, layers)):
        t = np.asarray(tightness[name], dtype=float)
        ax.bar(np.arange(k), np.nan_to_num(t, nan=0.0), color=colors, width=0.8)
        mean = float(np.nanmean(t)) if np.isfinite(t).any() else float("nan")
        if np.isfinite(mean):
            ax.axhline(mean, color="black", linestyle="--", linewidth=1, gid="mean-line")
            ax.set_title(f"{i + 1}. {name}\nmean {mean:.2f}", fontsize=9)
        else:
            ax.set_title(f"{i + 1}. {name}\nundefined (centroids coincide)", fontsize=9)
        ax.set_ylim(0, top)
        if k <= 20:
            ax.set_xticks(range(k), [str(c) for c in classes], fontsize=7, rotation=0 if k <= 10 else 90)
        else:
            ax.set_xticks([])
        ax.tick_params(axis="y", labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("spread / centroid gap", fontsize=8)
    hide_unused(axes, len(layers))
    fig.suptitle("Class tightness per layer: mean distance to the class centroid / mean distance between "
                 "centroids\n(lower = that class is clustered more tightly; dashed: layer mean)", fontsize=10)
    return fig


def rgb_filter_tiles(weights: np.ndarray) -> np.ndarray:
    """First-layer conv filters (F, C, kh, kw) as display tiles in 0..1, each filter on its own
    symmetric scale: ``tile = 0.5 + 0.5 * w / max|w|`` (mid-grey = 0). C = 3 gives (F, kh, kw, 3)
    RGB tiles, C = 1 (F, kh, kw) grey ones. An all-zero filter is flat mid-grey."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[1] not in (1, 3):
        raise ValueError(f"expected first-layer filters (F, 1 or 3, kh, kw), got shape {w.shape}")
    scale = np.abs(w).max(axis=(1, 2, 3), keepdims=True)            # (F, 1, 1, 1)
    tiles = 0.5 + 0.5 * w / np.where(scale > 0, scale, 1.0)
    if w.shape[1] == 1:
        return tiles[:, 0]
    return np.transpose(tiles, (0, 2, 3, 1))


def rgb_filter_figure(weights: np.ndarray, *, layer: str, max_filters: int = 64, max_cols: int = 8) -> Figure:
    """A montage of :func:`rgb_filter_tiles` (each filter scaled on its own: shapes and colour
    balance are visible even for weak filters; compare magnitudes elsewhere)."""
    tiles = rgb_filter_tiles(weights)
    n_all = len(tiles)
    tiles = tiles[:max_filters]
    n = len(tiles)
    rows, cols = grid_shape(n, max_cols)
    fig = new_figure(max(cols * 1.0 + 0.6, 4.0), rows * 1.15 + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes[:n]):
        if tiles.ndim == 3:
            ax.imshow(tiles[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(tiles[i], interpolation="nearest")
        ax.set_title(str(i), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    hide_unused(axes, n)
    shown = f" (first {n} of {n_all})" if n < n_all else ""
    fig.suptitle(f"{layer}: {n_all} filters{shown}, each scaled to its own max |w| (grey = 0)", fontsize=10)
    return fig
