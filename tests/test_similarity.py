"""Linear CKA (pipeline.similarity) against its defining properties and an independent reference."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.similarity import best_matches, center, cka_matrix, linear_cka, normalized_gram


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Straight from the paper: HSIC(K, L) = tr(K H L H) / (n-1)^2 with an explicit centring
    matrix H = I - 11^T/n, and CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h)) / (n - 1) ** 2

    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def _random(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _rotation(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(_random((d, d), seed))
    return q * np.sign(np.diag(r))                      # a proper random orthogonal matrix


# (n, d1, d2): features narrower than samples (feature form), wider (Gram form), mixed
SHAPES = [(60, 5, 8), (40, 70, 90), (50, 3, 120), (30, 30, 30)]


@pytest.mark.parametrize("n,d1,d2", SHAPES)
def test_matches_reference_implementation(n: int, d1: int, d2: int) -> None:
    rng = np.random.default_rng(n + d1 + d2)
    x = rng.standard_normal((n, d1)) + 3.0                       # uncentred on purpose
    # y partly a function of x, so the value is neither ~0 nor ~1
    y = np.tanh(x[:, : min(d1, d2)] @ rng.standard_normal((min(d1, d2), d2))) + 0.5 * rng.standard_normal((n, d2))
    expected = reference_cka(x, y)
    assert 0.05 < expected < 0.99
    assert linear_cka(x, y) == pytest.approx(expected, abs=1e-8)
    assert cka_matrix([x], [y])[0, 0] == pytest.approx(expected, abs=1e-8)


def test_float32_input_is_computed_in_float64() -> None:
    x = _random((80, 40), 1).astype(np.float32)
    y = (x @ _random((40, 30), 2).astype(np.float32) + 0.1 * _random((80, 30), 3).astype(np.float32))
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), abs=1e-8)


def test_same_matrix_is_one() -> None:
    x = _random((50, 20), 4)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x.copy() + 7.0) == pytest.approx(1.0, abs=1e-12)      # a shift is removed by centring
    wide = _random((20, 300), 5)
    assert linear_cka(wide, wide) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("d", [6, 64])
def test_invariant_to_orthogonal_transform_and_isotropic_scaling(d: int) -> None:
    x, y = _random((40, d), 6), _random((40, 12), 7)
    y = y + x[:, :12] if d >= 12 else y
    base = linear_cka(x, y)
    q = _rotation(d, 8)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x @ q * 250.0, y) == pytest.approx(base, abs=1e-10)


def test_not_invariant_to_anisotropic_scaling() -> None:
    # the test above could not fail if CKA ignored the features entirely; this one shows it does not
    x, y = _random((60, 5), 9), _random((60, 5), 10)
    y = y + x
    scaled = x * np.array([100.0, 1.0, 1.0, 1.0, 1.0])
    assert abs(linear_cka(scaled, y) - linear_cka(x, y)) > 0.05


def test_symmetric_and_in_unit_interval() -> None:
    rng = np.random.default_rng(11)
    values = []
    for trial in range(20):
        n = int(rng.integers(5, 60))
        x = rng.standard_normal((n, int(rng.integers(1, 50)))) * rng.uniform(0.01, 100)
        y = rng.standard_normal((n, int(rng.integers(1, 50)))) + (x[:, :1] if trial % 2 else 0)
        a, b = linear_cka(x, y), linear_cka(y, x)
        assert a == pytest.approx(b, abs=1e-12)
        assert 0.0 <= a <= 1.0
        values.append(a)
    assert max(values) - min(values) > 0.1                        # the range was actually explored


def test_independent_random_matrices_are_dissimilar() -> None:
    # n >> d: the biased estimator of independent representations is ~ d1 d2 / n-ish, small
    x, y = _random((2000, 10), 12), _random((2000, 10), 13)
    assert linear_cka(x, y) < 0.2
    # and a linear function of x is recognised whatever its rotation
    assert linear_cka(x, x @ _rotation(10, 14)) > 0.999


def test_matrix_matches_pairwise_values_and_chunking() -> None:
    rng = np.random.default_rng(15)
    base = rng.standard_normal((45, 8))
    xs = [base, np.tanh(base @ rng.standard_normal((8, 30))), rng.standard_normal((45, 100))]
    ys = [base @ _rotation(8, 16), rng.standard_normal((45, 3)), np.maximum(base, 0), base[:, :2]]
    expected = np.array([[reference_cka(x, y) for y in ys] for x in xs])
    full = cka_matrix(xs, ys)
    assert full.shape == (3, 4)
    np.testing.assert_allclose(full, expected, atol=1e-8)
    # a budget of two Gram matrices forces one y per chunk: same values
    ticks = []
    tiny = cka_matrix(xs, ys, budget_bytes=2 * 45 * 45 * 8, on_layer=lambda: ticks.append(1))
    np.testing.assert_allclose(tiny, expected, atol=1e-8)
    assert len(ticks) == len(ys) + len(xs) * len(ys)            # x Grams recomputed once per chunk
    np.testing.assert_allclose(cka_matrix(ys, xs), expected.T, atol=1e-12)


def test_undefined_for_constant_or_non_finite_layers() -> None:
    x = _random((30, 4), 17)
    constant = np.full((30, 6), 0.37, dtype=np.float32)          # a dead layer: rounding noise only
    assert np.isnan(linear_cka(x, constant))
    assert np.isnan(linear_cka(np.zeros((30, 3)), x))
    bad = x.copy()
    bad[3, 1] = np.nan
    assert np.isnan(linear_cka(bad, x))
    assert normalized_gram(constant) is None
    m = cka_matrix([x, constant], [x, bad])
    assert m[0, 0] == pytest.approx(1.0)
    assert np.isnan(m[0, 1]) and np.isnan(m[1, 0]) and np.isnan(m[1, 1])


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(ValueError, match="same 5 samples"):
        cka_matrix([np.ones((5, 2))], [np.ones((4, 2))])
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        linear_cka(np.ones((5, 2, 2)), np.ones((5, 2)))
    # 1-D input is one feature per sample
    v = _random((20, 1), 18)
    assert linear_cka(v[:, 0], 2 * v) == pytest.approx(1.0)


def test_center_and_normalized_gram() -> None:
    x = _random((12, 5), 19) + 4
    c = center(x)
    assert c.dtype == np.float64
    np.testing.assert_allclose(c.mean(axis=0), 0, atol=1e-12)
    g = normalized_gram(x)
    assert g.shape == (12, 12)
    assert np.linalg.norm(g) == pytest.approx(1.0)
    np.testing.assert_allclose(g.sum(axis=0), 0, atol=1e-12)      # doubly centred


def test_best_matches() -> None:
    m = np.array([[0.2, 0.9, 0.1], [np.nan, np.nan, np.nan], [0.5, np.nan, 0.7]])
    assert best_matches(m).tolist() == [1, -1, 2]
