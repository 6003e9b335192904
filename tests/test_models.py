"""Classifier families: shapes for 1x28x28 and 3x32x32, readable layer names, kernel limits."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.errors import ConfigError
from pipeline.models import build_model, describe_layers, load_weights_into, save_model
from pipeline.errors import UserError

SHAPES = [(1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", ["lenet", "cnn", "mlp", "linear"])
def test_logits_shape_for_every_arch_and_input(arch, shape):
    model = build_model(ModelConfig(arch=arch), shape, 10)
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, 10)
    names = [n for n, _ in model.named_layers()]
    assert names[-1] == "logits" and len(set(names)) == len(names)


def test_lenet_is_the_classic_layout():
    model = build_model(ModelConfig(arch="lenet"), (1, 28, 28), 10)
    layers = {row["name"]: row for row in describe_layers(model, (1, 28, 28))}
    assert [n for n, _ in model.named_layers()] == [
        "conv1", "act1", "pool1", "conv2", "act2", "pool2", "flatten", "fc1", "act3", "fc2", "act4", "logits"]
    assert layers["conv1"]["shape"] == [6, 28, 28]          # padding 2 keeps 28x28
    assert layers["pool1"]["type"] == "AvgPool2d"            # subsampling, not max
    assert layers["pool2"]["shape"] == [16, 5, 5]
    assert layers["fc1"]["shape"] == [120] and layers["fc2"]["shape"] == [84]
    assert layers["act1"]["type"] == "Tanh"
    assert sum(p.numel() for p in model.parameters()) == 61706


def test_filters_sets_first_conv_for_every_conv_arch():
    for arch in ("lenet", "cnn"):
        model = build_model(ModelConfig(arch=arch, filters=8), (1, 28, 28), 10)
        assert dict(model.named_layers())["conv1"].out_channels == 8


@pytest.mark.parametrize("kernel", [1, 3, 4, 27, 28])
def test_cnn_kernel_up_to_whole_image(kernel):
    model = build_model(ModelConfig(arch="cnn", kernel_size=kernel), (1, 28, 28), 10)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert dict(model.named_layers())["conv1"].kernel_size == (kernel, kernel)


def test_cnn_valid_padding_whole_image_kernel_with_one_block():
    model = build_model(ModelConfig(arch="cnn", kernel_size=28, padding="valid", conv_blocks=1), (1, 28, 28), 10)
    assert [row["shape"] for row in describe_layers(model, (1, 28, 28)) if row["name"] == "conv1"] == [[6, 1, 1]]


def test_cnn_options_batch_norm_dropout_avg_pool():
    cfg = ModelConfig(arch="cnn", batch_norm=True, dropout=0.3, pool="avg", conv_blocks=3, hidden=[32, 16])
    model = build_model(cfg, (3, 32, 32), 10)
    names = [n for n, _ in model.named_layers()]
    assert "bn1" in names and "pool3" in names and "fc2" in names
    assert not any(n.startswith("drop") for n in names)      # identity at inference: not extracted
    assert any(isinstance(m, torch.nn.Dropout) for m in model.modules())


@pytest.mark.parametrize("arch", ["lenet", "cnn"])
def test_kernel_larger_than_image_is_a_config_error(arch):
    with pytest.raises(ConfigError, match=r"model.kernel_size = 30 is larger than the 28x28 input; use at most 28"):
        build_model(ModelConfig(arch=arch, kernel_size=30), (1, 28, 28), 10)


def test_valid_padding_that_leaves_no_map_names_the_fix():
    with pytest.raises(ConfigError, match="use model.conv_blocks = 1 or model.padding = same"):
        build_model(ModelConfig(arch="cnn", kernel_size=20, padding="valid"), (1, 28, 28), 10)


def test_lenet_kernel_too_large_for_second_conv():
    with pytest.raises(ConfigError, match="use arch=cnn for larger kernels"):
        build_model(ModelConfig(arch="lenet", kernel_size=20), (1, 28, 28), 10)


def test_linear_weight_rows_are_images():
    model = build_model(ModelConfig(arch="linear"), (1, 28, 28), 10)
    assert dict(model.named_layers())["logits"].weight.shape == (10, 784)


def test_weights_round_trip_and_mismatch_names_first_tensor(tmp_path):
    model = build_model(ModelConfig(arch="lenet"), (1, 28, 28), 10)
    save_model(tmp_path, model, {"arch": "lenet"})
    other = build_model(ModelConfig(arch="lenet"), (1, 28, 28), 10)
    load_weights_into(other, tmp_path / "model.safetensors")
    assert torch.equal(other.state_dict()["layers.conv1.weight"], model.state_dict()["layers.conv1.weight"])
    wide = build_model(ModelConfig(arch="lenet", filters=8), (1, 28, 28), 10)
    with pytest.raises(UserError, match=r"tensor 'layers.conv1.weight' has shape \(6, 1, 5, 5\), the model expects \(8, 1, 5, 5\)"):
        load_weights_into(wide, tmp_path / "model.safetensors")


def test_cnn_stride_two_without_pooling_halves_every_block():
    cfg = ModelConfig(arch="cnn", stride=2, pool="none", kernel_size=3, conv_blocks=3)
    model = build_model(cfg, (1, 28, 28), 10)
    shapes = {row["name"]: row["shape"] for row in describe_layers(model, (1, 28, 28))}
    assert shapes["conv1"] == [6, 14, 14] and shapes["conv2"] == [12, 7, 7] and shapes["conv3"] == [24, 4, 4]
    assert not any(name.startswith("pool") for name in shapes)
    assert dict(model.named_layers())["conv2"].stride == (2, 2)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    valid = build_model(ModelConfig(arch="cnn", stride=2, pool="none", padding="valid", conv_blocks=2),
                        (1, 28, 28), 10)
    shapes = {row["name"]: row["shape"] for row in describe_layers(valid, (1, 28, 28))}
    assert shapes["conv1"] == [6, 12, 12] and shapes["conv2"] == [12, 4, 4]        # (28-5)//2+1, (12-5)//2+1


def test_cnn_large_stride_shrinks_to_one_pixel_not_below():
    model = build_model(ModelConfig(arch="cnn", stride=8, pool="max", kernel_size=3), (1, 28, 28), 10)
    shapes = {row["name"]: row["shape"] for row in describe_layers(model, (1, 28, 28))}
    assert shapes["conv1"] == [6, 4, 4] and shapes["conv2"] == [12, 1, 1]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_lenet_conv2_width_from_params():
    model = build_model(ModelConfig(arch="lenet", conv2_filters=32), (1, 28, 28), 10)
    shapes = {row["name"]: row["shape"] for row in describe_layers(model, (1, 28, 28))}
    assert shapes["conv2"] == [32, 10, 10] and shapes["pool2"] == [32, 5, 5]
    assert dict(model.named_layers())["fc1"].in_features == 32 * 5 * 5
