"""Training options as plain functions: the optimizer, the learning-rate schedule, batch augmentation.

Augmentation works on a whole batch of uint8 images (B, C, H, W) on the training device, by
indexing: no per-image PIL transforms, no DataLoader, so training keeps its in-memory speed. The
random numbers come from the training generator (CPU), so a run is repeatable.
"""

from __future__ import annotations

from typing import Iterable

import torch

__all__ = ["make_optimizer", "make_schedule", "augment_batch"]


def make_optimizer(parameters: Iterable[torch.nn.Parameter], name: str, *, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9, nesterov: bool = False) -> torch.optim.Optimizer:
    """``adam`` (Adam, L2 as weight decay) or ``sgd`` (with ``momentum`` and optional ``nesterov``)."""
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def make_schedule(optimizer: torch.optim.Optimizer, kind: str, *, epochs: int, step_size: int = 10,
                  gamma: float = 0.1) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A schedule stepped once per epoch: ``cosine`` (from lr to 0 over ``epochs``), ``step`` (times
    ``gamma`` every ``step_size`` epochs) or ``none`` (None: a constant learning rate)."""
    if kind == "none":
        return None
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(int(epochs), 1))
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(step_size), gamma=float(gamma))
    raise ValueError(f"unknown schedule {kind!r}")


def augment_batch(images: torch.Tensor, *, crop: bool, padding: int, flip: bool,
                  generator: torch.Generator) -> torch.Tensor:
    """Random crop of the zero-padded image and/or random horizontal flip, each image on its own.

    ``images`` is (B, C, H, W) uint8 on any device; returns a new tensor of the same shape and dtype.
    Crop: pad ``padding`` zeros on every side, then take an H x W window at a random offset in
    [0, 2 * padding] per image (two gathers). Flip: mirror a random half of the images.
    """
    b, c, h, w = images.shape
    out = images
    device = images.device
    if crop and padding > 0:
        padded = torch.nn.functional.pad(out, (padding, padding, padding, padding))     # (B, C, H+2p, W+2p)
        offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(device)
        rows = (offsets[0][:, None] + torch.arange(h, device=device))[:, None, :, None]   # (B, 1, H, 1)
        cols = (offsets[1][:, None] + torch.arange(w, device=device))[:, None, None, :]   # (B, 1, 1, W)
        out = padded.gather(2, rows.expand(b, c, h, w + 2 * padding))                     # (B, C, H, W+2p)
        out = out.gather(3, cols.expand(b, c, h, w))                                      # (B, C, H, W)
    if flip:
        mirror = (torch.rand(b, generator=generator) < 0.5).to(device)
        out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
    return out
