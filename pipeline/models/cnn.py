"""Configurable CNN: ``conv_blocks`` blocks of conv -> [batch norm] -> activation -> [pool], then dense.

Block i has ``filters * growth**i`` filters. ``stride`` > 1 makes every conv downsample by itself
(with ``pool: none``, the all-convolutional "stride-2, no pooling" nets); with ``padding: same``
a strided conv pads ``(k - 1) // 2`` and its map side becomes ``ceil(side / stride)`` for odd k. ``kernel_size`` may be anything up to the whole
image (e.g. 28): with ``padding: same`` the first block uses it as given and later blocks use
``min(kernel_size, map side)``; with ``padding: valid`` every block must fit its input map.
"""

from __future__ import annotations

from torch import nn

from pipeline.config import ModelConfig
from pipeline.errors import ConfigError
from pipeline.models.common import Classifier, check_kernel, conv_out, dense_head, make_activation


def build_cnn(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> Classifier:
    c, h, w = input_shape
    side = min(h, w)
    act = cfg.activation or "relu"
    check_kernel(cfg.kernel_size, side, "input", f"use at most {side}")
    layers: list[tuple[str, nn.Module]] = []
    in_ch, size_h, size_w = c, h, w
    stride = cfg.stride
    for i in range(cfg.conv_blocks):
        out_ch = max(1, round(cfg.filters * cfg.growth ** i))
        n = i + 1
        if cfg.padding == "same":
            k = cfg.kernel_size if i == 0 else min(cfg.kernel_size, size_h, size_w)
            if stride == 1:
                conv = nn.Conv2d(in_ch, out_ch, k, padding="same")
            else:                                               # torch has no padding="same" for stride > 1
                pad = (k - 1) // 2
                conv = nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=pad)
                size_h, size_w = conv_out(size_h, k, pad, stride), conv_out(size_w, k, pad, stride)
        else:
            k = cfg.kernel_size
            if k > min(size_h, size_w):
                raise ConfigError(
                    f"model.kernel_size = {k} does not fit the {size_h}x{size_w} map before conv block {n} "
                    f"with padding=valid; use model.conv_blocks = {i} or model.padding = same")
            conv = nn.Conv2d(in_ch, out_ch, k, stride=stride)
            size_h, size_w = conv_out(size_h, k, 0, stride), conv_out(size_w, k, 0, stride)
        layers.append((f"conv{n}", conv))                       # (B, out_ch, size_h, size_w)
        if cfg.batch_norm:
            layers.append((f"bn{n}", nn.BatchNorm2d(out_ch)))
        layers.append((f"act{n}", make_activation(act)))
        if cfg.pool != "none" and min(size_h, size_w) >= 2:
            layers.append((f"pool{n}", nn.MaxPool2d(2) if cfg.pool == "max" else nn.AvgPool2d(2)))
            size_h, size_w = size_h // 2, size_w // 2
        if cfg.dropout:
            layers.append((f"drop{n}", nn.Dropout(cfg.dropout)))
        in_ch = out_ch
    layers.append(("flatten", nn.Flatten()))
    hidden = cfg.hidden if cfg.hidden is not None else [128]
    layers += dense_head(in_ch * size_h * size_w, hidden, n_classes, act, cfg.dropout, first_act=cfg.conv_blocks + 1)
    return Classifier(layers)
