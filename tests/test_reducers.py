"""Unit tests of pipeline.reducers and pipeline.quality on small synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.config import ReduceConfig
from pipeline.errors import ConfigError
from pipeline.quality import explained_variance, knn_accuracy, map_metrics, silhouette, trustworthiness
from pipeline.reducers import (
    MIN_POINTS, Embedding, SkipLayer, align_procrustes, check_config, clamp_neighbors, clamp_perplexity,
    FRAME_TSNE_ITER, FRAME_UMAP_EPOCHS, embed, embed_frames, frame_options, prepare, sphereize, tsne_gradient_method,
)

FAST = {"pca_dims": 10, "tsne": {"perplexity": 10, "early_exaggeration_iter": 30, "n_iter": 60},
        "umap": {"n_neighbors": 8, "n_epochs": 30}}


def make_cfg(**overrides) -> ReduceConfig:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in FAST.items()}
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return ReduceConfig.model_validate(raw)


def opts(method: str, **overrides) -> dict:
    """The plain keyword arguments of ``embed`` for ``method``: FAST's settings plus ``overrides``
    (a ``method`` key holds that method's own options)."""
    cfg = make_cfg(**overrides)
    return {"pca_dims": cfg.pca_dims, **getattr(cfg, method).model_dump()}


def blobs(n_per: int = 20, k: int = 3, dim: int = 12, spread: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` well-separated Gaussian clusters in ``dim`` dims: (k * n_per, dim), labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return (centres[labels] + rng.normal(scale=spread, size=(len(labels), dim))).astype(np.float32), labels


# --------------------------------------------------------------------------- shapes, finiteness, seeds

@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
@pytest.mark.parametrize("d", [2, 3])
def test_embed_shapes_and_finite(method: str, d: int) -> None:
    x, _ = blobs()
    emb = embed(x, method, **opts(method, **{method: {"n_components": d}}), seed=0)
    assert emb.coords.shape == (len(x), d)
    assert emb.coords.dtype == np.float32
    assert np.isfinite(emb.coords).all()
    assert emb.info["method"] == method and emb.info["n_components"] == d
    assert emb.info["notes"] == []


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_embed_is_deterministic_for_a_seed(method: str) -> None:
    x, _ = blobs(seed=1)
    a = embed(x, method, **opts(method), seed=3).coords
    b = embed(x, method, **opts(method), seed=3).coords
    np.testing.assert_array_equal(a, b)


def test_tsne_seed_changes_random_init() -> None:
    x, _ = blobs(seed=2)
    options = opts("tsne", tsne={"init": "random"})
    assert not np.allclose(embed(x, "tsne", **options, seed=0).coords, embed(x, "tsne", **options, seed=1).coords)


def test_tsne_sklearn_backend_runs() -> None:
    x, labels = blobs(n_per=15)
    emb = embed(x, "tsne", **opts("tsne", tsne={"backend": "sklearn"}), seed=0)
    assert emb.coords.shape == (45, 2) and np.isfinite(emb.coords).all()
    assert emb.info["backend"] == "sklearn" and emb.info["early_exaggeration_iter"] == 250
    assert any("early_exaggeration_iter" in note for note in emb.info["notes"])
    assert knn_accuracy(emb.coords, labels, k=5) == 1.0


def test_maps_separate_separated_clusters() -> None:
    x, labels = blobs(n_per=25, k=4)
    for method in ("pca", "tsne", "umap"):
        emb = embed(x, method, **opts(method), seed=0)
        assert knn_accuracy(emb.coords, labels, k=5) == 1.0, method


# --------------------------------------------------------------------------- PCA specifics

def test_pca_whiten_gives_unit_variance() -> None:
    x, _ = blobs(dim=8)
    coords = embed(x, "pca", **opts("pca", pca={"whiten": True, "n_components": 3}), seed=0).coords
    np.testing.assert_allclose(coords.std(axis=0), 1.0, rtol=1e-4)
    plain = embed(x, "pca", **opts("pca", pca={"n_components": 3}), seed=0).coords
    assert plain.std(axis=0)[0] > 2.0                        # in the layer's units, not whitened


def test_pca_explained_variance_and_units() -> None:
    rng = np.random.default_rng(0)
    # variance 9, 4, 1, 0.01 on four axes, rotated: the first two hold 13 / 14.01 of it
    scales = np.array([3.0, 2.0, 1.0, 0.1])
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    x = (rng.normal(size=(4000, 4)) * scales) @ q.T
    emb = embed(x, "pca", **opts("pca"), seed=0)
    ratios = emb.info["explained_variance_ratio"]
    assert explained_variance(np.array(ratios), 2) == pytest.approx(13 / 14.01, abs=0.01)
    assert emb.coords.std(axis=0) == pytest.approx([3.0, 2.0], rel=0.05)   # original units


def test_sphereize_puts_every_point_at_unit_distance_from_the_centroid() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(-9, 10, size=(25, 6)).astype(float) * np.array([10.0, 1, 1, 1, 1, 1])
    x = np.concatenate([a, -a, np.zeros((1, 6))]) + 5.0     # integers: the centroid is exactly (5, ..., 5)
    s = sphereize(x)
    norms = np.linalg.norm(s, axis=1)
    moved = np.linalg.norm(x - 5.0, axis=1) > 0
    assert norms[50] == 0.0 and np.allclose(norms[moved], 1.0)   # the point at the centroid stays at 0
    centred = x - x.mean(axis=0)
    np.testing.assert_allclose(s[3], centred[3] / np.linalg.norm(centred[3]))   # same direction


def test_sphereize_changes_the_explained_variance_and_the_map() -> None:
    rng = np.random.default_rng(0)
    # ten points far out along one axis: plain PCA gives that axis almost all the variance; on
    # the sphere every point counts once, whatever its length, and the cloud is nearly round
    x = rng.normal(size=(400, 5))
    x[:10, 0] *= 100.0
    plain = embed(x, "pca", seed=0, **opts("pca"))
    sphere = embed(x, "pca", seed=0, sphereize=True, **opts("pca"))
    ev_plain = explained_variance(np.array(plain.info["explained_variance_ratio"]), 2)
    ev_sphere = explained_variance(np.array(sphere.info["explained_variance_ratio"]), 2)
    ref = np.linalg.svd(sphereize(x) - sphereize(x).mean(axis=0), compute_uv=False) ** 2
    assert ev_sphere == pytest.approx(ref[:2].sum() / ref.sum(), abs=1e-6)
    assert ev_plain > 0.8 and ev_sphere < 0.6
    assert sphere.info["sphereize"] is True and plain.info["sphereize"] is False
    assert np.abs(sphere.coords).max() < 2.0                 # unit-sphere points, projected and recentred
    tsne = embed(x, "tsne", seed=0, sphereize=True, **opts("tsne"))
    assert tsne.coords.shape == (400, 2) and tsne.info["sphereize"] is True


def test_pca_with_fewer_features_than_components_pads() -> None:
    x = np.random.default_rng(0).normal(size=(30, 1))
    emb = embed(x, "pca", **opts("pca"), seed=0)
    assert emb.coords.shape == (30, 2) and np.all(emb.coords[:, 1] == 0)
    assert "component" in emb.info["notes"][0]


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
@pytest.mark.parametrize("case", ["constant", "zeros", "nan", "inf", "too_few"])
def test_bad_input_is_skipped_with_a_reason(method: str, case: str) -> None:
    x, _ = blobs()
    x = x.astype(np.float64)
    expected = {"constant": "constant layer", "zeros": "constant layer", "nan": "NaN or infinite",
                "inf": "NaN or infinite", "too_few": f"at least {MIN_POINTS}"}[case]
    if case == "constant":
        x[:] = 0.731
    elif case == "zeros":
        x[:] = 0.0
    elif case == "nan":
        x[3, 4] = np.nan
    elif case == "inf":
        x[0, 0] = -np.inf
    else:
        x = x[:MIN_POINTS - 1]
    with pytest.raises(SkipLayer, match=expected):
        embed(x, method, **opts(method), seed=0)


def test_sklearn_tsne_is_never_called_on_constant_input(monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.manifold

    def boom(*_a, **_k):                                     # it can segfault: must not be reached
        raise AssertionError("sklearn TSNE called on constant input")

    monkeypatch.setattr(sklearn.manifold.TSNE, "fit_transform", boom)
    x = np.full((50, 6), 3.0, dtype=np.float32)
    x[:, 2] = 0.25                                            # constant per column, not all equal
    with pytest.raises(SkipLayer, match="constant layer"):
        embed(x, "tsne", **opts("tsne", tsne={"backend": "sklearn"}), seed=0)


def test_nan_output_of_the_backend_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    import openTSNE

    monkeypatch.setattr(openTSNE.TSNE, "fit", lambda self, data: np.full((len(data), 2), np.nan))
    x, _ = blobs()
    with pytest.raises(SkipLayer, match="non-finite coordinates"):
        embed(x, "tsne", **opts("tsne"), seed=0)


def test_backend_exception_becomes_a_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    import openTSNE

    def fail(self, data):
        raise ValueError("degenerate affinities\nsecond line")

    monkeypatch.setattr(openTSNE.TSNE, "fit", fail)
    x, _ = blobs()
    with pytest.raises(SkipLayer, match="tsne failed: ValueError: degenerate affinities$"):
        embed(x, "tsne", **opts("tsne"), seed=0)


def test_perplexity_is_clamped_for_few_points() -> None:
    x, _ = blobs(n_per=4, k=3)                               # 12 points: perplexity <= 11 / 3
    emb = embed(x, "tsne", **opts("tsne", tsne={"perplexity": 30}), seed=0)
    assert emb.info["perplexity"] == pytest.approx(11 / 3, abs=1e-3)
    assert "perplexity 30 -> 3.67" in emb.info["notes"][0]
    assert np.isfinite(emb.coords).all()


def test_n_neighbors_is_clamped_for_few_points() -> None:
    x, _ = blobs(n_per=3, k=3)                               # 9 points: n_neighbors <= 8
    emb = embed(x, "umap", **opts("umap", umap={"n_neighbors": 15}), seed=0)
    assert emb.info["n_neighbors"] == 8
    assert "n_neighbors 15 -> 8" in emb.info["notes"][0]
    assert np.isfinite(emb.coords).all()


def test_clamp_rules() -> None:
    assert clamp_perplexity(30, 1000) == 30
    assert clamp_perplexity(30, 10) == pytest.approx(3.0)
    assert clamp_neighbors(15, 1000) == 15
    assert clamp_neighbors(15, 6) == 5


def test_partially_dead_layer_is_mapped_and_counted() -> None:
    x, labels = blobs()
    x = np.hstack([x, np.zeros((len(x), 5), dtype=np.float32)])   # 5 dead units
    emb = embed(x, "tsne", **opts("tsne"), seed=0)
    assert emb.info["constant_features"] == 5
    assert knn_accuracy(emb.coords, labels, k=5) == 1.0


def test_prepare_scale_free() -> None:
    x, _ = blobs()
    small = prepare(x.astype(np.float64) * 1e-30, 10, 0).pcs
    large = prepare(x.astype(np.float64) * 1e30, 10, 0).pcs
    np.testing.assert_allclose(small, large, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------- config checks

@pytest.mark.parametrize("tsne, key", [
    ({"backend": "opentsne", "method": "exact"}, "reduce.tsne.method = exact"),
    ({"backend": "sklearn", "method": "fft"}, "reduce.tsne.method = fft"),
    ({"method": "fft", "n_components": 3}, "supports only 2-D"),
])
def test_unsupported_tsne_combinations_are_refused(tsne: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        check_config("tsne", **tsne)


def test_bad_option_is_one_line_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"tsne options: reduce.tsne.perplexity = -1: must be greater than 0"):
        embed(blobs()[0], "tsne", seed=0, perplexity=-1)
    with pytest.raises(ConfigError, match=r"reduce.umap.perplexity: unknown key"):
        embed(blobs()[0], "umap", seed=0, perplexity=30)


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown reduce method 'isomap'; use one of pca, tsne, umap"):
        embed(np.zeros((10, 2)), "isomap", seed=0)


def test_gradient_method_auto_by_size_and_dims() -> None:
    assert tsne_gradient_method(1_999) == "bh"                  # FFT_THRESHOLD, measured
    assert tsne_gradient_method(2_000) == "fft"
    assert tsne_gradient_method(50_000, n_components=3) == "bh"
    assert tsne_gradient_method(50_000, backend="sklearn") == "bh"
    assert tsne_gradient_method(100, method="fft") == "fft"


# --------------------------------------------------------------------------- metrics

def test_metrics_on_perfectly_separated_clusters() -> None:
    x, labels = blobs(n_per=30, k=4, dim=10, spread=0.1)
    coords = x[:, :2].copy()
    coords += np.repeat(np.arange(4), 30)[:, None] * 100.0   # clusters far apart in 2-D too
    assert knn_accuracy(coords, labels) == 1.0
    assert trustworthiness(x, x[:, :10]) == pytest.approx(1.0)
    assert trustworthiness(x, coords) > 0.9
    assert silhouette(coords, labels) > 0.9
    m = map_metrics(x, coords, labels, k=10)
    assert set(m) == {"trustworthiness", "knn_accuracy", "silhouette"}


def test_metrics_on_random_labels_are_near_chance() -> None:
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(1000, 2))
    labels = rng.integers(0, 5, size=1000)
    acc = knn_accuracy(coords, labels)
    assert abs(acc - 0.2) < 0.06
    assert abs(silhouette(coords, labels)) < 0.1
    reference = rng.normal(size=(1000, 10))                  # unrelated to the map
    assert trustworthiness(reference, coords) < 0.6


def test_metrics_undefined_cases() -> None:
    coords = np.random.default_rng(0).normal(size=(20, 2))
    assert knn_accuracy(coords, np.zeros(20, dtype=int)) is None      # one class
    assert silhouette(coords, np.zeros(20, dtype=int)) is None
    assert trustworthiness(coords[:2], coords[:2]) is None            # k would be 0
    singletons = np.arange(20) % 11                                   # classes of 1 member: plain folds
    assert 0.0 <= knn_accuracy(coords, singletons) <= 1.0
    assert set(map_metrics(coords, coords, np.zeros(20, dtype=int))) == {"trustworthiness"}


# --------------------------------------------------------------------------- alignment

def rotation(d: int, seed: int, reflect: bool = False) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    if reflect:
        q[:, 0] *= -1
    return q


@pytest.mark.parametrize("d, reflect", [(2, False), (2, True), (3, False), (3, True)])
def test_procrustes_aligns_a_rotated_copy_back(d: int, reflect: bool) -> None:
    ref = np.random.default_rng(0).normal(size=(50, d))
    moved = ref @ rotation(d, 1, reflect) + np.arange(1, d + 1) * 7.0
    np.testing.assert_allclose(align_procrustes(moved, ref), ref, atol=1e-9)


def test_pca_frames_are_aligned_across_sign_flips_and_rotations() -> None:
    x, _ = blobs(dim=6)
    x = x.astype(np.float64)
    frames = [x, x @ rotation(6, 2), -x, x @ rotation(6, 3, reflect=True)]
    out = embed_frames(frames, "pca", **opts("pca"), seed=0)
    first = out[0].coords
    for emb in out[1:]:
        np.testing.assert_allclose(emb.coords, first, atol=1e-3 * float(np.abs(first).max()))


def test_frames_reuse_the_start_map_and_continue_after_a_bad_frame() -> None:
    x, labels = blobs()
    final = embed(x, "tsne", **opts("tsne"), seed=0)
    bad = x.copy()
    bad[0, 0] = np.nan
    noisy = x + np.random.default_rng(5).normal(scale=0.05, size=x.shape).astype(np.float32)
    out = embed_frames([x, bad, noisy], "tsne", **opts("tsne"), seed=0, start=(x, final.coords))
    assert isinstance(out[0], Embedding) and out[0].info == {"reused": True}
    np.testing.assert_array_equal(out[0].coords, final.coords)
    assert isinstance(out[1], SkipLayer) and "NaN" in str(out[1])
    assert isinstance(out[2], Embedding) and out[2].info["init"] == "previous"
    # from a previous map: no early exaggeration, a shorter budget (frame_options)
    assert out[2].info["early_exaggeration_iter"] == 0 and out[2].info["n_iter"] == min(60, FRAME_TSNE_ITER)
    # started from the previous map: points stay near where they were
    spread = float(np.linalg.norm(final.coords - final.coords.mean(0), axis=1).mean())
    moved = float(np.linalg.norm(out[2].coords - final.coords, axis=1).mean())
    assert moved < 0.25 * spread
    assert knn_accuracy(out[2].coords, labels, k=5) == 1.0


def test_umap_frames_start_from_the_previous_map() -> None:
    x, _ = blobs(seed=4)
    out = embed_frames([x, x * 1.01], "umap", **opts("umap"), seed=0)
    assert out[0].info["init"] == "spectral" and out[1].info["init"] == "previous"
    assert out[0].info["n_epochs"] == 30 and out[1].info["n_epochs"] == min(30, FRAME_UMAP_EPOCHS)
    assert frame_options("umap", {"n_epochs": None})["n_epochs"] == FRAME_UMAP_EPOCHS
    assert frame_options("tsne", {"backend": "sklearn", "early_exaggeration_iter": 30}) == {
        "backend": "sklearn", "early_exaggeration_iter": 30}              # scikit-learn: the full budget
    spread = float(np.linalg.norm(out[0].coords - out[0].coords.mean(0), axis=1).mean())
    assert float(np.linalg.norm(out[1].coords - out[0].coords, axis=1).mean()) < 0.5 * spread


# --------------------------------------------------------------------------- properties

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, width=32)


def _shape(max_n: int):
    return st.tuples(st.integers(MIN_POINTS, max_n), st.integers(1, 6))


def _is_constant(x: np.ndarray) -> bool:
    x = x.astype(np.float64)
    scale = float(np.abs(x).max())
    return scale == 0.0 or float((x / scale).std(axis=0).max()) < 1e-6


def _check_property(x: np.ndarray, method: str, d: int) -> None:
    try:
        emb = embed(x, method, **opts(method, **{method: {"n_components": d}}), seed=0)
    except SkipLayer as exc:
        assert _is_constant(x), f"skipped a non-constant input: {exc}"
        assert "constant layer" in str(exc)
        return
    assert not _is_constant(x)
    assert emb.coords.shape == (len(x), d)
    assert np.isfinite(emb.coords).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=_shape(40).flatmap(lambda s: arrays(np.float32, s, elements=finite)), d=st.sampled_from([2, 3]))
def test_property_pca_gives_finite_coords(x: np.ndarray, d: int) -> None:
    _check_property(x, "pca", d)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=_shape(40).flatmap(lambda s: arrays(np.float32, s, elements=finite)), d=st.sampled_from([2, 3]))
def test_property_tsne_gives_finite_coords(x: np.ndarray, d: int) -> None:
    _check_property(x, "tsne", d)


# --------------------------------------------------------------------------- exact neighbours (UMAP / openTSNE graph)

def test_exact_knn_is_exact_with_the_point_itself_first() -> None:
    from scipy.spatial.distance import cdist

    from pipeline.reducers import exact_knn

    x = np.random.default_rng(3).normal(size=(300, 8)).astype(np.float32)
    idx, dist = exact_knn(x, 10)
    assert idx.shape == dist.shape == (300, 10) and idx.dtype == np.int64 and dist.dtype == np.float32
    assert (idx[:, 0] == np.arange(300)).all() and (dist[:, 0] == 0).all()
    full = cdist(x.astype(np.float64), x.astype(np.float64))
    np.fill_diagonal(full, np.inf)
    truth = np.sort(full, axis=1)[:, :9]
    assert np.allclose(dist[:, 1:], truth, atol=1e-4)                    # the 9 nearest others, nearest first
    assert np.allclose(full[np.arange(300)[:, None], idx[:, 1:]], truth, atol=1e-4)
    cos_idx, _ = exact_knn(x, 5, metric="cosine")
    assert (cos_idx[:, 0] == np.arange(300)).all()
