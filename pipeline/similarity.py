"""Representation similarity: linear CKA (Kornblith et al. 2019, "Similarity of Neural Network
Representations Revisited") between layers of one or two networks seen on the same inputs.

For activations X (n, d1) and Y (n, d2) of the same n inputs, with centred columns,

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)
              = <K, L>_F / (||K||_F ||L||_F),   K = X X^T, L = Y Y^T   (centred Gram matrices)

It is 1 for the same representation, invariant to orthogonal transforms and isotropic scaling
of either side (not to arbitrary invertible maps), symmetric, in [0, 1], and needs no matching
between the units of the two layers, so layers of different widths and networks of different
architectures compare directly. Everything is computed in float64.

Cost: the feature form is O(n d1 d2) per pair, the Gram form O(n^2 (d1 + d2)) per layer and then
O(n^2) per pair. With n ~ 1,000 points and layers up to ~5,000 wide the Gram form wins by far
when all pairs are wanted, so :func:`cka_matrix` uses it; :func:`linear_cka` picks whichever
form is cheaper for its one pair.

A layer with no variance over the inputs (e.g. a dead ReLU layer) or with non-finite values has
no defined CKA: NaN.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["center", "normalized_gram", "linear_cka", "cka_matrix", "best_matches"]

# Gram matrices kept in memory at once by cka_matrix (float64 n x n each); more layers than fit
# are handled in chunks, recomputing the other side's Grams once per chunk.
GRAM_BUDGET_BYTES = 512 * 2**20


def _as_2d(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{what}: expected an (n, d) array of n samples, got shape {x.shape}")
    return x.reshape(len(x), -1)


def center(x: np.ndarray) -> np.ndarray:
    """(n, d) -> float64 copy with each column's mean removed."""
    x = np.array(_as_2d(x, "x"), dtype=np.float64)
    x -= x.mean(axis=0, keepdims=True)
    return x


def _centred_or_none(x: np.ndarray, what: str) -> np.ndarray | None:
    """Centred float64 (n, d), or None when CKA is undefined for it: NaN/inf, or no variance.
    "No variance" is relative: what centring leaves of a constant layer is rounding noise
    (~1e-16 of its values), so a spread below 1e-10 of the values' size counts as none."""
    raw = np.array(_as_2d(x, what), dtype=np.float64)
    if not np.isfinite(raw).all():
        return None
    size = float(np.einsum("ij,ij->", raw, raw))
    raw -= raw.mean(axis=0, keepdims=True)
    spread = float(np.einsum("ij,ij->", raw, raw))
    if size == 0.0 or spread <= 1e-20 * size:
        return None
    return raw


def normalized_gram(x: np.ndarray) -> np.ndarray | None:
    """(n, d) -> (n, n) centred Gram matrix Xc Xc^T scaled to unit Frobenius norm (float64), or
    None when it is undefined (no variance, or NaN/inf in ``x``). Then
    CKA(X, Y) = sum(normalized_gram(X) * normalized_gram(Y))."""
    xc = _centred_or_none(x, "x")
    if xc is None:
        return None
    gram = xc @ xc.T                          # (n, n); numpy uses a symmetric rank-k update here
    norm = np.linalg.norm(gram)
    gram /= norm
    return gram


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations of the same n inputs: x (n, d1), y (n, d2). NaN if undefined."""
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y must hold the same samples: {len(x)} rows vs {len(y)} rows")
    n, d1, d2 = len(x), x.shape[1], y.shape[1]
    xc, yc = _centred_or_none(x, "x"), _centred_or_none(y, "y")
    if xc is None or yc is None:
        return float("nan")
    feature_cost = n * (d1 * d2 + d1 * d1 + d2 * d2)
    gram_cost = n * n * (d1 + d2)
    if feature_cost <= gram_cost:
        cross = np.linalg.norm(yc.T @ xc) ** 2                    # (d2, d1)
        nx, ny = np.linalg.norm(xc.T @ xc), np.linalg.norm(yc.T @ yc)
    else:
        k, l = xc @ xc.T, yc @ yc.T                               # (n, n) each
        cross = float(np.einsum("ij,ij->", k, l))
        nx, ny = np.linalg.norm(k), np.linalg.norm(l)
    return float(np.clip(cross / (nx * ny), 0.0, 1.0))


def cka_matrix(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], *,
               budget_bytes: int = GRAM_BUDGET_BYTES,
               on_layer: Callable[[], None] | None = None) -> np.ndarray:
    """(len(xs), len(ys)) linear CKA between every x in ``xs`` and every y in ``ys``.

    All arrays must have the same rows (samples); widths may differ. Each layer's normalised
    Gram matrix is computed once per chunk of ``ys`` that fits ``budget_bytes``; each pair then
    costs one n^2 dot product. ``on_layer`` is called after each Gram matrix (progress bars).
    Undefined entries (constant or non-finite layers) are NaN.
    """
    xs, ys = list(xs), list(ys)
    if not xs or not ys:
        return np.zeros((len(xs), len(ys)))
    n = len(xs[0])
    for i, a in enumerate([*xs, *ys]):
        if len(a) != n:
            raise ValueError(f"every representation must hold the same {n} samples; array {i} has {len(a)} rows")
    tick = on_layer or (lambda: None)
    per_gram = max(1, n * n * 8)
    chunk = max(1, int(budget_bytes // per_gram) - 1)          # one slot for the x Gram being used
    out = np.full((len(xs), len(ys)), np.nan)
    for start in range(0, len(ys), chunk):
        grams_y = []
        for y in ys[start:start + chunk]:
            grams_y.append(normalized_gram(y))
            tick()
        for i, x in enumerate(xs):
            gx = normalized_gram(x)
            tick()
            if gx is None:
                continue
            flat = gx.ravel()
            for j, gy in enumerate(grams_y):
                if gy is not None:
                    out[i, start + j] = np.dot(flat, gy.ravel())
    return np.clip(out, 0.0, 1.0)


def best_matches(matrix: np.ndarray) -> np.ndarray:
    """Column index of the largest finite value in each row (-1 for an all-NaN row)."""
    matrix = np.asarray(matrix, dtype=float)
    filled = np.where(np.isfinite(matrix), matrix, -np.inf)
    best = filled.argmax(axis=1) if matrix.shape[1] else np.full(len(matrix), -1)
    return np.where(np.isfinite(filled.max(axis=1, initial=-np.inf)), best, -1)
