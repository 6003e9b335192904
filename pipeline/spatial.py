"""``extract.spatial``: how a convolutional map (C, H, W) is stored, whole or pooled per channel.

``flatten`` keeps every value (C*H*W per image); ``mean`` / ``max`` pool each channel over its
H x W positions (C values per image); ``auto`` pools with the mean when a map holds more than
``pool_above`` values per image (default 16,384: every layer of LeNet and of the default CNN stays
whole, while a ResNet-18 block at 28-32 px, 50,176-65,536 values, is pooled) and keeps it whole
otherwise. Layers that are not maps (C,) are always stored as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["pooling_for", "stored_shape", "pool_rows", "pool_numpy", "describe"]


def pooling_for(shape: Sequence[int], spatial: str, pool_above: int) -> str:
    """``flatten``, ``mean`` or ``max`` for a layer whose output (without the batch axis) is ``shape``."""
    if len(shape) < 2 or int(np.prod(shape[1:])) <= 1:
        return "flatten"                                # not a map (or a 1x1 map: pooling changes nothing)
    if spatial == "auto":
        return "mean" if int(np.prod(shape)) > pool_above else "flatten"
    return spatial


def stored_shape(shape: Sequence[int], pooling: str) -> tuple[int, ...]:
    """The shape of one image's stored values: the map itself, or (C,) when pooled."""
    return tuple(int(s) for s in shape) if pooling == "flatten" else (int(shape[0]),)


def pool_rows(output: "torch.Tensor", pooling: str) -> "torch.Tensor":
    """A batch of layer outputs (B, C, *spatial) as stored rows: (B, C*H*W) or (B, C) pooled, float32."""
    rows = output.reshape(len(output), -1) if pooling == "flatten" else output.flatten(2)
    if pooling == "mean":
        rows = rows.float().mean(dim=2)
    elif pooling == "max":
        rows = rows.amax(dim=2)
    return rows.float()


def pool_numpy(maps: np.ndarray, pooling: str) -> np.ndarray:
    """Reference implementation on (N, C, *spatial) arrays: (N, C*H*W) flattened or (N, C) pooled."""
    n = len(maps)
    if pooling == "flatten":
        return maps.reshape(n, -1)
    flat = maps.reshape(n, maps.shape[1], -1)
    return flat.mean(axis=2) if pooling == "mean" else flat.max(axis=2)


def describe(pooling: str) -> str:
    """A short note for figure titles: '' for flattened layers, 'mean-pooled' / 'max-pooled' otherwise."""
    return "" if pooling == "flatten" else f"{pooling}-pooled"
