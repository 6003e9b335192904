"""PCA, t-SNE and UMAP behind one function, with the input checks that keep them from failing.

:func:`embed` ``(x, method, *, seed, pca_dims=50, layout=None, **options) -> Embedding`` maps the
activations of one layer, ``x`` of shape (n, dim), to ``coords`` of shape (n, 2 or 3); ``options``
are the method's hyperparameters as plain keywords (``perplexity=30``, ``n_neighbors=15``, ...). Every method sees the
same prepared input (:func:`prepare`):

1. checked: NaN/inf values, a constant ("dead") layer or fewer than :data:`MIN_POINTS` points
   raise :class:`SkipLayer` with the reason -- the caller records it and goes on;
2. centred, and divided by the largest absolute value (a unit-free scale, so float32 layers
   with huge or tiny values behave alike). Features are *not* standardised one by one: that
   would blow near-dead units (noise) up to the weight of informative ones. With
   ``reduce.sphereize`` every point is then scaled to unit length (TensorBoard's "Spherize
   data", :func:`sphereize`): only its direction from the centroid counts;
3. rotated onto its principal components, keeping ``min(reduce.pca_dims, n, dim)`` of them.
   t-SNE and (Euclidean) UMAP are fitted on these, as is usual (denoises, and makes the
   neighbour search cheap for 4,704-wide conv maps); PCA takes the first 2 or 3.

Hyperparameters are the keys of the ``reduce.<method>`` params section, with the same defaults
and ranges (:mod:`pipeline.config` is their one home; a bad value is one ConfigError line);
combinations the backends do not support are refused by :func:`check_config` with a message
that names the key. Values the data
cannot support are clamped with a note in ``Embedding.info["notes"]``: t-SNE perplexity to
``(n - 1) / 3`` (it needs 3 x perplexity neighbours), UMAP ``n_neighbors`` to ``n - 1``.
The output is checked too: a backend that returns NaN/inf (openTSNE does, silently, on some
degenerate input) raises :class:`SkipLayer` instead of writing NaN coordinates.

Results are deterministic for a ``seed``. t-SNE runs on one thread below
:data:`THREADS_FROM` points (same map on every machine, robust when cores are shared) and on
every core above (faster; the map then depends on the core count), unless the caller passes
``threads``: the reduce stage maps the layers of a multi-layer run side by side in worker
processes with ``threads=1`` (:mod:`pipeline.mapping`), so those maps do not depend on the core
count either.

t-SNE gradient method (``reduce.tsne.method: auto``): Barnes-Hut below :data:`FFT_THRESHOLD`
(2,000) points and in 3-D (openTSNE's FFT is 2-D only), FFT from there. Measured here
(``benchmarks/tsne_sizes.py``, the layer before the output of tiled MNIST digits, 125 + 250
iterations, CPU seconds, BH / FFT): 1,000 points (one thread) 2.1 / 4.9 s; 2,000 (two threads)
13.6 / 12.3 s; 5,000: 17.0 / 15.3 s; 10,000: 31.8 / 18.5 s; kNN accuracy and trustworthiness
equal within 0.002 at every size.
The default iteration budget, 125 early-exaggeration + 250 normal iterations, was measured
against the quality metrics: on 5,000 MNIST digits (PCA-50) 250 + 500 / 125 + 250 / 75 + 150
iterations gave 2-D kNN accuracy 0.937 / 0.942 / 0.940 and trustworthiness 0.987 for all
three, so half of openTSNE's default budget loses nothing; ``benchmarks/tsne.py`` compares
the result with scikit-learn's defaults.

GPU (optional): ``reduce.tsne.backend: cuml`` / ``reduce.umap.backend: cuml`` fit with RAPIDS
cuML on an NVIDIA GPU, from the same prepared features; cuml is imported only then, and a
missing install is one :class:`ConfigError` line (:func:`check_config`). cuML's t-SNE maps to
2-D only (FFT gradients under ``method: auto``), and neither cuML method starts from a given
layout, so snapshot frames start from PCA / spectral layouts (a note says so) and are aligned
by Procrustes only; cuML's results are not bit-for-bit repeatable.

:func:`embed_frames` maps a sequence of snapshots of one layer so that frames can be compared
or animated: each frame starts from the previous frame's map (t-SNE / UMAP ``init``) and is
rotated/reflected onto it (orthogonal Procrustes, :func:`align_procrustes`; this is what aligns
PCA frames, whose axes' signs and order are otherwise arbitrary).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from pipeline.config import METHODS, PCAConfig, ReduceConfig, TSNEConfig, UMAPConfig, parse_params
from pipeline import runtime
from pipeline.errors import ConfigError

__all__ = [
    "Embedding", "Features", "SkipLayer", "sphereize", "MIN_POINTS", "FFT_THRESHOLD", "THREADS_FROM", "embed", "embed_frames",
    "prepare", "check_config", "tsne_gradient_method", "clamp_perplexity", "clamp_neighbors",
    "align_procrustes", "rescale", "fingerprint", "cuml_available", "exact_knn",
    "EXACT_KNN_MAX", "numba_cache_dir", "numba_disk_cache", "frame_options", "FRAME_TSNE_ITER", "FRAME_UMAP_EPOCHS",
]

MIN_POINTS = 5                 # fewer points than this cannot be mapped meaningfully by any method
FFT_THRESHOLD = 2_000          # t-SNE method auto: Barnes-Hut below this many points, FFT from it (measured)
THREADS_FROM = 2_000           # t-SNE runs on one thread below this many points (see _n_jobs)
EXACT_KNN_MAX = 20_000         # exact neighbours (BLAS brute force) up to this many points (see exact_knn)
CONSTANT_TOL = 1e-6            # a layer whose largest feature std is below this x max|x| is constant
_TSNE_INIT_STD = 1e-4          # openTSNE's recommended std of an initial t-SNE layout


class SkipLayer(ValueError):
    """This input cannot be embedded (non-finite, constant, too few points, backend failure).

    ``str(err)`` is the reason, one line, written to the metrics file as ``skipped``.
    """


@dataclass
class Features:
    """The prepared input every method sees (see the module docstring)."""

    pcs: np.ndarray             # (n, k) float64 principal-component scores of the centred, scaled input
    ratios: np.ndarray          # (k,) explained-variance ratio of each component (of the full input)
    scale: float                # the input was divided by this (its largest |value|)
    dim: int                    # features of the raw input
    constant_features: int      # raw features with zero variance (dead units)
    scaled: Optional[np.ndarray] = None   # (n, dim) input / scale, not centred; kept only when asked


@dataclass
class Embedding:
    coords: np.ndarray                      # (n, n_components) float32, finite
    info: dict[str, Any] = field(default_factory=dict)   # params actually used, notes, seconds
    features: Optional[Features] = None     # the prepared input the method saw


def _settings(method: str, options: dict[str, Any], pca_dims: int = 50) -> ReduceConfig:
    """The ``reduce`` section holding ``pca_dims`` and ``options`` as ``reduce.<method>``, validated
    with the params' own defaults and ranges (one ConfigError line for a bad or unknown option)."""
    if method not in METHODS:
        raise ConfigError(f"unknown reduce method '{method}'; use one of {', '.join(METHODS)}")
    return parse_params({"reduce": {"pca_dims": pca_dims, method: dict(options)}}, f"{method} options").reduce


def fingerprint(x: np.ndarray) -> str:
    """Identity of an activation array (shape, dtype, bytes): equal layers (``flatten`` after
    ``pool2``, dropout at inference) are mapped once."""
    import hashlib

    header = repr((x.shape, x.dtype.str)).encode()
    return hashlib.sha1(header + np.ascontiguousarray(x).tobytes()).hexdigest()


# --------------------------------------------------------------------------- checks and clamps

CUML_INSTALL = "https://docs.rapids.ai/install"


def cuml_available() -> bool:
    """Whether RAPIDS cuML can be imported (checked without importing it)."""
    import importlib.util
    import sys

    if "cuml" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("cuml") is not None
    except (ImportError, ValueError):
        return False


def check_config(method: str, /, **options: Any) -> None:
    """Refuse method/option combinations the backends do not support (one ConfigError line).
    ``options``: the method's hyperparameters (keys of ``reduce.<method>``)."""
    _check(method, _settings(method, options))


def _check(method: str, cfg: ReduceConfig) -> None:
    if method in ("tsne", "umap") and getattr(cfg, method).backend == "cuml" and not cuml_available():
        default = "opentsne" if method == "tsne" else "umap-learn"
        raise ConfigError(f"reduce.{method}.backend = cuml needs RAPIDS cuML (an NVIDIA GPU), which is not "
                          f"installed; install it ({CUML_INSTALL}) or use backend: {default}")
    if method == "tsne":
        t = cfg.tsne
        if t.backend == "cuml" and t.n_components != 2:
            raise ConfigError(f"reduce.tsne.backend = cuml maps to 2-D only (n_components = {t.n_components}); "
                              f"use n_components: 2, or backend: opentsne for 3-D")
        if t.backend == "opentsne" and t.method == "exact":
            raise ConfigError("reduce.tsne.method = exact: openTSNE has no exact gradient; "
                              "use method: auto, bh or fft, or backend: sklearn for exact")
        if t.backend == "sklearn" and t.method == "fft":
            raise ConfigError("reduce.tsne.method = fft: scikit-learn has no FFT gradient; "
                              "use backend: opentsne for fft, or method: auto, bh or exact")
        if t.method == "fft" and t.n_components != 2:
            raise ConfigError(f"reduce.tsne.method = fft supports only 2-D maps (n_components = "
                              f"{t.n_components}); use method: bh or auto for 3-D")


def tsne_gradient_method(n: int, *, method: str = "auto", backend: str = "opentsne", n_components: int = 2) -> str:
    """``bh``, ``fft`` or ``exact`` for ``n`` points: ``auto`` is BH below :data:`FFT_THRESHOLD`
    points or in 3-D (openTSNE's FFT is 2-D only), FFT above; cuML (GPU): FFT, its default."""
    if method != "auto":
        return method
    if backend == "cuml":
        return "fft"
    if backend == "sklearn" or n_components != 2 or n < FFT_THRESHOLD:
        return "bh"
    return "fft"


def clamp_perplexity(perplexity: float, n: int) -> float:
    """t-SNE needs ``3 * perplexity`` neighbours per point, so at most ``(n - 1) / 3``."""
    return float(min(perplexity, (n - 1) / 3.0))


def clamp_neighbors(n_neighbors: int, n: int) -> int:
    """UMAP's neighbourhood cannot exceed the other ``n - 1`` points."""
    return int(max(2, min(n_neighbors, n - 1)))


# --------------------------------------------------------------------------- preparation

def sphereize(x: np.ndarray) -> np.ndarray:
    """TensorBoard's "Spherize data": every point (row of ``x``, (n, dim)) shifted by the centroid of
    all points and scaled to unit length, so its direction counts and its magnitude does not. A
    point at the centroid stays at 0. Returns a new float64 array."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.where(norms > 0, norms, 1.0)


def prepare(x: np.ndarray, pca_dims: int, seed: int, *, keep_scaled: bool = False,
            sphereize: bool = False) -> Features:
    """Check ``x`` (n, dim) and rotate it onto its first ``min(pca_dims, n, dim)`` principal axes.
    ``sphereize``: first move every point to unit distance from the centroid (:func:`sphereize`),
    so the explained-variance ratios are those of the sphereized points.

    Raises :class:`SkipLayer` for fewer than :data:`MIN_POINTS` points, any NaN/inf value, or a
    constant layer (every feature's std below ``CONSTANT_TOL`` x the largest |value|).
    """
    from sklearn.decomposition import PCA

    x = np.asarray(x)
    if x.ndim != 2:
        raise SkipLayer(f"expected a 2-D array (points, features), got shape {x.shape}")
    n, dim = x.shape
    if n < MIN_POINTS:
        raise SkipLayer(f"only {n} points; at least {MIN_POINTS} are needed")
    if dim < 1:
        raise SkipLayer("no features")
    x = x.astype(np.float64)                                 # (n, dim); float16/32 layers too
    finite = np.isfinite(x)
    if not finite.all():
        bad = int((~finite).sum())
        raise SkipLayer(f"{bad} of {x.size} activation values are NaN or infinite")
    scale = float(np.abs(x).max())
    if scale == 0.0:
        raise SkipLayer("constant layer (every activation is 0; dead units)")
    x /= scale                                               # x is our own float64 copy
    scaled = x.copy() if keep_scaled else None
    x -= x.mean(axis=0)                                      # (n, dim) centred
    std = x.std(axis=0)                                      # (dim,)
    if float(std.max()) < CONSTANT_TOL:
        raise SkipLayer(f"constant layer (largest feature std {float(std.max()) * scale:.3g} "
                        f"for values up to {scale:.3g}; dead or saturated units)")
    if sphereize:                                            # unit length from the centroid; unit-free
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x /= np.where(norms > 0, norms, 1.0)
        if scaled is not None:
            scaled = x.copy()
        scale = 1.0
    k = int(min(pca_dims, n, dim))
    pca = PCA(n_components=k, svd_solver="auto", random_state=seed)
    pcs = pca.fit_transform(x)                               # (n, k)
    ratios = np.nan_to_num(pca.explained_variance_ratio_, nan=0.0)
    return Features(pcs=pcs, ratios=ratios, scale=scale, dim=dim,
                    constant_features=int((std < CONSTANT_TOL * float(std.max())).sum()),
                    scaled=scaled)


def rescale(coords: np.ndarray, target_std: float) -> np.ndarray:
    """Centre ``coords`` (n, d) and scale them so the first column's std is ``target_std``."""
    coords = np.asarray(coords, dtype=np.float64)
    coords = coords - coords.mean(axis=0)
    std = float(coords[:, 0].std())
    if std == 0.0 or not np.isfinite(std):
        std = float(coords.std()) or 1.0
    return coords * (target_std / std)


def _leading(pcs: np.ndarray, d: int, seed: int, noise: float = 0.0) -> np.ndarray:
    """The first ``d`` PC scores; missing columns (fewer features than ``d``) are zeros, or
    tiny seeded noise if ``noise`` (a t-SNE/UMAP start must not be degenerate)."""
    out = np.zeros((len(pcs), d))
    k = min(d, pcs.shape[1])
    out[:, :k] = pcs[:, :k]
    if k < d and noise:
        ref = float(out[:, 0].std()) or 1.0
        out[:, k:] = np.random.default_rng(seed).normal(scale=noise * ref, size=(len(pcs), d - k))
    return out


# --------------------------------------------------------------------------- the methods

def _pca(f: Features, cfg: PCAConfig, seed: int, notes: list[str]) -> tuple[np.ndarray, dict]:
    d = cfg.n_components
    coords = _leading(f.pcs, d, seed) * f.scale              # (n, d) in the layer's own units
    if f.pcs.shape[1] < d:
        notes.append(f"only {f.pcs.shape[1]} independent directions; "
                     f"component(s) {f.pcs.shape[1] + 1}..{d} are 0")
    if cfg.whiten:                                           # "sphereize": unit variance per axis
        std = coords.std(axis=0)
        usable = std > 1e-12 * max(float(std.max()), 1e-300)
        coords[:, usable] /= std[usable]
        coords[:, ~usable] = 0.0
    used = {"n_components": d, "whiten": cfg.whiten,
            "explained_variance_ratio": [round(float(r), 6) for r in f.ratios[:d]]}
    return coords, used


def _tsne(f: Features, cfg: TSNEConfig, seed: int, init: Optional[np.ndarray],
          notes: list[str], threads: Optional[int] = None) -> tuple[np.ndarray, dict]:
    n, d = len(f.pcs), cfg.n_components
    n_jobs = threads or _n_jobs(n)
    perplexity = clamp_perplexity(cfg.perplexity, n)
    if perplexity < cfg.perplexity:
        notes.append(f"perplexity {cfg.perplexity:g} -> {perplexity:.3g} (only {n} points; "
                     f"at most (n - 1) / 3)")
    method = tsne_gradient_method(n, method=cfg.method, backend=cfg.backend, n_components=cfg.n_components)
    if init is not None:
        start, init_kind = rescale(init, _TSNE_INIT_STD), "previous"
    elif cfg.init == "pca":
        start, init_kind = rescale(_leading(f.pcs, d, seed, noise=1e-3), _TSNE_INIT_STD), "pca"
    else:
        start = np.random.default_rng(seed).normal(scale=_TSNE_INIT_STD, size=(n, d))
        init_kind = "random"
    lr = cfg.learning_rate if cfg.learning_rate is not None else "auto"
    used: dict[str, Any] = {"backend": cfg.backend, "gradient_method": method, "n_components": d,
                            "perplexity": round(perplexity, 4), "learning_rate": lr, "init": init_kind}
    if cfg.backend == "opentsne":
        # openTSNE imports pynndescent to learn whether it is installed, whichever neighbours it
        # then uses (Annoy or exact for our dense Euclidean features, never NN-descent): under
        # numba_disk_cache its declared-signature functions are not compiled (12 s of CPU in each
        # worker of a fresh machine's first t-SNE stage: the stage took 24-26 s instead of 12-14)
        with numba_disk_cache():
            from openTSNE import TSNE

            # exact neighbours (scikit-learn, BLAS) are 3-4x faster than openTSNE's default Annoy
            # index from 1,000 to 10,000 points (measured: 0.09 vs 0.32 s, 1.3 vs 4.8 s), and exact
            tsne = TSNE(n_components=d, perplexity=perplexity, learning_rate=lr,
                        early_exaggeration_iter=cfg.early_exaggeration_iter, n_iter=cfg.n_iter,
                        negative_gradient_method=method, initialization=start, random_state=seed,
                        neighbors="exact" if n <= EXACT_KNN_MAX else "auto", n_jobs=n_jobs, verbose=False)
            coords = np.asarray(tsne.fit(f.pcs))
        used.update(early_exaggeration_iter=cfg.early_exaggeration_iter, n_iter=cfg.n_iter)
    elif cfg.backend == "cuml":
        coords = _tsne_cuml(f, cfg, seed, perplexity, method, init_kind, used, notes)
    else:
        from sklearn.manifold import TSNE

        # scikit-learn fixes the early-exaggeration phase at 250 iterations (not a parameter)
        tsne = TSNE(n_components=d, perplexity=perplexity, learning_rate=lr,
                    max_iter=250 + cfg.n_iter, init=start, random_state=seed,
                    method="barnes_hut" if method == "bh" else "exact", n_jobs=n_jobs)
        coords = tsne.fit_transform(f.pcs)
        used.update(early_exaggeration_iter=250, n_iter=cfg.n_iter)
        if cfg.early_exaggeration_iter != 250:
            notes.append(f"early_exaggeration_iter {cfg.early_exaggeration_iter} -> 250 "
                         f"(fixed by scikit-learn)")
    return coords, used


def _tsne_cuml(f: Features, cfg: TSNEConfig, seed: int, perplexity: float, method: str, init_kind: str,
               used: dict[str, Any], notes: list[str]) -> np.ndarray:
    """t-SNE on the GPU with RAPIDS cuML (2-D; starts from its own PCA or random layout)."""
    import inspect

    from cuml.manifold import TSNE

    n = len(f.pcs)
    if init_kind == "previous":
        notes.append("cuML t-SNE cannot start from a given layout: init pca (frames aligned by Procrustes only)")
    start = "random" if init_kind == "random" else "pca"
    lr = cfg.learning_rate if cfg.learning_rate is not None else max(200.0, n / 12.0)   # openTSNE's auto, early phase
    total = cfg.early_exaggeration_iter + cfg.n_iter
    iters = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"   # renamed in cuML 25.x
    tsne = TSNE(n_components=2, perplexity=perplexity, learning_rate=lr, learning_rate_method="none",
                exaggeration_iter=cfg.early_exaggeration_iter, method={"bh": "barnes_hut"}.get(method, method),
                init=start, random_state=seed, output_type="numpy", verbose=False, **{iters: total})
    used.update(init=start, learning_rate=round(float(lr), 3), early_exaggeration_iter=cfg.early_exaggeration_iter,
                n_iter=cfg.n_iter)
    return np.asarray(tsne.fit_transform(f.pcs.astype(np.float32)))


def exact_knn(data: np.ndarray, k: int, metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """Each point's ``k`` nearest points, itself first: indices (n, k) int64, distances (n, k) float32.

    What UMAP's neighbour graph is built from, computed exactly by scikit-learn's brute force
    (BLAS) instead of umap-learn's own paths: below 4,096 points umap-learn computes all
    pairwise distances through a Python-level callback (about 2 s per fit of 1,000 points,
    20 such fits per reduce stage), above it compiles and runs an approximate NN-descent (15-35
    s of numba compilation per process). Same form as umap-learn's graph: the point itself at
    distance exactly 0, then its ``k - 1`` nearest others; truly exact (umap-learn's own
    small-data path missed 0.24% of the true neighbours of 600 random points, this one none).
    """
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k - 1, metric=metric, algorithm="brute").fit(data)
    dists, idx = index.kneighbors()                          # (n, k - 1), the query point left out
    n = len(data)
    indices = np.hstack([np.arange(n)[:, None], idx]).astype(np.int64)
    distances = np.hstack([np.zeros((n, 1)), dists]).astype(np.float32)
    return indices, distances


def _umap_knn(data: np.ndarray, k: int, metric: str) -> Optional[tuple[np.ndarray, np.ndarray, None]]:
    """``precomputed_knn`` for umap-learn where exact neighbours are the cheaper way: below 4,096
    points (umap-learn would compute every distance anyway) and, for Euclidean PCA features, up to
    :data:`EXACT_KNN_MAX` points; None lets umap-learn search itself (other metrics on wide layers)."""
    n = len(data)
    if n < 4096 or (metric == "euclidean" and n <= EXACT_KNN_MAX):
        indices, distances = exact_knn(data, k, metric)
        return indices, distances, None
    return None


def numba_cache_dir() -> str:
    """Where numba's compiled umap-learn / pynndescent code is kept between runs:
    ``$NUMBA_CACHE_DIR`` if set, else ``hidden-spaces/numba`` in the user's cache folder
    (``$XDG_CACHE_HOME``, else ``~/.cache``): writable wherever the library itself is not."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hidden-spaces", "numba")


# pynndescent's functions with declared signatures, not yet compiled (see numba_disk_cache)
_DEFERRED: list[tuple[Any, list[Any]]] = []


@contextlib.contextmanager
def numba_disk_cache() -> Iterator[None]:
    """Inside: numba compiles with ``cache=True`` unless told otherwise, into :func:`numba_cache_dir`,
    and pynndescent's declared-signature functions are compiled when first needed, not at import.

    umap-learn marks few of its numba functions ``cache=True``, and builds some with
    ``numba.njit(...)`` at every fit, so every new process compiled them again: measured here,
    1,000 points on one core, the first fit of a process took 6.5 s of CPU, 0.8 s once
    compiled. With the on-disk cache the first fit of every later process takes 1.0 s (the
    compile is paid once per machine and library version; numba checks the source files'
    timestamps and recompiles what changed). What cannot be cached (closures) compiles as before.

    umap-learn imports pynndescent, whose 36 functions with declared signatures numba compiles
    as they are defined: 12 s of a 16 s ``import umap`` on a fresh machine (its open issue
    lmcinnes/pynndescent#111), for code our exact neighbours (:func:`_umap_knn`) never call;
    openTSNE imports it in every fit, only to learn whether it is installed.
    Imported in here, they are defined uncompiled and kept in ``_DEFERRED``;
    :func:`_compile_deferred` compiles each with its declared signatures and closes it to
    others, exactly as at import, before a fit that searches with NN-descent (the same
    neighbours and maps as an eager import, bit for bit: tests/test_sizes.py).
    """
    folder = numba_cache_dir()
    os.environ.setdefault("NUMBA_CACHE_DIR", folder)          # read when numba is first imported
    import numba
    from numba.core import sigutils

    if not getattr(numba.config, "CACHE_DIR", ""):            # numba was imported before us
        numba.config.CACHE_DIR = folder
    original = numba.njit
    if getattr(original, "_hidden_spaces_cached", False):     # nested use
        yield
        return

    @functools.wraps(original)
    def njit(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cache", True)
        if not args or not (isinstance(args[0], list) or sigutils.is_signature(args[0])):
            return original(*args, **kwargs)
        signatures = args[0] if isinstance(args[0], list) else [args[0]]

        def decorate(func: Callable) -> Any:
            if not func.__module__.startswith("pynndescent."):
                return original(*args, **kwargs)(func)
            dispatcher = original(*args[1:], **kwargs)(func)
            _DEFERRED.append((dispatcher, signatures))
            return dispatcher
        return decorate

    njit._hidden_spaces_cached = True                        # type: ignore[attr-defined]
    numba.njit = njit
    try:
        yield
    finally:
        numba.njit = original


def _compile_deferred() -> None:
    """Compile pynndescent's deferred functions as numba does at import (each with its declared
    signatures, then no others): before umap-learn searches neighbours with NN-descent."""
    while _DEFERRED:
        dispatcher, signatures = _DEFERRED.pop(0)
        for signature in signatures:
            dispatcher.compile(signature)
        dispatcher.disable_compile()


def _umap(f: Features, cfg: UMAPConfig, seed: int, init: Optional[np.ndarray],
          notes: list[str]) -> tuple[np.ndarray, dict]:
    n, d = len(f.pcs), cfg.n_components
    k = clamp_neighbors(cfg.n_neighbors, n)
    if k < cfg.n_neighbors:
        notes.append(f"n_neighbors {cfg.n_neighbors} -> {k} (only {n} points; at most n - 1)")
    # Euclidean UMAP runs on the PCA features (distances kept up to the dropped variance);
    # other metrics need the layer's own, uncentred coordinates (the cosine of centred PCs is
    # another metric); dividing by one scale changes none of them but manhattan's units.
    if cfg.metric == "euclidean" or f.scaled is None:
        data, space = f.pcs, f"pca{f.pcs.shape[1]}"
    else:
        data, space = f.scaled, "full"
    if init is not None:
        start: Any = rescale(init, 1.0)
        init_kind = "previous"
    elif n > 4 * (d + 1):
        start = init_kind = "spectral"
    else:                                                    # spectral needs more points than d + 1
        start, init_kind = rescale(_leading(f.pcs, d, seed, noise=1e-3), 1.0), "pca"
    if cfg.backend == "cuml":
        from cuml.manifold import UMAP                       # RAPIDS, on the GPU

        if not isinstance(start, str):                       # cuML takes no given layout
            instead = "spectral" if n > 4 * (d + 1) else "random"
            notes.append(f"cuML UMAP cannot start from a given layout: init {instead} instead of {init_kind}")
            start = init_kind = instead
        reducer = UMAP(n_neighbors=k, min_dist=cfg.min_dist, metric=cfg.metric, n_components=d,
                       n_epochs=cfg.n_epochs, init=start, random_state=seed, output_type="numpy", verbose=False)
        coords = reducer.fit_transform(np.asarray(data, dtype=np.float32))
    else:
        with numba_disk_cache():
            import umap

            knn = _umap_knn(data, k, cfg.metric)
            if knn is None:                                  # umap-learn runs pynndescent's NN-descent
                _compile_deferred()
            reducer = umap.UMAP(n_neighbors=k, min_dist=cfg.min_dist, metric=cfg.metric, n_components=d,
                                n_epochs=cfg.n_epochs, init=start, random_state=seed, verbose=False,
                                precomputed_knn=knn if knn is not None else (None, None, None))
            coords = reducer.fit_transform(data)
    used = {"backend": cfg.backend, "n_neighbors": k, "min_dist": cfg.min_dist, "metric": cfg.metric,
            "n_components": d, "n_epochs": cfg.n_epochs, "init": init_kind, "space": space}
    return coords, used


def _n_jobs(n: int) -> int:
    """Threads for the t-SNE backends: one below :data:`THREADS_FROM` points, else every core.

    Measured here on 2 cores: at 1,000 points two threads save a third on an idle machine but
    cost 4-6x when other processes compete for the cores (the threads meet at every
    iteration and wait for each other), e.g. under ``dvc exp run --jobs 2``; at 5,000 points
    they halve the time (8.6 s -> 4.8 s). One thread also gives the same map on every machine
    (the coordinates depend on the thread count), so small maps stay reproducible everywhere.
    """
    if n < THREADS_FROM:
        return 1
    return runtime.usable_cpus()


# --------------------------------------------------------------------------- the one entry point

def embed(x: np.ndarray, method: str, /, *, seed: int, pca_dims: int = 50, sphereize: bool = False,
          layout: Optional[np.ndarray] = None, features: Optional[Features] = None, threads: Optional[int] = None,
          **options: Any) -> Embedding:
    """Map ``x`` (n, dim) to (n, 2 or 3) with ``method`` (``pca``, ``tsne`` or ``umap``).

    ``options``: the method's hyperparameters, the keys of ``reduce.<method>`` in params.yaml
    with the same defaults (e.g. ``n_components=3, perplexity=50``; t-SNE's gradient ``method``
    too: ``x`` and ``method`` are positional-only); ``pca_dims``: principal components t-SNE and
    UMAP are fitted on; ``sphereize``: every point centred and scaled to unit length first
    (``reduce.sphereize``, :func:`sphereize`).
    ``layout`` (n, d): a starting layout for t-SNE / UMAP (e.g. the previous snapshot's map),
    rescaled here; PCA ignores it. ``features``: a :func:`prepare` result to reuse. ``threads``:
    t-SNE's thread count (None: :func:`_n_jobs`; e.g. 1 where other processes map other layers).
    Raises :class:`SkipLayer` (with the reason) when ``x`` cannot be embedded; never returns
    non-finite coordinates. ``info`` holds the parameters actually used, ``notes`` (clamps) and
    ``seconds``; for PCA also ``explained_variance_ratio``.
    """
    cfg = _settings(method, options, pca_dims)
    _check(method, cfg)
    started = time.perf_counter()
    sub = getattr(cfg, method)
    d = sub.n_components
    if features is None:
        keep = method == "umap" and cfg.umap.metric != "euclidean"
        features = prepare(x, cfg.pca_dims if method != "pca" else max(cfg.pca_dims, d), seed,
                           keep_scaled=keep, sphereize=sphereize)
    n = len(features.pcs)
    if layout is not None:
        layout = np.asarray(layout, dtype=np.float64)
        if layout.shape != (n, d) or not np.isfinite(layout).all():
            raise ValueError(f"layout must be a finite ({n}, {d}) array, got shape {layout.shape}")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                  # backend chatter; our notes say what matters
            with np.errstate(all="ignore"):
                if method == "pca":
                    coords, used = _pca(features, cfg.pca, seed, notes)
                elif method == "tsne":
                    coords, used = _tsne(features, cfg.tsne, seed, layout, notes, threads)
                else:
                    coords, used = _umap(features, cfg.umap, seed, layout, notes)
    except SkipLayer:
        raise
    except Exception as exc:  # a backend failing on odd input must not stop the other layers
        first = (str(exc).splitlines() or [""])[0][:200]
        raise SkipLayer(f"{method} failed: {type(exc).__name__}: {first}") from exc
    coords = np.asarray(coords, dtype=np.float64)
    if coords.shape != (n, d):
        raise SkipLayer(f"{method} returned shape {coords.shape}, expected {(n, d)}")
    if not np.isfinite(coords).all():
        raise SkipLayer(f"{method} returned {int((~np.isfinite(coords)).sum())} non-finite coordinates")
    info = {"method": method, **used, "sphereize": bool(sphereize), "pca_dims": int(features.pcs.shape[1]),
            "input_dims": features.dim,
            "constant_features": features.constant_features, "notes": notes,
            "seconds": round(time.perf_counter() - started, 3)}
    return Embedding(coords=coords.astype(np.float32), info=info, features=features)


# --------------------------------------------------------------------------- sequences of snapshots

def align_procrustes(coords: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rotate/reflect ``coords`` (n, d) about its centroid onto ``reference`` (n, d) and move it
    to the reference's centroid (orthogonal Procrustes; no scaling, distances are kept)."""
    from scipy.linalg import orthogonal_procrustes

    a = np.asarray(coords, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    a_mean, b_mean = a.mean(axis=0), b.mean(axis=0)
    rotation, _ = orthogonal_procrustes(a - a_mean, b - b_mean)   # (d, d), R^T R = I
    return (a - a_mean) @ rotation + b_mean


FRAME_TSNE_ITER = 100          # t-SNE frames started from the previous map: no early exaggeration, this many iterations
FRAME_UMAP_EPOCHS = 100        # UMAP frames started from the previous map: at most this many epochs


def frame_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options (``reduce.<method>`` keys) of a snapshot frame that starts from the previous
    frame's map: ``options`` with a shorter budget.

    The layout is already there, so t-SNE skips early exaggeration (whose job is to form the
    clusters from a random or PCA start) and runs :data:`FRAME_TSNE_ITER` iterations, UMAP at
    most :data:`FRAME_UMAP_EPOCHS` epochs. Measured (``benchmarks/tsne_sizes.py``, 10,000
    points, act4 one snapshot before the final model, started from the final map): t-SNE 0 + 250
    / 0 + 100 / 0 + 50 iterations gave kNN accuracy 0.944 / 0.943 / 0.943, trustworthiness
    0.997 / 0.997 / 0.996, in 15.0 / 5.2 / 3.1 s of CPU; UMAP 200 / 100 / 50 epochs: kNN 0.947 /
    0.943 / 0.946, trustworthiness 0.992 / 0.991 / 0.991, 3.9 / 2.3 / 1.7 s (a fit from scratch:
    0.951, 0.993, 12.6 s). cuML cannot start from a layout and
    scikit-learn fixes its exaggeration phase, so their frames keep the full budget.
    """
    sub = getattr(_settings(method, options), method)
    if method == "tsne" and sub.backend == "opentsne":
        return {**options, "early_exaggeration_iter": 0, "n_iter": min(sub.n_iter, FRAME_TSNE_ITER)}
    if method == "umap" and sub.backend == "umap-learn":
        epochs = FRAME_UMAP_EPOCHS if sub.n_epochs is None else min(sub.n_epochs, FRAME_UMAP_EPOCHS)
        return {**options, "n_epochs": epochs}
    return dict(options)


def embed_frames(frames: Iterable[np.ndarray], method: str, /, *, seed: int, pca_dims: int = 50,
                 sphereize: bool = False, start: Optional[tuple[np.ndarray, np.ndarray]] = None,
                 on_frame: Optional[Callable[[], None]] = None, threads: Optional[int] = None,
                 **options: Any) -> list[Embedding | SkipLayer]:
    """Map a sequence of activation arrays of the same points, each frame aligned to the last.
    ``method``, ``seed``, ``pca_dims``, ``sphereize``, ``threads`` and ``options`` as for :func:`embed`.

    Frames are processed in the order given. ``start = (x, coords)``: a layer already mapped
    (e.g. the final model's) that the first frame starts from; a frame equal to that ``x``
    reuses its coords unchanged. Each frame is initialised from the previous successful frame
    (t-SNE / UMAP, with the shorter budget of :func:`frame_options`) and Procrustes-aligned to it
    (every method). A frame that cannot be
    embedded yields its :class:`SkipLayer` in the list, and the next frame starts from the
    last good one. ``on_frame()`` is called after each frame (progress bars).
    """
    previous = None if start is None else np.asarray(start[1], dtype=np.float64)
    out: list[Embedding | SkipLayer] = []
    for x in frames:
        if start is not None and x.shape == start[0].shape and np.array_equal(x, start[0]):
            emb = Embedding(coords=np.asarray(start[1], dtype=np.float32), info={"reused": True})
        else:
            try:
                if method == "pca" or previous is None:
                    emb = embed(x, method, seed=seed, pca_dims=pca_dims, sphereize=sphereize, threads=threads,
                                **options)
                else:                                        # a shorter budget: see frame_options
                    emb = embed(x, method, seed=seed, pca_dims=pca_dims, sphereize=sphereize, layout=previous,
                                threads=threads, **frame_options(method, options))
            except SkipLayer as exc:
                out.append(exc)
                if on_frame:
                    on_frame()
                continue
            if previous is not None:
                emb.coords = align_procrustes(emb.coords, previous).astype(np.float32)
        previous = emb.coords.astype(np.float64)
        out.append(emb)
        if on_frame:
            on_frame()
    return out
