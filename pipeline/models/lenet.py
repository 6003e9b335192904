"""LeNet-5 (LeCun et al., 1998) with average-pool "subsampling".

conv 5x5 (6) -> avg-pool 2 -> conv 5x5 (16) -> avg-pool 2 -> fc 120 -> fc 84 -> fc n_classes,
tanh by default. ``model.filters`` sets the first conv's filter count, ``model.conv2_filters``
the second's and ``model.kernel_size`` both kernels; inputs of up to 28 px get padding k//2 on the first conv (the classic 28x28 setup),
larger ones none (the classic 32x32 setup).
"""

from __future__ import annotations

from torch import nn

from pipeline.config import ModelConfig
from pipeline.errors import ConfigError
from pipeline.models.common import Classifier, check_kernel, conv_out, dense_head, make_activation


def build_lenet(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> Classifier:
    c, h, w = input_shape
    side = min(h, w)
    k = cfg.kernel_size
    act = cfg.activation or "tanh"
    check_kernel(k, side, "input", f"use at most {side}")
    pad1 = k // 2 if side <= 28 else 0
    s1 = conv_out(side, k, pad1) // 2                    # after conv1 + pool1
    check_kernel(k, s1, "map after pool1", f"LeNet needs kernel_size <= {s1}; use arch=cnn for larger kernels")
    s2 = conv_out(s1, k, 0) // 2                         # after conv2 + pool2
    if s2 < 1:
        raise ConfigError(f"model.kernel_size = {k} leaves no map after pool2 of LeNet; use a smaller kernel")
    hidden = cfg.hidden if cfg.hidden is not None else [120, 84]     # []: conv features straight to the logits
    layers: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(c, cfg.filters, k, padding=pad1)),   # (B, F, s, s)
        ("act1", make_activation(act)),
        ("pool1", nn.AvgPool2d(2)),
        ("conv2", nn.Conv2d(cfg.filters, cfg.conv2_filters, k)),
        ("act2", make_activation(act)),
        ("pool2", nn.AvgPool2d(2)),                                # (B, conv2_filters, s2, s2)
        ("flatten", nn.Flatten()),
    ]
    layers += dense_head(cfg.conv2_filters * s2 * s2, hidden, n_classes, act, cfg.dropout, first_act=3)
    return Classifier(layers)

