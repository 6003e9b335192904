"""Figures of autoencoders (what they keep of an image, what their code looks like) and of the dataset.

Images here are pixels in [0, 1] (float32 ``(N, C, H, W)``, as :func:`pipeline.models.autoencoders.reconstruct`
returns them) or the uint8 display images of :func:`pipeline.plots.common.display_images`; both are
drawn like every other figure: grey digits as dark ink on white, colour images as RGB.

- :func:`reconstruction_figure`: rows of inputs and their reconstructions (or clean / noisy /
  denoised for a denoising autoencoder), one column per class.
- :func:`progress_figure` / :func:`progress_animation`: the same images reconstructed by every
  weight snapshot (a grid, and a GIF with one frame per snapshot).
- :func:`latent_figure`: a 2-D code itself (no reduction), coloured by class.
- :func:`manifold_figure`: the decoder's images over a grid of the 2-D code, next to the test codes.
- :func:`pixel_stats` / :func:`mean_std_figure`: per-pixel mean and standard deviation of a split.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

from pipeline.plots.common import (class_colors, class_legend, display_images, draw_classes, label_centroids,
                                   marker_size, new_figure, show_image)

__all__ = [
    "to_display", "pick_per_class", "pixel_mse", "reconstruction_figure", "progress_figure", "progress_animation",
    "latent_figure", "manifold_figure", "mosaic", "pixel_stats", "mean_std_figure",
]


def to_display(pixels: np.ndarray) -> np.ndarray:
    """float (N, C, H, W) pixels in [0, 1] -> uint8 display images (N, H, W) or (N, H, W, 3)."""
    x = np.asarray(pixels, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"expected pixels of shape (N, C, H, W), got {x.shape}")
    return display_images(np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8))


def pick_per_class(labels: np.ndarray, n_classes: int, per_class: int) -> np.ndarray:
    """Row indices, ``per_class`` of each class (the first ones in row order), class-major:
    ``[c0 #1, c0 #2, ..., c1 #1, ...]``; a class with fewer rows gives what it has."""
    labels = np.asarray(labels)
    picked = [np.flatnonzero(labels == k)[:per_class] for k in range(n_classes)]
    return np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, dtype=np.int64)


def pixel_mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared difference of two pixel arrays in [0, 1] units (every value, every channel)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.mean((a - b) ** 2)) if a.size else float("nan")


def _slots(labels: np.ndarray, n_classes: int) -> list[tuple[int, int, int]]:
    """(image index, slot within its class, class) for class-major images: column = class."""
    out, seen = [], np.zeros(n_classes, dtype=int)
    for i, k in enumerate(np.asarray(labels, dtype=int)):
        out.append((i, int(seen[k]), int(k)))
        seen[k] += 1
    return out


def reconstruction_figure(rows: Sequence[tuple[str, np.ndarray]], labels: np.ndarray, classes: Sequence[str], *,
                          title: str, tile: float = 0.8) -> Figure:
    """One column per class; per image of that class a group of rows (e.g. ``input`` above its
    ``reconstruction``), groups separated by a gap. ``rows`` are ``(row label, display images
    (N, H, W) or (N, H, W, 3))``, all indexed like ``labels`` (use :func:`pick_per_class`)."""
    if not rows:
        raise ValueError("no image rows to show")
    labels = np.asarray(labels)
    n = len(labels)
    if any(len(images) != n for _, images in rows):
        raise ValueError(f"every row needs {n} images (one per label)")
    k = len(classes)
    slots = _slots(labels, k)
    per_class = max((s for _, s, _ in slots), default=-1) + 1
    kinds = len(rows)
    grid_rows = per_class * kinds + max(per_class - 1, 0)             # gap row between groups
    ratios = ([1.0] * kinds + [0.22]) * per_class
    ratios = ratios[:grid_rows]
    height = tile * sum(ratios) + 1.3
    fig = new_figure(max(tile * k + 1.9, 5.0), height)
    grid = fig.add_gridspec(grid_rows, k + 1, height_ratios=ratios, width_ratios=[1.6] + [1.0] * k,
                            hspace=0.08, wspace=0.06)
    for g in range(per_class):
        for r, (name, _) in enumerate(rows):
            label_ax = fig.add_subplot(grid[g * (kinds + 1) + r, 0])
            label_ax.set_axis_off()
            label_ax.text(1.0, 0.5, name, ha="right", va="center", fontsize=9, transform=label_ax.transAxes)
    for i, slot, cls in slots:
        for r, (_, images) in enumerate(rows):
            ax = fig.add_subplot(grid[slot * (kinds + 1) + r, cls + 1])
            show_image(ax, images[i])
            if slot == 0 and r == 0:
                ax.set_title(str(classes[cls]), fontsize=10, fontweight="bold")
    fig.suptitle(title, fontsize=11)
    return fig


def _frame_label(step: int, epoch: float | None, mse: float | None) -> list[str]:
    parts = [f"step {step}"]
    if epoch is not None and np.isfinite(epoch):
        parts.append(f"epoch {epoch:.1f}")
    if mse is not None and np.isfinite(mse):
        parts.append(f"MSE {mse:.4f}")
    return parts


def progress_figure(inputs: np.ndarray, frames: Sequence[np.ndarray], labels: np.ndarray, classes: Sequence[str],
                    *, steps: Sequence[int], epochs: Sequence[float | None], mses: Sequence[float | None],
                    mse_images: int | None = None, max_rows: int = 12, tile: float = 0.8) -> Figure:
    """The inputs on top, then one row per snapshot (at most ``max_rows``, evenly spread, always the
    first and the last) of their reconstructions; each row labelled with step, epoch and the
    snapshot's MSE (pixel units, on the ``mse_images`` test images the caller measured). ``inputs`` and each frame
    are display images indexed like ``labels``."""
    from pipeline.plots.evolution import pick_frames

    if not len(frames):
        raise ValueError("no snapshots to show")
    chosen = pick_frames(len(frames), max_rows)
    m = len(inputs)
    fig = new_figure(max(tile * m + 2.2, 5.0), tile * (len(chosen) + 1) + 0.35 + 1.1)
    grid = fig.add_gridspec(len(chosen) + 2, m + 1, height_ratios=[1.0, 0.35] + [1.0] * len(chosen),
                            width_ratios=[2.0] + [1.0] * m, hspace=0.06, wspace=0.05)
    labels = np.asarray(labels)

    def row_label(r: int, text: str) -> None:
        ax = fig.add_subplot(grid[r, 0])
        ax.set_axis_off()
        ax.text(1.0, 0.5, text, ha="right", va="center", fontsize=8.5, transform=ax.transAxes)

    row_label(0, "input")
    for j in range(m):
        ax = fig.add_subplot(grid[0, j + 1])
        show_image(ax, inputs[j])
        ax.set_title(str(classes[int(labels[j])]), fontsize=10, fontweight="bold")
    for r, i in enumerate(chosen):
        row_label(r + 2, "\n".join(_frame_label(int(steps[i]), epochs[i], mses[i])))
        for j in range(m):
            show_image(fig.add_subplot(grid[r + 2, j + 1]), frames[i][j])
    shown = f" ({len(chosen)} of {len(frames)} snapshots)" if len(chosen) < len(frames) else ""
    over = f" over {mse_images} test images" if mse_images else ""
    fig.suptitle(f"Reconstructions during training, one row per weight snapshot{shown}\n"
                 f"top: the test inputs; last row: the final model; MSE{over} in [0, 1] pixel units", fontsize=11)
    return fig


def progress_animation(inputs: np.ndarray, frames: Sequence[np.ndarray], labels: np.ndarray,
                       classes: Sequence[str], *, steps: Sequence[int], epochs: Sequence[float | None],
                       mses: Sequence[float | None], mse_images: int | None = None, max_frames: int = 150,
                       tile: float = 0.85,
                       interval_ms: int = 400) -> FuncAnimation:
    """Two rows: the inputs, and their reconstructions by one snapshot per frame (every snapshot
    up to ``max_frames``); the title names the step, epoch and MSE. Save with ``artifacts.save_animation``."""
    from pipeline.plots.evolution import pick_frames

    if not len(frames):
        raise ValueError("no snapshots to show")
    chosen = pick_frames(len(frames), max_frames)
    labels = np.asarray(labels)
    m = len(inputs)
    width, height = max(tile * m + 1.6, 4.0), 2 * tile + 0.95
    fig = new_figure(width, height, layout=None)                       # fixed boxes: frames must not jump
    left, right = 1.35 / width, 0.15 / width
    cell_w = (1 - left - right) / m
    cell_h = tile / height
    bottom = 0.12 / height
    artists = []
    for row in range(2):
        y = bottom + (1 - row) * (cell_h + 0.05 / height)
        for j in range(m):
            ax = fig.add_axes((left + j * cell_w, y, cell_w * 0.94, cell_h))
            image = inputs[j] if row == 0 else frames[chosen[0]][j]
            show_image(ax, image)
            if row == 0:
                ax.set_title(str(classes[int(labels[j])]), fontsize=9, fontweight="bold", pad=2)
            else:
                artists.append(ax.images[0])
        fig.text(left - 0.1 / width, y + cell_h / 2, "input" if row == 0 else "reconstruction", ha="right",
                 va="center", fontsize=9)
    title = fig.suptitle("", fontsize=10, y=0.97)

    def update(k: int):
        i = chosen[k]
        for j, artist in enumerate(artists):
            artist.set_data(frames[i][j])
        over = f" (MSE over {mse_images} test images)" if mse_images else ""
        title.set_text(f"Reconstructions during training{over}\n" + " · ".join(
            _frame_label(int(steps[i]), epochs[i], mses[i])))
        return [*artists, title]

    update(0)
    return FuncAnimation(fig, update, frames=len(chosen), interval=interval_ms, blit=False, repeat=True)


def latent_figure(latent: np.ndarray, labels: np.ndarray, classes: Sequence[str], *, layer: str = "latent",
                  variational: bool = False, colors: np.ndarray | None = None) -> Figure:
    """The 2-D code itself (no PCA / t-SNE / UMAP), coloured by class, class names at the class
    medians; for a VAE, dashed circles at 1 and 2 standard deviations of the N(0, I) prior."""
    z = np.asarray(latent, dtype=float)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"expected a 2-D code (n, 2), got shape {z.shape}")
    labels = np.asarray(labels)
    colors = class_colors(len(classes)) if colors is None else colors
    fig = new_figure(7.6, 6.4)
    ax = fig.add_subplot()
    draw_classes(ax, z, labels, colors, size=marker_size(len(z), 5.5))
    if variational:
        for r in (1, 2):
            ax.add_patch(Circle((0, 0), r, fill=False, linestyle="--", linewidth=1, edgecolor="0.35",
                                zorder=3, gid="prior-circle"))
            ax.text(r * 0.7071, r * 0.7071, f"{r}σ", fontsize=8, color="0.3", ha="left", va="bottom", zorder=3)
    label_centroids(ax, z, labels, classes, colors, fontsize=11)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(f"{layer} unit 0 (z1)")
    ax.set_ylabel(f"{layer} unit 1 (z2)")
    what = "the encoder's mean μ" if variational else "the code"
    prior = "; dashed: 1σ and 2σ of the N(0, I) prior" if variational else ""
    ax.set_title(f"2-D latent space: layer {layer} ({what}) of {len(z)} test images,\n"
                 f"drawn as it is, no reduction{prior}", fontsize=11)
    class_legend(ax, classes, colors)
    return fig


def mosaic(images: np.ndarray) -> np.ndarray:
    """(rows, cols, C, H, W) pixels -> one float image (rows*H, cols*W) or (rows*H, cols*W, 3)."""
    g = np.asarray(images, dtype=np.float64)
    if g.ndim != 5:
        raise ValueError(f"expected a grid of images (rows, cols, C, H, W), got {g.shape}")
    r, c, ch, h, w = g.shape
    tiled = g.transpose(0, 3, 1, 4, 2).reshape(r * h, c * w, ch)         # (rows*H, cols*W, C)
    if ch == 1:
        return tiled[:, :, 0]
    if ch == 3:
        return tiled
    return tiled.mean(axis=2)


def _tick_positions(n: int, max_ticks: int = 8) -> np.ndarray:
    step = max(1, int(np.ceil(n / max_ticks)))
    return np.arange(0, n, step)


def manifold_figure(grid: np.ndarray, xs: np.ndarray, ys: np.ndarray, *, dims: Sequence[int] = (0, 1),
                    latents: np.ndarray | None = None, labels: np.ndarray | None = None,
                    classes: Sequence[str] | None = None, variational: bool = False,
                    colors: np.ndarray | None = None, layer: str = "latent") -> Figure:
    """Left: the decoder's output at every point of an n x n grid of the 2-D code (``grid``
    (n, n, C, H, W) pixels in [0, 1], ``grid[i, j]`` decoded at x = ``xs[j]``, y = ``ys[i]``;
    :func:`pipeline.models.autoencoders.decode_grid`), ticks in latent units. Right (when
    ``latents`` (N, D) are given): the test images' codes, lightly, with the grid points (+)
    and the area the grid covers (box), on the same axes units."""
    g = np.asarray(grid)
    n_rows, n_cols, ch, h, w = g.shape
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    beside = latents is not None
    fig = new_figure(13.5 if beside else 7.6, 7.0)
    if beside:
        axes = fig.subplots(1, 2, width_ratios=[1.0, 1.0])
        ax, scatter_ax = axes
    else:
        ax, scatter_ax = fig.add_subplot(), None
    picture = mosaic(g)
    if picture.ndim == 2:
        ax.imshow(picture, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(picture, 0, 1), interpolation="nearest")
    for k in range(1, n_cols):
        ax.axvline(k * w - 0.5, color="0.85", linewidth=0.4)
    for k in range(1, n_rows):
        ax.axhline(k * h - 0.5, color="0.85", linewidth=0.4)
    cols = _tick_positions(n_cols)
    rows = _tick_positions(n_rows)
    ax.set_xticks(cols * w + (w - 1) / 2, [f"{xs[j]:.2f}" for j in cols], fontsize=8)
    ax.set_yticks(rows * h + (h - 1) / 2, [f"{ys[i]:.2f}" for i in rows], fontsize=8)
    xname, yname = f"z{int(dims[0]) + 1}", f"z{int(dims[1]) + 1}"
    ax.set_xlabel(f"{xname} ({layer} unit {int(dims[0])})")
    ax.set_ylabel(f"{yname} ({layer} unit {int(dims[1])})")
    span = ("the N(0, 1) prior's 5%..95% quantiles" if variational
            else "the test codes' 1%..99% range")
    ax.set_title(f"Decoder output on a {n_rows}x{n_cols} grid of the code\n(over {span})", fontsize=11)
    if scatter_ax is not None:
        z = np.asarray(latents, dtype=float)[:, [int(dims[0]), int(dims[1])]]
        labels = np.zeros(len(z), dtype=int) if labels is None else np.asarray(labels)
        classes = classes if classes is not None else [str(k) for k in range(int(labels.max()) + 1)]
        colors = class_colors(len(classes)) if colors is None else colors
        draw_classes(scatter_ax, z, labels, colors, size=marker_size(len(z), 6.0), alpha=0.35)
        gx, gy = np.meshgrid(xs, ys)
        scatter_ax.scatter(gx.ravel(), gy.ravel(), marker="+", s=18, color="0.15", linewidths=0.7, zorder=4,
                           gid="grid-points")
        scatter_ax.add_patch(Rectangle((xs.min(), ys.min()), xs.max() - xs.min(), ys.max() - ys.min(),
                                       fill=False, edgecolor="0.15", linewidth=1.2, linestyle="--", zorder=4))
        label_centroids(scatter_ax, z, labels, classes, colors, fontsize=10)
        scatter_ax.set_xlabel(xname)
        scatter_ax.set_ylabel(yname)
        scatter_ax.set_aspect("equal", adjustable="datalim")
        scatter_ax.set_title(f"Where the {len(z)} test images' codes lie\n"
                             f"(+ = decoded grid points, dashed box = the grid's extent)", fontsize=11)
        class_legend(scatter_ax, classes, colors, fontsize=8)
    fig.suptitle("Latent manifold: what the decoder draws across the 2-D code", fontsize=12)
    return fig


def pixel_stats(images: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel, per-channel mean and standard deviation (population) of uint8 ``images``
    (N, C, H, W), in [0, 1] units: two float64 (C, H, W). Chunked float64 sums, so a memory-mapped
    50,000-image split is never copied as a whole."""
    x = np.asarray(images) if not isinstance(images, np.memmap) else images
    if x.ndim != 4 or not len(x):
        raise ValueError(f"expected a non-empty (N, C, H, W) image array, got shape {x.shape}")
    total = np.zeros(x.shape[1:], dtype=np.float64)
    for start in range(0, len(x), chunk):
        total += np.asarray(x[start:start + chunk], dtype=np.float64).sum(axis=0)
    mean = total / len(x)
    sq = np.zeros_like(mean)
    for start in range(0, len(x), chunk):
        d = np.asarray(x[start:start + chunk], dtype=np.float64) - mean
        sq += (d * d).sum(axis=0)
    std = np.sqrt(sq / len(x))
    return mean / 255.0, std / 255.0


def mean_std_figure(mean: np.ndarray, std: np.ndarray, *, dataset: str, n_images: int,
                    channel_names: Sequence[str] | None = None) -> Figure:
    """The dataset's average image and its per-pixel standard deviation (in [0, 1] pixel units).
    Grey: two heatmaps with colour bars. Colour: a row each for mean and std: the RGB
    composite (std brightened to its maximum), then every channel as its own heatmap, on one
    range per row (the mean row spans min..max of the values, so a faint structure shows)."""
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    if mean.shape != std.shape or mean.ndim != 3:
        raise ValueError(f"expected mean and std of one shape (C, H, W), got {mean.shape} and {std.shape}")
    c = mean.shape[0]
    rgb = c == 3
    names = list(channel_names) if channel_names else (["red", "green", "blue"] if rgb else
                                                       [f"channel {i}" for i in range(c)])
    if not rgb:
        cols = c
        fig = new_figure(4.1 * 2 * cols + 0.6, 4.6)
        axes = fig.subplots(1, 2 * cols, squeeze=False)[0]
        for i in range(c):
            for k, (what, values, cmap) in enumerate((("mean", mean[i], "gray_r"), ("std", std[i], "magma"))):
                ax = axes[2 * i + k]
                top = max(float(values.max()), 1e-6)                   # the structure, not the 0..1 range
                image = ax.imshow(values, cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                chan = f" ({names[i]})" if c > 1 else ""
                ax.set_title(f"{what}{chan}\naverage {values.mean():.3f}, max {values.max():.3f}", fontsize=10)
                fig.colorbar(image, ax=ax, shrink=0.8, label="pixel value (0..1)" if what == "mean"
                             else "std of the pixel (0..1 units)")
    else:
        fig = new_figure(4 * 3.1 + 1.0, 2 * 3.1 + 1.0)
        axes = fig.subplots(2, 4)
        for r, (what, values) in enumerate((("mean", mean), ("std", std))):
            composite = np.transpose(values, (1, 2, 0))
            scale = 1.0 if what == "mean" else max(float(values.max()), 1e-6)
            ax = axes[r, 0]
            ax.imshow(np.clip(composite / scale, 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{what} (RGB)" + ("" if what == "mean" else f"\nx{1 / scale:.2g} to fill the range"),
                         fontsize=10)
            cmaps = ("Reds", "Greens", "Blues")
            # one range per row, shared by the channels (comparable), spanning their values (structure visible)
            lo = float(values.min()) if what == "mean" else 0.0
            hi = max(float(values.max()), lo + 1e-6)
            for i in range(3):
                ax = axes[r, i + 1]
                image = ax.imshow(values[i], cmap=cmaps[i], vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{what}, {names[i]}\naverage {values[i].mean():.3f}", fontsize=10)
                cb = fig.colorbar(image, ax=ax, shrink=0.8)
                cb.ax.tick_params(labelsize=7)
    fig.suptitle(f"{dataset}: per-pixel mean and standard deviation of the {n_images} training images "
                 f"([0, 1] pixel units)", fontsize=11)
    return fig
