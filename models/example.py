"""An example factory for `model.arch: custom` (see README.md in this folder).

    model:
      arch: custom
      factory: "models.example:small_resnet"
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """conv-bn-relu-conv-bn plus the input, then relu."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + x)


def small_resnet(input_shape: tuple[int, int, int], n_classes: int, width: int = 16) -> nn.Module:
    """Stem conv, two residual stages (the second at half resolution), global average pool, linear."""
    channels = input_shape[0]
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()),
        Residual(width),
        nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width),
                      nn.ReLU()),
        Residual(2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, n_classes),
    )
