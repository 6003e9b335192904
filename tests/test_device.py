"""Device placement: code that runs next to a model on cuda / mps must not create CPU tensors.

No GPU here: the ``meta`` device stands in for one (it has shapes but no data, and refuses to
mix with CPU tensors exactly as cuda does).
"""

from __future__ import annotations

import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.models import build_model, describe_layers
from pipeline.runtime import normalizer


@pytest.mark.parametrize("arch, shape", [("lenet", (1, 28, 28)), ("cnn", (3, 32, 32)), ("mlp", (1, 28, 28)),
                                         ("ae", (1, 28, 28)), ("conv_ae", (1, 28, 28))])
def test_describe_layers_on_the_models_device(arch: str, shape: tuple[int, int, int]) -> None:
    """train and extract describe the model after moving it to train.device."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch), shape, 10)
    on_cpu = describe_layers(model, shape)
    model.to("meta")
    assert describe_layers(model, shape) == on_cpu
    assert next(model.parameters()).device.type == "meta"        # left where it was


def test_normalizer_output_is_on_the_device() -> None:
    normalize = normalizer([0.5], [0.25], torch.device("meta"))
    out = normalize(torch.zeros((2, 1, 4, 4), dtype=torch.uint8))   # uint8 batches come from the CPU
    assert out.device.type == "meta" and out.dtype == torch.float32 and out.shape == (2, 1, 4, 4)
