"""Redundant filters: weight correlation, shift-tolerant activation correlation, per-layer numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.redundancy import activation_correlations, filter_correlations, redundancy_summary


def _maps(weights: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(n, F, H', W') valid convolution outputs (no bias), as a conv layer computes them."""
    return torch.nn.functional.conv2d(torch.from_numpy(images), torch.from_numpy(weights)).numpy()


def test_no_shift_equals_numpy_corrcoef_of_the_flattened_channel_maps():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(30, 4, 6, 6))
    maps[:, 3] = 2.0 * maps[:, 1] - 1.0                       # an exact (scaled) copy
    centred = maps - maps.mean(axis=0)                        # less each channel's mean map over the images
    ref = np.corrcoef(np.moveaxis(centred, 1, 0).reshape(4, -1))
    np.testing.assert_allclose(activation_correlations(maps, max_shift=0), ref, atol=1e-10)
    flat = maps.reshape(30, -1).astype(np.float32)            # as extract stores it
    np.testing.assert_allclose(activation_correlations(flat, (4, 6, 6), max_shift=0), ref, atol=1e-5)


def test_a_shifted_duplicate_is_missed_by_the_weights_and_caught_by_the_activations():
    rng = np.random.default_rng(1)
    base = np.zeros((5, 5))
    base[1:4, 1:4] = rng.normal(size=(3, 3))
    shifted = np.roll(base, 1, axis=1)                        # the same 3x3 pattern one pixel to the right
    other = rng.normal(size=(5, 5))
    weights = np.stack([base, shifted, other])[:, None].astype(np.float32)      # (3, 1, 5, 5)
    images = rng.normal(size=(40, 1, 16, 16)).astype(np.float32)
    weight_corr = filter_correlations(weights)
    assert abs(weight_corr[0, 1]) < 0.6                       # the weights do not line up
    maps = _maps(weights, images)
    act0 = activation_correlations(maps, max_shift=0)
    act1 = activation_correlations(maps, max_shift=1)
    assert abs(act0[0, 1]) < 0.6                              # nor do the maps without a shift
    assert act1[0, 1] == pytest.approx(1.0, abs=1e-9) and act1[1, 0] == act1[0, 1]
    assert abs(act1[0, 2]) < 0.6 and np.allclose(np.diag(act1), 1.0)


def test_sign_flip_and_constant_channel():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(20, 3, 5, 5))
    maps[:, 1] = -maps[:, 0]
    maps[:, 2] = 0.7                                          # dead channel
    corr = activation_correlations(maps, max_shift=1)
    assert corr[0, 1] == pytest.approx(-1.0)
    assert corr[2, 0] == 0.0 and corr[0, 2] == 0.0 and corr[2, 2] == 1.0
    with pytest.raises(ValueError, match="expected maps"):
        activation_correlations(rng.normal(size=(5, 10)))


def test_redundancy_summary_counts_partners_by_either_measure():
    w = np.eye(4)
    w[0, 1] = w[1, 0] = 0.95                                  # 0~1 by weights
    a = np.eye(4)
    a[2, 3] = a[3, 2] = -0.92                                 # 2~3 by activations (sign-flipped)
    a[0, 2] = a[2, 0] = 0.5
    out = redundancy_summary(0.9, weight_corr=w, activation_corr=a)
    assert out["filters"] == 4 and out["weight_pairs"] == 1 and out["activation_pairs"] == 1
    assert out["redundant_fraction"] == 1.0
    assert out["weight_mean_max_correlation"] == pytest.approx((0.95 + 0.95 + 0 + 0) / 4)
    assert out["activation_mean_max_correlation"] == pytest.approx((0.5 + 0 + 0.92 + 0.92) / 4)
    only = redundancy_summary(0.9, weight_corr=w)
    assert only["redundant_fraction"] == 0.5 and "activation_pairs" not in only
    with pytest.raises(ValueError):
        redundancy_summary(0.9)
