"""How one layer's map changes during training, from the weight snapshots.

The reduce stage maps each snapshot backwards from the final model and aligns each frame to
the next, so frames share one coordinate system; every panel and frame here uses the same
axis limits so growth and collapse of the clusters stay visible.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure

from pipeline.plots.common import (axis_labels, class_colors, class_legend, draw_classes, draw_order, grid_shape,
                                   hide_unused,
                                   label_centroids, marker_size, method_label, new_figure)

__all__ = ["evolution_grid", "evolution_animation", "frame_title", "shared_limits", "frame_limits", "pick_frames"]


def frame_title(step: int, epoch: float | None, accuracy: float | None, zoom: float | None = None) -> str:
    parts = [f"step {step}"]
    if epoch is not None and np.isfinite(epoch):
        parts.append(f"epoch {epoch:.1f}")
    if accuracy is not None and np.isfinite(accuracy):
        parts.append(f"acc {accuracy:.2f}")
    title = " · ".join(parts)
    return f"{title}\n(zoomed x{zoom:.2g})" if zoom is not None else title


def shared_limits(frames: Sequence[np.ndarray], margin: float = 0.05) -> tuple[tuple[float, float], ...]:
    """x and y limits covering the 0.5-99.5 percentiles of every frame (a few stray points may fall outside)."""
    xy = np.concatenate([np.asarray(f, dtype=float)[:, :2] for f in frames])
    xy = xy[np.isfinite(xy).all(axis=1)]
    if not len(xy):
        return (-1.0, 1.0), (-1.0, 1.0)
    lo, hi = np.percentile(xy, 0.5, axis=0), np.percentile(xy, 99.5, axis=0)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - margin * span, hi + margin * span
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def frame_limits(frames: Sequence[np.ndarray], tolerance: float = 2.0) -> list[tuple[tuple, tuple, float | None]]:
    """Per frame ``(xlim, ylim, zoom)``: the limits shared by all frames, except for a frame whose
    spread differs from the last (final) frame's by more than ``tolerance`` times (e.g. the
    untrained network's tiny activations mapped by PCA): it gets its own limits and ``zoom``,
    the magnification relative to the shared view, so its structure stays visible."""
    def spread(f: np.ndarray) -> float:
        xy = np.asarray(f, dtype=float)[:, :2]
        xy = xy[np.isfinite(xy).all(axis=1)]
        return float(np.sqrt(((xy - xy.mean(axis=0)) ** 2).sum(axis=1).mean())) if len(xy) else 0.0

    shared = shared_limits(frames)
    final = spread(frames[-1]) if len(frames) else 0.0
    out = []
    for f in frames:
        ratio = spread(f) / final if final > 0 else 1.0
        if ratio > 0 and (ratio < 1 / tolerance or ratio > tolerance):
            xlim, ylim = shared_limits([f])
            out.append((xlim, ylim, 1.0 / ratio))
        else:
            out.append((*shared, None))
    return out


def pick_frames(n: int, max_frames: int) -> np.ndarray:
    """Indices of at most ``max_frames`` evenly spread frames, always the first and the last."""
    if n <= max_frames:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_frames)).astype(int))


def evolution_grid(frames: Sequence[np.ndarray], labels: np.ndarray, classes: Sequence[str], *, steps: Sequence[int],
                   epochs: Sequence[float | None] | None = None, accuracies: Sequence[float | None] | None = None,
                   method: str, layer: str, max_panels: int = 20, colors: np.ndarray | None = None) -> Figure:
    """One panel per snapshot (at most ``max_panels``, evenly spread), in training order, all on
    the same axis limits; the last panel is the final model."""
    labels = np.asarray(labels)
    colors = class_colors(len(classes)) if colors is None else colors
    chosen = pick_frames(len(frames), max_panels)
    rows, cols = grid_shape(len(chosen), 5)
    panel = 2.8
    fig = new_figure(cols * panel + 1.3, rows * (panel + 0.3) + 0.7)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    limits = frame_limits([frames[i] for i in chosen])
    xl, yl, _ = axis_labels(method)
    for ax, i, (xlim, ylim, zoom) in zip(axes, chosen, limits):
        xy = np.asarray(frames[i], dtype=float)[:, :2]
        draw_classes(ax, xy, labels, colors, size=marker_size(len(xy), panel))
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
        ax.set_xticks([])
        ax.set_yticks([])
        epoch = epochs[i] if epochs is not None else None
        acc = accuracies[i] if accuracies is not None else None
        ax.set_title(frame_title(int(steps[i]), epoch, acc, zoom), fontsize=9.5)
    for k, ax in enumerate(axes[:len(chosen)]):
        if k % cols == 0:
            ax.set_ylabel(yl, fontsize=8)
        if k >= len(chosen) - cols:
            ax.set_xlabel(xl, fontsize=8)
    hide_unused(axes, len(chosen))
    shown = f" ({len(chosen)} of {len(frames)} snapshots)" if len(chosen) < len(frames) else ""
    fig.suptitle(f"Training evolution of layer {layer}: {method_label(method)} map at each weight snapshot{shown}",
                 fontsize=12)
    class_legend(fig, classes, colors, loc="outside right center", bbox_to_anchor=None, fontsize=10)
    return fig


def evolution_animation(frames: Sequence[np.ndarray], labels: np.ndarray, classes: Sequence[str], *,
                        steps: Sequence[int], epochs: Sequence[float | None] | None = None,
                        accuracies: Sequence[float | None] | None = None, method: str, layer: str,
                        max_frames: int = 60, size: float = 5.0, interval_ms: int = 400,
                        colors: np.ndarray | None = None) -> FuncAnimation:
    """An animation with one frame per snapshot (at most ``max_frames``): the points move, the
    class names follow their class medians; save it with ``artifacts.save_animation``."""
    labels = np.asarray(labels)
    colors = class_colors(len(classes)) if colors is None else colors
    chosen = pick_frames(len(frames), max_frames)
    data = [np.asarray(frames[i], dtype=float)[:, :2] for i in chosen]
    fig = new_figure(size + 1.0, size, layout=None)
    ax = fig.add_axes((0.08, 0.08, 0.70, 0.76))       # fixed box: frames must not jump; room for 2 title lines
    limits = frame_limits(data)
    order = draw_order(len(labels))
    scatter = draw_classes(ax, data[0], labels, colors, size=marker_size(len(labels), size))
    ax.set_xlim(limits[0][0])
    ax.set_ylim(limits[0][1])
    ax.set_xticks([])
    ax.set_yticks([])
    xl, yl, _ = axis_labels(method)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    class_legend(ax, classes, colors, fontsize=9)
    texts = label_centroids(ax, data[0], labels, classes, colors, fontsize=10)
    fig.suptitle(f"{method_label(method)} map of {layer} during training", fontsize=11, y=0.985)

    def titles(k: int) -> str:
        i = chosen[k]
        epoch = epochs[i] if epochs is not None else None
        acc = accuracies[i] if accuracies is not None else None
        return frame_title(int(steps[i]), epoch, acc, limits[k][2])

    ax.set_title(titles(0), fontsize=10)

    def update(k: int):
        scatter.set_offsets(data[k][order])
        ax.set_xlim(limits[k][0])
        ax.set_ylim(limits[k][1])
        for t in texts:
            t.remove()
        texts[:] = label_centroids(ax, data[k], labels, classes, colors, fontsize=10)
        ax.set_title(titles(k), fontsize=10)
        return [scatter, *texts]

    return FuncAnimation(fig, update, frames=len(data), interval=interval_ms, blit=False, repeat=True)
