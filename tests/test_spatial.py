"""extract.spatial: which maps are pooled, the stored shapes, and pooled values against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import ModelConfig
from pipeline.models import build_model
from pipeline.runtime import normalizer
from pipeline.spatial import pool_numpy, pooling_for, stored_shape


@pytest.mark.parametrize("shape, spatial, expected", [
    ((6, 28, 28), "auto", "flatten"),            # LeNet conv1: 4,704 values, kept whole
    ((64, 28, 28), "auto", "mean"),              # a ResNet-18 block at 28 px: 50,176 values
    ((128, 128), "auto", "flatten"),             # 16,384: not above the threshold
    ((512,), "auto", "flatten"), ((512,), "max", "flatten"),      # not a map
    ((512, 1, 1), "mean", "flatten"),            # a 1x1 map: pooling changes nothing
    ((16, 5, 5), "max", "max"), ((16, 5, 5), "mean", "mean"), ((64, 28, 28), "flatten", "flatten"),
])
def test_pooling_for(shape, spatial, expected) -> None:
    assert pooling_for(shape, spatial, 16384) == expected
    assert stored_shape(shape, expected) == (shape if expected == "flatten" else (shape[0],))


def _record(model, images, layers, pooling, dims):
    from pipeline.activations import record_activations

    sinks = {name: np.zeros((len(images), dim), np.float32) for name, dim in dims.items()}
    record_activations(model, images, normalizer([0.5], [0.25], "cpu"), layers, sinks, batch_size=7,
                       pooling=pooling)
    return sinks


def test_pooled_values_match_numpy() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="lenet"), (1, 28, 28), 10).eval()
    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    layers = ["input", "conv1", "act1", "pool2", "fc1"]
    whole = _record(model, images, layers, None,
                    {"input": 784, "conv1": 4704, "act1": 4704, "pool2": 400, "fc1": 120})
    pooled = _record(model, images, layers, {"conv1": "mean", "act1": "max", "pool2": "mean"},
                     {"input": 784, "conv1": 6, "act1": 6, "pool2": 16, "fc1": 120})
    maps = {name: whole[name].reshape(20, *shape) for name, shape in
            (("conv1", (6, 28, 28)), ("act1", (6, 28, 28)), ("pool2", (16, 5, 5)))}
    np.testing.assert_allclose(pooled["conv1"], maps["conv1"].mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled["act1"], maps["act1"].max(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_allclose(pooled["pool2"], pool_numpy(maps["pool2"], "mean"), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pooled["fc1"], whole["fc1"])
    np.testing.assert_array_equal(pooled["input"], whole["input"])


def test_output_taken_before_a_later_in_place_op() -> None:
    """A conv followed by ReLU(inplace=True), as in torchvision models: the conv's recorded output
    keeps its negative values (it is copied when the hook runs, not after the forward pass)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3)).eval()
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    sinks = _record(model, images, [("conv", model[0])], None, {"conv": 256})
    x = (images.float() / 255 - 0.5) / 0.25
    expected = model[0](x).detach().reshape(5, -1).numpy()
    assert (expected < 0).any()
    np.testing.assert_allclose(sinks["conv"], expected, rtol=1e-5, atol=1e-6)
