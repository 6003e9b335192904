"""How good is a 2-D/3-D map? Numbers that compare layers, methods and model variants.

Pure functions, arrays in, floats out. Every metric clamps its neighbourhood size to what the
number of points allows and returns ``None`` when it is undefined (one class only, too few
points), so a stage can write ``{metric: value}`` and leave out the undefined ones.

- :func:`trustworthiness`: are the map's nearest neighbours also neighbours in the input?
  ``sklearn.manifold.trustworthiness`` is O(n^2) in time and memory (full distance matrices),
  fine up to ~10k points. The reduce stage passes the PCA-``reduce.pca_dims`` features the
  method saw as the reference space (the same space t-SNE and UMAP are fitted on), not the raw
  layer: far cheaper for wide conv layers, and it measures the method, not the PCA step.
- :func:`knn_accuracy`: k-nearest-neighbour classification accuracy, stratified k-fold CV.
  On the map it says how well classes separate in 2-D; on the layer's own features
  (``knn_accuracy_full``) it says how well they separate in the layer itself.
- :func:`silhouette`: mean silhouette of the true classes in the map (-1..1).
- :func:`explained_variance`: share of the variance the first components keep (PCA).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

__all__ = ["trustworthiness", "knn_accuracy", "silhouette", "explained_variance", "map_metrics"]


def trustworthiness(reference: np.ndarray, coords: np.ndarray, k: int = 10) -> Optional[float]:
    """Trustworthiness (Venna & Kaski) of ``coords`` (n, d) against ``reference`` (n, D), 0..1.

    1.0 means every map neighbour among the ``k`` nearest is a true neighbour in ``reference``.
    ``k`` is clamped to ``ceil(n / 2) - 1`` (scikit-learn's limit). O(n^2) memory and time;
    callers pass a PCA-reduced reference so D stays small (see the module docstring).
    """
    from sklearn.manifold import trustworthiness as _trust

    n = len(coords)
    k = min(int(k), math.ceil(n / 2) - 1)
    if k < 1:
        return None
    return float(_trust(np.asarray(reference, dtype=np.float64), np.asarray(coords, dtype=np.float64),
                        n_neighbors=k))


def _folds(labels: np.ndarray, folds: int, seed: int):
    """Stratified folds when every class has at least 2 members, else plain shuffled folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    _, counts = np.unique(labels, return_counts=True)
    smallest = int(counts.min())
    if smallest >= 2:
        return StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    return KFold(n_splits=min(folds, len(labels)), shuffle=True, random_state=seed)


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 10, folds: int = 5,
                 seed: int = 0) -> Optional[float]:
    """Mean accuracy of a k-nearest-neighbour classifier on ``features`` (n, d), k-fold CV.

    Stratified ``folds``-fold cross-validation (fewer folds if a class is smaller than that),
    ``k`` clamped to the size of the smallest training fold. ``None`` with fewer than two
    classes or fewer than four points.
    """
    from sklearn.neighbors import KNeighborsClassifier

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(labels)
    if n < 4 or len(np.unique(labels)) < 2:
        return None
    splitter = _folds(labels, folds, seed)
    correct = 0
    for train, test in splitter.split(features, labels):
        clf = KNeighborsClassifier(n_neighbors=max(1, min(int(k), len(train))), algorithm="auto")
        clf.fit(features[train], labels[train])
        correct += int((clf.predict(features[test]) == labels[test]).sum())
    return correct / n


def silhouette(coords: np.ndarray, labels: np.ndarray, seed: int = 0,
               max_points: int = 10_000) -> Optional[float]:
    """Mean silhouette coefficient of the true classes in ``coords``; ``None`` if undefined.

    Above ``max_points`` a seeded sample is scored (the score is O(n^2)).
    """
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels > len(labels) - 1:
        return None
    sample = max_points if len(labels) > max_points else None
    return float(silhouette_score(np.asarray(coords, dtype=np.float64), labels, sample_size=sample,
                                  random_state=seed))


def explained_variance(ratios: np.ndarray, n_components: int) -> float:
    """Share of the total variance in the first ``n_components`` principal components."""
    return float(np.sum(np.asarray(ratios)[:n_components]))


def map_metrics(reference: np.ndarray, coords: np.ndarray, labels: np.ndarray, *, k: int = 10,
                seed: int = 0) -> dict[str, float]:
    """Trustworthiness, kNN accuracy and silhouette of one map; undefined metrics left out."""
    values = {
        "trustworthiness": trustworthiness(reference, coords, k),
        "knn_accuracy": knn_accuracy(coords, labels, k, seed=seed),
        "silhouette": silhouette(coords, labels, seed=seed),
    }
    return {key: round(value, 6) for key, value in values.items() if value is not None}
