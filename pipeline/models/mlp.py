"""Multi-layer perceptron and linear softmax regression on the pixels."""

from __future__ import annotations

import math

from torch import nn

from pipeline.config import ModelConfig
from pipeline.errors import ConfigError
from pipeline.models.common import Classifier, dense_head


def build_mlp(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> Classifier:
    act = cfg.activation or "relu"
    hidden = cfg.hidden if cfg.hidden is not None else [256, 128]
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]   # (B, C*H*W)
    layers += dense_head(math.prod(input_shape), hidden, n_classes, act, cfg.dropout, first_act=1)
    return Classifier(layers)


def build_linear(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> Classifier:
    """Softmax regression: logits = W x + b; the rows of W are the "weight images"."""
    if cfg.hidden:
        raise ConfigError(f"model.hidden = {cfg.hidden}: arch linear (softmax regression) has no hidden layers; "
                          f"set model.hidden: null, or use arch: mlp for dense hidden layers")
    return Classifier([("flatten", nn.Flatten()), ("logits", nn.Linear(math.prod(input_shape), n_classes))])
