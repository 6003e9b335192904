"""train stage: fit the configured model on data/prepared, save weights, snapshots and metrics.

Data stays in memory as uint8 tensors on the device; each batch is taken by index and
normalised there (no per-sample PIL transforms, no DataLoader). Outputs:

- ``data/model/model.safetensors`` + ``model.json`` (architecture, input shape, classes, layers)
- ``data/model/snapshots/step_NNNNNN.safetensors`` + ``index.json`` (weights during training)
- ``metrics/train/metrics.json`` and ``metrics/train/plots/metrics/**.tsv`` (dvclive)

and, outside what DVC hashes (they differ on every run), ``logs/train/``: ``tensorboard/`` (scalars
and first-layer filters per epoch, enlarged, blue-white-red (:mod:`pipeline.tblog`);
``tensorboard --logdir logs/train --samples_per_plugin images=1000`` shows every epoch) and
``timings.json`` (seconds per epoch).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from pipeline import artifacts, paths, tblog
from pipeline.config import Params, TrainConfig
from pipeline.datasets import Prepared, load_prepared
from pipeline.errors import ConfigError, UserError
from pipeline.models import build_model, check_weights_config, describe_layers, load_weights_into, save_model
from pipeline.models.common import Network
from pipeline.runtime import log, normalizer, progress, resolve_device, seed_everything

__all__ = ["run", "fit", "evaluate", "predict_logits", "model_meta"]

SNAPSHOT_DIR = "snapshots"


def _weight_params(model: nn.Module) -> list[torch.Tensor]:
    """Weights (not biases or norm scales) that the L1 penalty applies to."""
    return [p for n, p in model.named_parameters() if p.ndim > 1]


@torch.no_grad()
def evaluate(model: Network, images: torch.Tensor, labels: torch.Tensor, normalize: Callable,
             cfg: TrainConfig, batch_size: int = 512) -> dict[str, float]:
    """Means of ``model.loss_terms`` over a split, in chunks (the split never sits on the device as floats)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n = len(labels)
    try:
        for start in range(0, n, batch_size):
            xb = normalize(images[start:start + batch_size])
            yb = labels[start:start + batch_size].to(xb.device)
            for key, value in model.loss_terms(xb, yb, cfg).items():
                sums[key] = sums.get(key, 0.0) + float(value) * len(yb)
    finally:
        model.train(was_training)
    return {k: v / max(n, 1) for k, v in sums.items()}


@torch.no_grad()
def predict_logits(model: Network, images: torch.Tensor, normalize: Callable, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, n_classes) on the CPU, computed in chunks."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(normalize(images[i:i + batch_size])).float().cpu()
                          for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def per_class_accuracy(preds: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float]:
    return {name: float((preds[labels == i] == i).mean()) if (labels == i).any() else float("nan")
            for i, name in enumerate(classes)}


def model_meta(params: Params, data_info: dict[str, Any], model: Network) -> dict[str, Any]:
    shape = tuple(data_info["shape"])
    return {
        "arch": params.model.arch,
        "task": model.task,
        "model": params.model.model_dump(),
        "input_shape": list(shape),
        "n_classes": len(data_info["classes"]),
        "classes": list(data_info["classes"]),
        "dataset": data_info.get("dataset"),
        "mean": data_info["mean"],
        "std": data_info["std"],
        "output_layer": model.output_layer,
        "layers": describe_layers(model, shape),
        "params": sum(p.numel() for p in model.parameters()),
    }


class _Snapshots:
    """Saves weights every ``every`` steps (and at step 0) under ``directory``."""

    def __init__(self, directory: Path, every: int, steps_per_epoch: int):
        self.directory, self.every, self.steps_per_epoch = directory, every, steps_per_epoch
        self.index: list[dict[str, Any]] = []

    def maybe_save(self, model: Network, step: int, force: bool = False) -> None:
        if self.every <= 0 and not force:
            return
        if not force and step % self.every:
            return
        if any(s["step"] == step for s in self.index):
            return
        name = f"step_{step:06d}.safetensors"
        artifacts.save_safetensors(self.directory / name, model.state_dict())
        self.index.append({"step": step, "epoch": round(step / self.steps_per_epoch, 4), "file": name})

    def write_index(self) -> None:
        artifacts.save_json(self.directory / "index.json", {"snapshots": self.index})


def _filter_image(model: Network, input_shape: tuple[int, ...]) -> np.ndarray | None:
    """First-layer filters (conv kernels, or linear weight rows as images) as one RGB grid image
    (H, W, 3), each weight enlarged to a block of pixels on a diverging colour map."""
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


def fit(model: Network, data: Prepared, cfg: TrainConfig, device: torch.device, *,
        snapshots: _Snapshots | None = None, on_epoch: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Train ``model`` in place with Adam; returns the last epoch's statistics and timing."""
    normalize = normalizer(data.info["mean"], data.info["std"], device)
    if hasattr(model, "set_input_stats"):           # autoencoders: masking value, MSE in pixel units
        model.set_input_stats(data.info["mean"], data.info["std"])
    x_train = torch.from_numpy(np.ascontiguousarray(data.train_images)).to(device)   # (N, C, H, W) uint8
    y_train = torch.from_numpy(data.train_labels).to(device)
    x_test = torch.from_numpy(np.ascontiguousarray(data.test_images)).to(device)
    y_test = torch.from_numpy(data.test_labels).to(device)
    n = len(y_train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.l2)
    generator = torch.Generator().manual_seed(cfg.seed)
    weights = _weight_params(model)
    step, history, epoch_seconds = 0, {}, []
    if snapshots:
        snapshots.maybe_save(model, 0)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device)
        running: dict[str, float] = {}
        bar = progress(range(steps_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False)
        for b in bar:
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            terms = model.loss_terms(normalize(x_train[idx]), y_train[idx], cfg, generator)
            loss = terms["loss"]
            if cfg.l1:
                loss = loss + cfg.l1 * sum(w.abs().sum() for w in weights)
            if not torch.isfinite(loss):
                raise UserError(f"training diverged: the loss became {float(loss)} at epoch {epoch}, step {step + 1} "
                                f"(train.lr = {cfg.lr:g}); lower train.lr, e.g. to {cfg.lr / 10:g}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            for k, v in terms.items():
                running[k] = running.get(k, 0.0) + float(v.detach())
            if b % 10 == 0 or b == steps_per_epoch - 1:
                bar.set_postfix({k: f"{v / (b + 1):.4f}" for k, v in running.items()}, refresh=False)
            if snapshots:
                snapshots.maybe_save(model, step)
        bar.close()
        epoch_seconds.append(time.perf_counter() - started)
        train_stats = {k: v / steps_per_epoch for k, v in running.items()}
        test_stats = evaluate(model, x_test, y_test, normalize, cfg)
        history = {"train": train_stats, "test": test_stats}
        summary = ", ".join(f"test {k} {v:.4f}" for k, v in test_stats.items())
        log(f"epoch {epoch}/{cfg.epochs}: train loss {train_stats['loss']:.4f}, {summary} "
            f"({epoch_seconds[-1]:.1f} s)")
        if on_epoch:
            on_epoch(epoch, history)
    if not history:                                  # epochs: 0 (analyse given weights only)
        history = {"test": evaluate(model, x_test, y_test, normalize, cfg)}
    if snapshots:
        snapshots.maybe_save(model, step, force=True)
    history["steps"] = step
    history["epoch_seconds"] = epoch_seconds
    return history


def check_compile(device: torch.device) -> None:
    """torch.compile builds kernels on the first call, with a C++ compiler on the CPU (Triton on a
    GPU); without one, training would stop at its first batch with a 100-line traceback. A tiny
    function compiled first turns that into one line."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.zeros(4, device=device))
    except Exception as exc:                    # InductorError, BackendCompilerFailed, ... (torch-version dependent)
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"train.compile: torch.compile cannot build kernels on {device.type} ({first[:160]}); it "
                        f"needs a working C++ compiler (g++ or clang++ on PATH, or CXX), or set train.compile: "
                        f"false") from None


def _open_live(directory: Path) -> Any:
    """A dvclive logger that writes files only (no dvc.yaml edits, no experiment of its own)."""
    from dvclive import Live

    class _FilesOnlyLive(Live):
        def _init_dvc(self) -> None:
            try:
                super()._init_dvc()
            except Exception as exc:  # dvclive 3.x fails in a git repo with no commit yet
                if type(exc).__name__ != "SCMError":
                    raise
                self._dvc_repo = None

    return _FilesOnlyLive(dir=str(directory), dvcyaml=None, save_dvc_exp=False, report=None)


def run(params: Params) -> dict[str, Any]:
    """The train stage: read data/prepared, write data/model and metrics/train."""
    from torch.utils.tensorboard import SummaryWriter

    cfg = params.train
    artifacts.remove(paths.TRAIN_LOGS)                  # this run's logs only
    with artifacts.stage_outputs(paths.MODEL, paths.TRAIN_METRICS):
        data = load_prepared(paths.PREPARED)
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        shape = tuple(data.info["shape"])
        model = build_model(params.model, shape, len(data.classes))
        if params.model.weights:
            check_weights_config(params.model.weights, params.model)
            load_weights_into(model, params.model.weights)
            log(f"loaded weights from {params.model.weights}")
            nonfinite = {k: int((~torch.isfinite(v)).sum()) for k, v in model.state_dict().items()
                         if v.is_floating_point() and not torch.isfinite(v).all()}
            if nonfinite:                               # analysed as they are; later stages skip NaN layers
                log(f"warning: {params.model.weights}: {sum(nonfinite.values())} weight values are NaN or inf "
                    f"(first in {next(iter(nonfinite))}); the layers they feed get NaN activations, which "
                    f"reduce, probe, projector and diagnose skip and record")
            if paths.WEIGHTS.resolve() not in Path(params.model.weights).resolve().parents:
                log(f"note: DVC notices a replaced weights file only under {paths.WEIGHTS}/ (a train dependency); "
                    f"keep model.weights there")
        elif cfg.epochs == 0:
            raise ConfigError("train.epochs = 0 needs model.weights (a safetensors file) to analyse; "
                            "set train.epochs >= 1 or point model.weights at trained weights")
        model.to(device)
        if cfg.compile:
            check_compile(device)
            model.compile()
        meta = model_meta(params, data.info, model)
        log(f"training {params.model.arch} ({meta['params']:,} parameters) on {data.info['dataset']} "
            f"({len(data.train_labels)} train / {len(data.test_labels)} test) on {device}")

        steps_per_epoch = math.ceil(len(data.train_labels) / cfg.batch_size)
        snapshots = _Snapshots(paths.MODEL / SNAPSHOT_DIR, cfg.snapshot_every, steps_per_epoch)
        tb = SummaryWriter(log_dir=str(paths.TRAIN_LOGS / "tensorboard"))
        live = _open_live(paths.TRAIN_METRICS)

        def on_epoch(epoch: int, history: dict) -> None:
            for split, stats in history.items():
                for key, value in stats.items():
                    live.log_metric(f"{split}/{key}", value)
                    tb.add_scalar(f"{split}/{key}", value, epoch)
            grid = _filter_image(model, shape)
            if grid is not None:
                tb.add_image("filters/first_layer", grid, epoch, dataformats="HWC")
            live.next_step()

        try:
            history = fit(model, data, cfg, device, snapshots=snapshots, on_epoch=on_epoch)
            if cfg.epochs == 0:
                for key, value in history["test"].items():
                    live.log_metric(f"test/{key}", value)
            if model.task == "classify":
                normalize = normalizer(data.info["mean"], data.info["std"], device)
                preds = predict_logits(model, torch.from_numpy(data.test_images).to(device), normalize).argmax(1).numpy()
                live.summary["per_class_accuracy"] = per_class_accuracy(preds, data.test_labels, data.classes)
            else:                                      # reconstruct: trained without labels, no accuracy
                live.summary["accuracy"] = None
            live.summary["task"] = model.task
            live.summary["params"] = meta["params"]
        finally:
            tb.close()
        live.end()
        seconds = [round(s, 3) for s in history["epoch_seconds"]]
        artifacts.save_json(paths.TRAIN_LOGS / "timings.json",
                            {"epoch_seconds": seconds, "seconds_per_epoch": round(float(np.mean(seconds)), 3)
                             if seconds else None})
        model.to("cpu")
        snapshots.write_index()
        save_model(paths.MODEL, model, meta)            # model.json last: the folder's completion marker
    return {"history": history, "params": meta["params"]}
