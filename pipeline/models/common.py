"""Pieces shared by the model families: activations, shape arithmetic, the base classes."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

from pipeline.errors import ConfigError

__all__ = ["Network", "Classifier", "make_activation", "conv_out", "check_kernel", "dense_head", "eval_mode"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, back in the mode it was found in afterwards
    (also when the block raises): the caller's model is left as found."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU,
}


def make_activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


def conv_out(size: int, kernel: int, padding: int, stride: int = 1) -> int:
    """Output side of a convolution or pooling: floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def check_kernel(kernel: int, side: int, where: str, fix: str) -> None:
    if kernel > side:
        raise ConfigError(f"model.kernel_size = {kernel} is larger than the {side}x{side} {where}; {fix}")


def dense_head(width: int, hidden: list[int], n_classes: int, act: str, dropout: float,
               first_act: int) -> list[tuple[str, nn.Module]]:
    """fc1, act<first_act>, [drop_fc1], fc2, ... then ``logits``: the dense end of every classifier."""
    layers: list[tuple[str, nn.Module]] = []
    for j, size in enumerate(hidden, start=1):
        layers += [(f"fc{j}", nn.Linear(width, size)), (f"act{first_act + j - 1}", make_activation(act))]
        if dropout:
            layers.append((f"drop_fc{j}", nn.Dropout(dropout)))
        width = size
    layers.append(("logits", nn.Linear(width, n_classes)))
    return layers


class Network(nn.Module):
    """Base of every model: an ordered list of named layers that extract can hook.

    ``task`` is "classify" (forward returns logits (B, K)) or "reconstruct" (forward returns the
    reconstruction (B, C, H, W) in normalised units); ``output_layer`` names the last layer.
    """

    task: str = "classify"
    output_layer: str = "logits"

    def named_layers(self) -> list[tuple[str, nn.Module]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, *, noise: float = 0.0, noise_kind: str = "masking",
                   kl_weight: float = 1.0, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-batch means: ``loss`` (what training minimises) plus statistics to log.

        ``x`` is the normalised batch (B, C, H, W), ``y`` the labels (B,). In training mode the
        model may corrupt its input (denoising with ``noise``, ``noise_kind``, drawn from
        ``generator``); in eval mode it must not. ``kl_weight`` weighs a VAE's KL term.
        Classifiers ignore the three.
        """
        raise NotImplementedError  # pragma: no cover - abstract


class Classifier(Network):
    """A feed-forward classifier: ``layers`` is an nn.Sequential of readable names.

    Dropout layers are kept out of ``named_layers`` (they are the identity at inference).
    """

    task = "classify"
    output_layer = "logits"

    def __init__(self, layers: Iterable[tuple[str, nn.Module]]):
        super().__init__()
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, n_classes)
        return self.layers(x)

    def named_layers(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.layers.named_children() if not isinstance(m, nn.Dropout)]

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, *, noise: float = 0.0, noise_kind: str = "masking",
                   kl_weight: float = 1.0, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        logits = self(x)                                            # (B, n_classes)
        loss = nn.functional.cross_entropy(logits, y)
        accuracy = (logits.argmax(dim=1) == y).double().mean()
        return {"loss": loss, "accuracy": accuracy}
