"""Redundant filters of a conv layer: by their weights and by what they respond to.

Two filters are *near-duplicates* when they compute (almost) the same thing. Two measures, each
an (F, F) matrix of correlations:

- :func:`filter_correlations`: Pearson correlation of the flattened weights (F, C*kh*kw). Cheap,
  needs no data, but blind to a filter that is a copy of another moved by a pixel: the weights
  then line up with different pixels and correlate weakly, although the maps are the same shifted.
- :func:`activation_correlations`: correlation of the channels' output maps on real images (the
  conv layer's own output, (n, F, H, W), less each channel's mean map), maximised over spatial shifts of up to ``max_shift``
  pixels in each direction. A shifted duplicate gives the same map shifted, so it correlates
  near 1 at the right shift; two filters that merely respond to the same blobs do not.

The sign is kept (a sign-flipped copy is as redundant as a copy: compare ``|r|``). A channel that
is constant on every image correlates 0 with everything (and 1 with itself).

:func:`redundancy_summary` turns either or both into per-layer numbers for the metrics: the share
of filters that have a near-duplicate partner (``|r| >= threshold``), the pair counts, and the mean
over filters of the largest ``|r|`` with any other filter (grows smoothly with the filter count,
so a ``model.filters`` sweep shows it even below the threshold).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["filter_correlations", "redundant_pairs", "activation_correlations", "redundancy_summary",
           "MAX_IMAGES"]

MAX_IMAGES = 500               # images (evenly spaced) the activation correlation reads at most


def _unit_rows(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows centred and scaled to unit length, and a mask of the rows that were constant."""
    centred = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    constant = ~(norms > 1e-12 * max(1.0, float(np.abs(flat).max()) if flat.size else 1.0))
    return centred / np.where(constant, 1.0, norms)[:, None], constant


def _finish(corr: np.ndarray, constant_rows: np.ndarray, constant_cols: np.ndarray) -> np.ndarray:
    corr = np.clip(corr, -1.0, 1.0)
    corr[constant_rows] = 0.0
    corr[:, constant_cols] = 0.0
    return corr


def filter_correlations(weights: np.ndarray) -> np.ndarray:
    """(F, F) Pearson correlation of the flattened filters (or dense units); a constant filter
    correlates 0 with everything (and 1 with itself)."""
    flat = np.asarray(weights, dtype=float).reshape(len(weights), -1)
    unit, constant = _unit_rows(flat)
    corr = _finish(unit @ unit.T, constant, constant)
    np.fill_diagonal(corr, 1.0)
    return corr


def redundant_pairs(corr: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, r)`` with ``i < j`` and ``|r| >= threshold``: near-duplicate (or sign-flipped) filters."""
    corr = np.asarray(corr)
    i, j = np.triu_indices(len(corr), k=1)
    keep = np.abs(corr[i, j]) >= threshold
    return [(int(a), int(b), float(corr[a, b])) for a, b in zip(i[keep], j[keep])]


def _spread(n: int, cap: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(0, n - 1, min(n, cap))).astype(np.int64)) if n else np.zeros(0, np.int64)


def activation_correlations(maps: np.ndarray, shape: tuple[int, int, int] | None = None, *, max_shift: int = 1,
                            max_images: int = MAX_IMAGES) -> np.ndarray:
    """(F, F) correlation of every pair of channels' maps over images and positions, the largest
    in absolute value over shifts (dy, dx) in ``[-max_shift, max_shift]^2`` (sign kept; the
    result is symmetric, diagonal 1). Each channel's mean map over the images is subtracted
    first, so what every filter sees alike (where the digits usually are) does not count as
    similarity; a shifted copy stays an exact shifted copy after that.

    ``maps`` is (n, F, H, W), or (n, F*H*W) as extract stores it with ``shape`` = (F, H, W); it
    may be a memory map (at most ``max_images`` evenly spaced rows are read). A shift compares
    channel i at (y, x) with channel j at (y + dy, x + dx) where both lie inside the map."""
    maps = np.asarray(maps) if shape is None else maps
    n = len(maps)
    rows = _spread(n, max_images)
    a = np.asarray(maps[rows], dtype=np.float64)
    if shape is not None:
        a = a.reshape(len(rows), *shape)
    if a.ndim != 4:
        raise ValueError(f"expected maps (n, F, H, W) or (n, F*H*W) with shape=(F, H, W), got {a.shape}")
    _, f, h, w = a.shape
    a = a - a.mean(axis=0, keepdims=True)          # the mean map over images: the layout all filters share
    s = max(0, min(int(max_shift), h - 1, w - 1))
    best = np.zeros((f, f))
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            src = a[:, :, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]     # channel i at (y, x)
            dst = a[:, :, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]     # channel j at (y+dy, x+dx)
            x_unit, x_const = _unit_rows(np.moveaxis(src, 1, 0).reshape(f, -1))
            y_unit, y_const = _unit_rows(np.moveaxis(dst, 1, 0).reshape(f, -1))
            corr = _finish(x_unit @ y_unit.T, x_const, y_const)
            best = np.where(np.abs(corr) > np.abs(best), corr, best)
    sym = np.where(np.abs(best) >= np.abs(best.T), best, best.T)          # (i, j) and (j, i): the stronger
    np.fill_diagonal(sym, 1.0)
    return sym


def _offdiag_max(corr: np.ndarray) -> np.ndarray:
    off = np.abs(np.asarray(corr, dtype=float)).copy()
    np.fill_diagonal(off, 0.0)
    return off.max(axis=1) if len(off) > 1 else np.zeros(len(off))


def redundancy_summary(threshold: float, weight_corr: Optional[np.ndarray] = None,
                       activation_corr: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Per-layer numbers for the metrics file: ``filters``; per measure given (``weight_`` /
    ``activation_``) the near-duplicate ``pairs`` and ``mean_max_correlation`` (mean over filters
    of the largest |r| with another filter); and ``redundant_fraction``: the share of filters with
    at least one partner at ``|r| >= threshold`` by either measure."""
    given = {k: v for k, v in (("weight", weight_corr), ("activation", activation_corr)) if v is not None}
    if not given:
        raise ValueError("give weight_corr, activation_corr or both")
    f = len(next(iter(given.values())))
    out: dict[str, Any] = {"filters": int(f)}
    partnered = np.zeros(f, dtype=bool)
    for key, corr in given.items():
        peaks = _offdiag_max(corr)
        out[f"{key}_pairs"] = len(redundant_pairs(corr, threshold))
        out[f"{key}_mean_max_correlation"] = round(float(peaks.mean()), 6) if f > 1 else None
        partnered |= peaks >= threshold
    out["redundant_fraction"] = round(float(partnered.mean()), 6) if f else None
    return out
