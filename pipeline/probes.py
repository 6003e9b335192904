"""Linear probes: how linearly decodable is the class from a layer's activations?

Plain functions, arrays in, numbers out. For a layer ``x`` (n, dim): a seeded, stratified split
(:func:`split`), features standardised on the training part, layers wider than ``max_dims``
projected on the training part's principal axes (:func:`principal_axes`) to
``min(max_dims, n_train)`` dimensions, then a multinomial logistic regression. With
``n_train <= max_dims`` the projection loses nothing the probe could use: an L2-penalised linear
model's weights lie in the span of its training points.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["linear_probe", "split", "principal_axes"]


def split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) indices, stratified by class when every class has 2+ members."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    n_test = max(1, int(round(test_fraction * len(labels))))
    stratify = labels if counts.min() >= 2 and n_test >= len(counts) and len(labels) - n_test >= len(counts) else None
    train, test = train_test_split(np.arange(len(labels)), test_size=n_test, stratify=stratify, random_state=seed)
    return np.sort(train), np.sort(test)


def principal_axes(x_train: np.ndarray, x_test: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Both parts (n, dim) projected on the first ``k`` principal axes of the centred training part.

    ``k`` at least the training points (a wide layer, a few hundred points): those axes span
    the centred training rows, and an L2-penalised linear model gives the same predictions in
    any orthonormal basis of that span, so the basis comes from the (n, n) Gram matrix instead
    of an SVD of the (n, dim) matrix -- 0.2 s instead of 1.3 s for 700 x 4,704 on one core.
    Directions without training variance are zero columns, so the result still has ``k``
    columns. Fewer axes than points: scikit-learn's PCA.
    """
    n = len(x_train)
    if k < n:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=k, random_state=seed).fit(x_train)
        return pca.transform(x_train), pca.transform(x_test)
    mean = x_train.mean(axis=0)
    centred = x_train - mean                                 # (n, dim)
    values, vectors = np.linalg.eigh(centred @ centred.T)    # (n,), (n, n) ascending
    keep = np.flatnonzero(values > max(float(values[-1]), 0.0) * 1e-12)[::-1]    # largest first
    axes = centred.T @ (vectors[:, keep] / np.sqrt(values[keep]))            # (dim, r) orthonormal
    out_train, out_test = np.zeros((n, k)), np.zeros((len(x_test), k))
    out_train[:, :len(keep)] = centred @ axes
    out_test[:, :len(keep)] = (x_test - mean) @ axes
    return out_train, out_test


def linear_probe(x: np.ndarray, labels: np.ndarray, *, test_fraction: float = 0.3, C: float = 1.0,
                 max_iter: int = 300, max_dims: int = 1024, seed: int = 0) -> dict[str, Any]:
    """Held-out accuracy of a logistic-regression probe on ``x`` (n, dim): a seeded, stratified
    ``test_fraction`` held out, standardised on the rest, PCA-reduced to ``min(max_dims, n_train)``
    when wider than ``max_dims``, then a multinomial logistic regression (``C``, ``max_iter``).
    The defaults are those of params.yaml's ``probe`` section.

    Returns ``{"accuracy", "dims", "converged"}``, or ``{"skipped": reason}`` when the layer
    holds NaN/inf or the training part has a single class.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    if not np.isfinite(x).all():
        return {"skipped": f"{int((~np.isfinite(x)).sum())} of {x.size} activation values are NaN or infinite"}
    train, test = split(labels, test_fraction, seed)
    if len(np.unique(labels[train])) < 2:
        return {"skipped": "the training part holds a single class; use more samples (extract.n_samples)"}
    scaler = StandardScaler().fit(x[train])                  # zero-variance features keep scale 1
    x_train, x_test = scaler.transform(x[train]), scaler.transform(x[test])
    if x.shape[1] > max_dims:
        x_train, x_test = principal_axes(x_train, x_test, min(max_dims, len(train)), seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
        clf.fit(x_train, labels[train])
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    accuracy = float((clf.predict(x_test) == labels[test]).mean())
    return {"accuracy": round(accuracy, 6), "dims": int(x_train.shape[1]), "converged": converged}
