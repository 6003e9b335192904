"""Training and evaluation of a :class:`~pipeline.models.common.Network`, with plain arguments.

Usable from a notebook without params.yaml::

    history = fit(model, data.train_images, data.train_labels, data.test_images, data.test_labels,
                  mean=data.info["mean"], std=data.info["std"], epochs=5, batch_size=64, lr=1e-3)

Data stays in memory as uint8 tensors on the device; each batch is taken by index and
normalised there (no per-sample PIL transforms, no DataLoader). The train stage unpacks
``train.*`` into these arguments and writes what the callbacks hand it.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.models.common import Network, eval_mode
from pipeline.optim import augment_batch, make_optimizer, make_schedule
from pipeline.runtime import log, normalized_batches, normalizer, progress

__all__ = ["fit", "evaluate", "predict_logits", "per_class_accuracy", "weight_params", "filter_grid", "check_compile"]


def weight_params(model: nn.Module) -> list[torch.Tensor]:
    """Weights (not biases or norm scales) that the L1 penalty applies to."""
    return [p for n, p in model.named_parameters() if p.ndim > 1]


@torch.no_grad()
def evaluate(model: Network, images: torch.Tensor, labels: torch.Tensor, normalize: Callable, *,
             kl_weight: float = 1.0, batch_size: int = 512) -> dict[str, float]:
    """Means of ``model.loss_terms`` over a split (eval mode: no input noise), in chunks, so the
    split never sits on the device as floats. ``images`` (N, C, H, W) uint8, ``labels`` (N,)."""
    sums: dict[str, float] = {}
    n = len(labels)
    with eval_mode(model):
        for start, xb in normalized_batches(images, normalize, batch_size):
            yb = labels[start:start + len(xb)].to(xb.device)
            for key, value in model.loss_terms(xb, yb, kl_weight=kl_weight).items():
                sums[key] = sums.get(key, 0.0) + float(value) * len(yb)
    return {k: v / max(n, 1) for k, v in sums.items()}


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, normalize: Callable, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, n_classes) on the CPU of ``images`` (N, C, H, W) uint8, computed in chunks in eval mode."""
    with eval_mode(model):
        return torch.cat([model(x).float().cpu() for _, x in normalized_batches(images, normalize, batch_size)])


def per_class_accuracy(preds: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy per class name (NaN for a class without test images)."""
    return {name: float((preds[labels == i] == i).mean()) if (labels == i).any() else float("nan")
            for i, name in enumerate(classes)}


def fit(model: Network, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
        test_labels: np.ndarray, *, mean: list[float], std: list[float], epochs: int, batch_size: int, lr: float,
        seed: int = 0, l1: float = 0.0, l2: float = 0.0, noise: float = 0.0, noise_kind: str = "masking",
        kl_weight: float = 1.0, device: torch.device | str = "cpu", optimizer: str = "adam", momentum: float = 0.9,
        nesterov: bool = False, schedule: str = "none", step_size: int = 10, gamma: float = 0.1,
        augment: Mapping[str, Any] | None = None, monitor: str = "test",
        on_step: Callable[[int, bool], None] | None = None,
        on_epoch: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Train ``model`` in place with ``optimizer`` (``adam``, or ``sgd`` with ``momentum`` and
    ``nesterov``; learning rate ``lr`` following ``schedule`` epoch by epoch: ``none``, ``cosine``,
    ``step`` every ``step_size`` epochs times ``gamma``), batches augmented by ``augment``
    (``{crop, padding, flip}``, :func:`pipeline.optim.augment_batch`, on the uint8 batch) when
    given (weight decay ``l2``, plus ``l1`` x the weights'
    absolute sum in the loss) for ``epochs`` epochs of shuffled batches (order seeded with ``seed``).

    ``*_images`` (N, C, H, W) uint8 and ``*_labels`` (N,) int64 arrays; ``mean``/``std`` per channel
    in [0, 1] units. ``noise``/``noise_kind``: denoising input corruption for autoencoders;
    ``kl_weight``: a VAE's KL weight. ``test_*`` is the split evaluated after every epoch, named
    ``monitor`` in the history and the log (the train stage passes its validation split as "val").
    ``on_step(step, final)`` is called at step 0, after every
    optimiser step, and once more at the end with ``final=True`` (weight snapshots);
    ``on_epoch(epoch, {"train": stats, "test": stats})`` after each epoch. A non-finite loss
    stops with a :class:`UserError`. Returns the last epoch's statistics, ``steps`` and
    ``epoch_seconds``; with ``epochs = 0`` only ``test``.
    """
    device = torch.device(device)
    normalize = normalizer(mean, std, device)
    if hasattr(model, "set_input_stats"):           # autoencoders: masking value, MSE in pixel units
        model.set_input_stats(mean, std)
    x_train = torch.from_numpy(np.ascontiguousarray(train_images)).to(device)   # (N, C, H, W) uint8
    y_train = torch.from_numpy(np.asarray(train_labels)).to(device)
    x_test = torch.from_numpy(np.ascontiguousarray(test_images)).to(device)
    y_test = torch.from_numpy(np.asarray(test_labels)).to(device)
    n = len(y_train)
    steps_per_epoch = math.ceil(n / batch_size)
    opt = make_optimizer(model.parameters(), optimizer, lr=lr, weight_decay=l2, momentum=momentum, nesterov=nesterov)
    sched = make_schedule(opt, schedule, epochs=epochs, step_size=step_size, gamma=gamma)
    generator = torch.Generator().manual_seed(seed)
    weights = weight_params(model)
    step, history, epoch_seconds = 0, {}, []
    if on_step:
        on_step(0, False)
    for epoch in range(1, epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device)
        running: dict[str, float] = {}
        bar = progress(range(steps_per_epoch), desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
        for b in bar:
            idx = order[b * batch_size:(b + 1) * batch_size]
            xb = x_train[idx]                                                  # (B, C, H, W) uint8
            if augment:
                xb = augment_batch(xb, crop=bool(augment.get("crop")), padding=int(augment.get("padding", 4)),
                                   flip=bool(augment.get("flip")), generator=generator)
            terms = model.loss_terms(normalize(xb), y_train[idx], noise=noise, noise_kind=noise_kind,
                                     kl_weight=kl_weight, generator=generator)
            loss = terms["loss"]
            if l1:
                loss = loss + l1 * sum(w.abs().sum() for w in weights)
            if not torch.isfinite(loss):
                raise UserError(f"training diverged: the loss became {float(loss)} at epoch {epoch}, step {step + 1} "
                                f"(train.lr = {lr:g}); lower train.lr, e.g. to {lr / 10:g}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            for k, v in terms.items():
                running[k] = running.get(k, 0.0) + float(v.detach())
            if b % 10 == 0 or b == steps_per_epoch - 1:
                bar.set_postfix({k: f"{v / (b + 1):.4f}" for k, v in running.items()}, refresh=False)
            if on_step:
                on_step(step, False)
        bar.close()
        epoch_seconds.append(time.perf_counter() - started)
        train_stats = {k: v / steps_per_epoch for k, v in running.items()}
        if sched is not None:                        # the rate this epoch trained with, then the next one's
            train_stats["lr"] = opt.param_groups[0]["lr"]
            sched.step()
        test_stats = evaluate(model, x_test, y_test, normalize, kl_weight=kl_weight)
        history = {"train": train_stats, monitor: test_stats}
        summary = ", ".join(f"{monitor} {k} {v:.4f}" for k, v in test_stats.items())
        log(f"epoch {epoch}/{epochs}: train loss {train_stats['loss']:.4f}, {summary} "
            f"({epoch_seconds[-1]:.1f} s)")
        if on_epoch:
            on_epoch(epoch, history)
    if not history:                                  # epochs: 0 (analyse given weights only)
        history = {monitor: evaluate(model, x_test, y_test, normalize, kl_weight=kl_weight)}
    if on_step:
        on_step(step, True)
    history["steps"] = step
    history["epoch_seconds"] = epoch_seconds
    return history


def filter_grid(model: Network, input_shape: tuple[int, ...]) -> np.ndarray | None:
    """First-layer filters (conv kernels, or linear weight rows as images) as one RGB grid image
    (H, W, 3), each weight enlarged to a block of pixels on a diverging colour map
    (:func:`pipeline.tblog.filter_grid`); None when the first layer with weights is neither, or
    holds NaN/inf. ``input_shape`` (C, H, W) shapes linear weight rows."""
    from pipeline import tblog

    for _, module in model.named_layers():
        if isinstance(module, nn.Conv2d):
            w = module.weight.detach().float().cpu()               # (F, C, k, k)
            if w.shape[1] not in (1, 3):
                w = w[:, :1]
            break
        if isinstance(module, nn.Linear):
            w = module.weight.detach().float().cpu()               # (units, C*H*W)
            if w.shape[1] != math.prod(input_shape):
                return None
            w = w[:64].view(-1, *input_shape)
            break
    else:
        return None
    if not torch.isfinite(w).all():
        return None
    return tblog.filter_grid(w.numpy())


def check_compile(device: torch.device) -> None:
    """torch.compile builds kernels on the first call, with a C++ compiler on the CPU (Triton on a
    GPU); without one, training would stop at its first batch with a 100-line traceback. A tiny
    function compiled first turns that into one line. On the CPU, no compiler on PATH at all (``CXX``,
    g++, c++, clang++) says so at once, without the 20 s that importing the compiler stack and
    trying takes."""
    import shutil

    if device.type == "cpu":
        wanted = [c for c in (os.environ.get("CXX", "").strip(), "g++", "c++", "clang++") if c]
        if not any(shutil.which(c) for c in wanted):
            raise UserError(f"train.compile: torch.compile cannot build kernels on cpu (no C++ compiler found: "
                            f"{', '.join(wanted)}); it needs a working C++ compiler (g++ or clang++ on PATH, or CXX), "
                            f"or set train.compile: false")
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.zeros(4, device=device))
    except Exception as exc:                    # InductorError, BackendCompilerFailed, ... (torch-version dependent)
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"train.compile: torch.compile cannot build kernels on {device.type} ({first[:160]}); it "
                        f"needs a working C++ compiler (g++ or clang++ on PATH, or CXX), or set train.compile: "
                        f"false") from None
