"""train stage: fit the configured model on data/prepared, save weights, snapshots and metrics.

The loop itself is :func:`pipeline.training.fit`; this module unpacks ``train.*`` and writes. Outputs:

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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import artifacts, paths
from pipeline.config import Params
from pipeline.datasets import load_prepared
from pipeline.errors import ConfigError
from pipeline.models import build_model, check_weights_config, ignored_knobs, load_weights_into, model_meta, save_model
from pipeline.models.common import Network
from pipeline.runtime import log, normalizer, resolve_device, seed_everything
from pipeline.schedules import snapshot_steps, validation_split
from pipeline.training import check_compile, evaluate, filter_grid, fit, per_class_accuracy, predict_logits

__all__ = ["run"]

class _Snapshots:
    """Saves weights at the planned steps (:func:`pipeline.schedules.snapshot_steps`) and at the
    end under ``directory``."""

    def __init__(self, directory: Path, steps: list[int], steps_per_epoch: int):
        self.directory, self.steps, self.steps_per_epoch = directory, set(steps), steps_per_epoch
        self.index: list[dict[str, Any]] = []

    def maybe_save(self, model: Network, step: int, force: bool = False) -> None:
        if not force and step not in self.steps:
            return
        if any(s["step"] == step for s in self.index):
            return
        name = paths.snapshot_weights_name(step)
        artifacts.save_safetensors(self.directory / name, model.state_dict())
        self.index.append({"step": step, "epoch": round(step / self.steps_per_epoch, 4), "file": name})

    def write_index(self) -> None:
        artifacts.save_json(self.directory / paths.SNAPSHOT_INDEX_NAME, {"snapshots": self.index})


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
        seed_everything(cfg.seed, graph_mode=cfg.compile)
        device = resolve_device(cfg.device)
        shape = tuple(data.info["shape"])
        model = build_model(params.model, shape, len(data.classes))
        ignored = ignored_knobs(params.model, shape, len(data.classes))
        if ignored:
            log(f"warning: {', '.join(ignored)}: ignored by arch {params.model.arch} (noted in "
                f"{paths.TRAIN_METRICS / 'metrics.json'})")
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
        meta = model_meta(model, params.model.model_dump(), data.info)
        # train.val_fraction of the training images is held out and watched every epoch; the test
        # split is evaluated once, after training
        fit_rows, val_rows = validation_split(data.train_labels, cfg.val_fraction, cfg.seed)
        train_x, train_y = data.train_images[fit_rows], data.train_labels[fit_rows]
        val_x, val_y = data.train_images[val_rows], data.train_labels[val_rows]
        log(f"training {params.model.arch} ({meta['params']:,} parameters) on {data.info['dataset']} "
            f"({len(train_y)} train / {len(val_y)} validation / {len(data.test_labels)} test) on {device}")

        steps_per_epoch = math.ceil(len(train_y) / cfg.batch_size)
        planned = snapshot_steps(cfg.epochs * steps_per_epoch, cfg.snapshot_schedule, cfg.snapshot_every)
        snapshots = _Snapshots(paths.MODEL_SNAPSHOTS, planned, steps_per_epoch)
        tb = SummaryWriter(log_dir=str(paths.TRAIN_LOGS / "tensorboard"))
        live = _open_live(paths.TRAIN_METRICS)

        def on_epoch(epoch: int, history: dict) -> None:
            for split, stats in history.items():
                for key, value in stats.items():
                    live.log_metric(f"{split}/{key}", value)
                    tb.add_scalar(f"{split}/{key}", value, epoch)
            grid = filter_grid(model, shape)
            if grid is not None:
                tb.add_image("filters/first_layer", grid, epoch, dataformats="HWC")
            live.next_step()

        try:
            history = fit(model, train_x, train_y, val_x, val_y, monitor="val",
                          mean=data.info["mean"], std=data.info["std"], epochs=cfg.epochs,
                          batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, l1=cfg.l1, l2=cfg.l2,
                          noise=cfg.noise, noise_kind=cfg.noise_kind, kl_weight=cfg.kl_weight, device=device,
                          optimizer=cfg.optimizer, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          schedule=cfg.schedule, step_size=cfg.step_size, gamma=cfg.gamma,
                          augment=cfg.augment.model_dump() if (cfg.augment.crop or cfg.augment.flip) else None,
                          on_step=lambda step, final: snapshots.maybe_save(model, step, force=final),
                          on_epoch=on_epoch)
            if cfg.epochs == 0:
                for key, value in history["val"].items():
                    live.log_metric(f"val/{key}", value)
            normalize = normalizer(data.info["mean"], data.info["std"], device)
            test_x = torch.from_numpy(np.ascontiguousarray(data.test_images)).to(device)
            test_stats = evaluate(model, test_x, torch.from_numpy(data.test_labels).to(device), normalize,
                                  kl_weight=cfg.kl_weight)             # the test split, once, at the end
            for key, value in test_stats.items():
                tb.add_scalar(f"test/{key}", value, cfg.epochs)
            live.summary["test"] = test_stats
            history["test"] = test_stats
            log(", ".join(f"test {k} {v:.4f}" for k, v in test_stats.items()))
            if model.task == "classify":
                preds = predict_logits(model, torch.from_numpy(data.test_images).to(device), normalize).argmax(1).numpy()
                live.summary["per_class_accuracy"] = per_class_accuracy(preds, data.test_labels, data.classes)
            else:                                      # reconstruct: trained without labels, no accuracy
                live.summary["accuracy"] = None
            live.summary["task"] = model.task
            live.summary["params"] = meta["params"]
            if ignored:
                live.summary["notes"] = f"{', '.join(ignored)}: ignored by arch {params.model.arch}"
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM: the event file (logs/, not an output) is left as it is. Closing it
            # joins tensorboard's writer thread, which can miss the wake-up when the interrupt lands
            # inside one of its queue calls and then sleeps out its 120-s flush interval (seen:
            # interrupted at an epoch's end, the stage took two minutes to exit). The thread is a
            # daemon: the process ends without it.
            raise
        except BaseException:
            tb.close()
            raise
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
