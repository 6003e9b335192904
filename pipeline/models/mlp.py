"""Multi-layer perceptron and linear softmax regression on the pixels."""

from __future__ import annotations

import math

from torch import nn

from pipeline.config import ModelConfig
from pipeline.models.common import Classifier, make_activation


def build_mlp(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> Classifier:
    act = cfg.activation or "relu"
    width = math.prod(input_shape)
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]   # (B, C*H*W)
    for i, size in enumerate(cfg.hidden if cfg.hidden is not None else [256, 128], start=1):
        layers += [(f"fc{i}", nn.Linear(width, size)), (f"act{i}", make_activation(act))]
        if cfg.dropout:
            layers.append((f"drop{i}", nn.Dropout(cfg.dropout)))
        width = size
    layers.append(("logits", nn.Linear(width, n_classes)))
    return Classifier(layers)


def build_linear(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> Classifier:
    """Softmax regression: logits = W x + b; the rows of W are the "weight images"."""
    return Classifier([("flatten", nn.Flatten()), ("logits", nn.Linear(math.prod(input_shape), n_classes))])
