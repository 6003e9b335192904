"""One layer's maps and their quality numbers, as a job that can run in any process.

The reduce stage maps every layer with one method; the layers are independent, so it hands
them to worker processes (:func:`pipeline.runtime.run_jobs`). A :class:`LayerJob` holds plain
data only: where the layer's activations are on disk (read in the process that maps them, so
no array is pickled), the labels, the method's options and the snapshot frames to map from this
layer's final map. :func:`map_layer` returns a :class:`LayerMaps`: coordinates and numbers, no
files. The stage writes every output, in layer order, so what it writes does not depend on which
process mapped which layer or in what order they finished.

A job's fits run on ``threads`` threads (t-SNE's ``n_jobs``; BLAS and numba follow the process,
one thread in a worker): the stage gives every job of a multi-layer run one thread, in a worker
or in its own process, so the maps are the same for any number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pipeline.quality import explained_variance, knn_accuracy, map_metrics
from pipeline.reducers import Embedding, SkipLayer, embed, embed_frames, prepare

__all__ = ["LayerJob", "LayerMaps", "Frame", "map_layer", "layer_metrics"]


@dataclass(frozen=True)
class LayerJob:
    """Map layer ``name`` (activations in ``path``, ``len(labels)`` rows) with ``method``.

    ``options``: the method's hyperparameters (the keys of ``reduce.<method>``); ``frames``:
    ``(snapshot layer, ((step, path), ...))`` for each snapshot layer whose frames start from
    this job's final map (this layer, or a layer with the same activations), steps in training
    order. ``path`` None: only the frames (a snapshot layer that was not extracted for the
    final model; its frames start from scratch)."""

    name: str
    path: Optional[Path]
    labels: np.ndarray
    method: str
    options: dict[str, Any]
    seed: int = 0
    pca_dims: int = 50
    sphereize: bool = False
    knn_k: int = 10
    frames: tuple[tuple[str, tuple[tuple[int, Path], ...]], ...] = ()
    threads: Optional[int] = None


@dataclass
class Frame:
    """One snapshot frame: its map, or why it has none."""

    step: int
    coords: Optional[np.ndarray] = None
    skipped: Optional[str] = None
    knn_accuracy: Optional[float] = None


@dataclass
class LayerMaps:
    """What :func:`map_layer` found for a job: the final map (``coords``) or ``skipped`` with the
    reason, the map's ``metrics`` (:func:`layer_metrics`), the parameters the backend used
    (``info``, with ``notes`` and ``seconds``), and each snapshot layer's frames."""

    name: str
    coords: Optional[np.ndarray] = None
    skipped: Optional[str] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    frames: dict[str, list[Frame]] = field(default_factory=dict)


def layer_metrics(x: np.ndarray, emb: Embedding, labels: np.ndarray, method: str, *, knn_k: int, seed: int,
                  n_components: int, sphereize: bool) -> dict[str, Any]:
    """Quality numbers of one layer's map (see :mod:`pipeline.quality`).

    ``trustworthiness`` is measured against the PCA-``reduce.pca_dims`` features the method
    saw. The kNN accuracy in the layer's own space is the same for every method: the probe
    stage computes it once (``metrics/probes.json``). PCA maps also give the variance their
    ``n_components`` axes explain, with and without ``sphereize``.
    """
    assert emb.features is not None
    out: dict[str, Any] = map_metrics(emb.features.pcs, emb.coords, labels, k=knn_k, seed=seed)
    if method == "pca":
        d = n_components
        shown = round(explained_variance(emb.features.ratios, d), 6)      # of what the map shows
        try:                                                               # the same layer the other way
            other = round(explained_variance(prepare(x, d, seed, sphereize=not sphereize).ratios, d), 6)
        except SkipLayer:
            other = None
        out["explained_variance"] = shown
        out["explained_variance_plain"] = other if sphereize else shown
        out["explained_variance_sphereized"] = shown if sphereize else other
    if emb.info.get("notes"):
        out["clamped"] = "; ".join(emb.info["notes"])
    return out


def _load(path: Path, n: int) -> np.ndarray:
    from pipeline import artifacts

    return artifacts.load_rows(path, n)


def map_layer(job: LayerJob) -> LayerMaps:
    """The final map of ``job``'s layer, its metrics, then its snapshot frames (mapped backwards
    from the final map: :func:`pipeline.reducers.embed_frames`). A layer that cannot be mapped
    is ``skipped`` (its frames then start from scratch)."""
    n = len(job.labels)
    common = dict(seed=job.seed, pca_dims=job.pca_dims, sphereize=job.sphereize, threads=job.threads)
    out = LayerMaps(job.name)
    x = None if job.path is None else _load(job.path, n)
    try:
        if x is None:
            raise SkipLayer("not extracted for the final model")
        emb = embed(x, job.method, **common, **job.options)
    except SkipLayer as exc:
        out.skipped = str(exc)
    else:
        out.coords = emb.coords
        out.info = dict(emb.info)
        out.metrics = layer_metrics(x, emb, job.labels, job.method, knn_k=job.knn_k, seed=job.seed,
                                    n_components=job.options.get("n_components", 2), sphereize=job.sphereize)
    start = None if out.coords is None else (x, out.coords)
    for layer, steps in job.frames:
        backwards = steps[::-1]
        arrays = (_load(path, n) for _, path in backwards)                 # lazily, one at a time
        results = embed_frames(arrays, job.method, start=start, **common, **job.options)
        frames = []
        for (step, _), result in zip(steps, results[::-1]):
            if isinstance(result, SkipLayer):
                frames.append(Frame(int(step), skipped=str(result)))
                continue
            acc = knn_accuracy(result.coords, job.labels, job.knn_k, seed=job.seed)
            frames.append(Frame(int(step), coords=result.coords, knn_accuracy=None if acc is None else round(acc, 6)))
        out.frames[layer] = frames
    return out
