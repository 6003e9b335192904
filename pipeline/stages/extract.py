"""extract stage: record every layer's activations on a stratified subset of ``extract.split``.

``extract.split``: ``test`` (default), ``train`` or ``all`` (the test images, then the training
images; ``indices.npy`` counts rows of that pool, see :func:`pipeline.datasets.split_images`).

One batched pass with forward hooks on all chosen layers (:func:`pipeline.activations.record_activations`,
inference mode, chunks of ``extract.batch_size``). Each layer's activations stream straight into a memory-mapped
``.npy`` on disk, so memory stays bounded by one chunk whatever the number of points or
layers. The same runs for every weight snapshot, for ``extract.snapshot_layers`` only.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import artifacts, paths
from pipeline.activations import choose_layers, layer_modules, layer_rows, penultimate_layer, record_activations
from pipeline.config import ExtractConfig, Params
from pipeline.datasets import load_prepared, split_arrays, stratified_subset
from pipeline.errors import ConfigError, UserError
from pipeline.models import load_meta, load_model, load_weights_into
from pipeline.runtime import log, normalizer, progress, resolve_device, seed_everything

__all__ = ["run"]


_SPACE_FIX = "free disk space, or lower extract.n_samples, set extract.dtype: float16 or list fewer extract.layers"


def _open_sinks(directory: Path, shapes: dict[str, tuple[int, ...]], n: int, dtype: str) -> dict[str, np.ndarray]:
    """One (n, dim) memory-mapped .npy per layer, under a temporary name until ``_close_sinks``,
    its disk blocks allocated up front (a full disk is then an error, not a SIGBUS mid-write)."""
    directory.mkdir(parents=True, exist_ok=True)
    sinks = {}
    for name, shape in shapes.items():
        path = directory / f".{name}.npy.partial"
        try:
            sinks[name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n, int(np.prod(shape))))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise UserError(f"{directory}: disk full while creating {path.name}; {_SPACE_FIX}") from None
        artifacts.reserve(path, _SPACE_FIX)
    return sinks


def _needed_bytes(n: int, dtype: str, shapes: dict[str, tuple[int, ...]], snap_shapes: dict[str, tuple[int, ...]],
                  n_snapshots: int) -> int:
    """Disk space extract will write: the layer arrays, then per point labels, indices, logits,
    predictions and confidence (128 bytes is ample for 10 classes), plus 1 MiB for headers and JSON."""
    dims = sum(int(np.prod(s)) for s in shapes.values()) + n_snapshots * sum(int(np.prod(s)) for s in snap_shapes.values())
    return n * (dims * np.dtype(dtype).itemsize + 128 + 16 * n_snapshots) + 2**20


def _close_sinks(sinks: dict[str, np.ndarray]) -> None:
    """Flush every memmap and rename it to its final name (atomic: a killed run leaves only .partial files)."""
    for name, array in sinks.items():
        array.flush()
        partial = Path(array.filename)
        del array
        partial.replace(partial.with_name(f"{name}.npy"))
    sinks.clear()


def _check_finite(sinks: dict[str, np.ndarray], where: str) -> list[str]:
    """Names of layers holding NaN or inf (reported; reduce skips them)."""
    bad = []
    for name, array in sinks.items():
        for start in range(0, len(array), 4096):
            if not np.isfinite(array[start:start + 4096]).all():
                bad.append(name)
                break
    for name in bad:
        log(f"warning: {where}: layer {name} has NaN or inf activations; reduce will skip it")
    return bad


def _sample(params: Params, n_pool: int, labels: np.ndarray) -> np.ndarray:
    cfg: ExtractConfig = params.extract
    if cfg.n_samples is not None and cfg.n_samples > n_pool:
        raise ConfigError(f"extract.n_samples = {cfg.n_samples} is larger than the {cfg.split} split "
                          f"({n_pool} images); use at most {n_pool}, or null for all of them")
    return stratified_subset(labels, cfg.n_samples or n_pool, cfg.seed)


def _check_memory(cfg: ExtractConfig, shapes: dict[str, tuple[int, ...]], images: torch.Tensor,
                  n_snapshot_layers: int) -> None:
    """Stop before writing when the images and a chunk of every layer would not fit in memory."""
    from pipeline import memory

    dims = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    chunk = min(cfg.batch_size, len(images)) * sum(dims.values()) * 4 * 3     # hooked outputs, copies
    need = memory.BASE_BYTES + images.numel() * images.element_size() * 2 + chunk
    memory.check_fits("extract", need, f"{len(images)} {cfg.split} images, {len(dims)} layers in chunks of "
                                       f"{cfg.batch_size}")


def run(params: Params) -> dict[str, Any]:
    cfg = params.extract
    out = paths.ACTIVATIONS
    with artifacts.stage_outputs(out):
        data = load_prepared(paths.PREPARED)
        load_meta(paths.MODEL)                              # every key read below, checked
        model, meta = load_model(paths.MODEL)
        layers = choose_layers(model, cfg.layers)
        pairs = layer_modules(model, layers)
        snapshot_layers = choose_layers(model, cfg.snapshot_layers or [penultimate_layer(model)],
                                        key="extract.snapshot_layers")
        snapshot_pairs = layer_modules(model, snapshot_layers)
        seed_everything(cfg.seed)
        device = resolve_device(params.train.device)
        model.to(device)
        normalize = normalizer(meta["mean"], meta["std"], device)

        pool_images, pool_labels = split_arrays(data, cfg.split)   # test, train or both
        del data
        idx = _sample(params, len(pool_labels), pool_labels)
        images = torch.from_numpy(np.ascontiguousarray(pool_images[idx]))      # (n, C, H, W) uint8
        labels = pool_labels[idx]
        del pool_images
        rows = layer_rows(model, pairs, tuple(meta["input_shape"]), cfg.spatial, cfg.pool_above)
        shapes = {name: tuple(row["shape"]) for name, row in rows.items()}           # as stored
        pooling = {name: row["spatial"] for name, row in rows.items()}
        _check_memory(cfg, shapes, images, len(snapshot_layers))
        log(f"extracting {len(layers)} layers for {len(idx)} {cfg.split} images ({cfg.dtype}) on {device}")
        index_path = paths.SNAPSHOT_INDEX
        entries = artifacts.load_json(index_path, "snapshot index")["snapshots"] if index_path.exists() else []
        snap_rows = layer_rows(model, snapshot_pairs, tuple(meta["input_shape"]), cfg.spatial, cfg.pool_above)
        snap_shapes = {name: tuple(row["shape"]) for name, row in snap_rows.items()}
        snap_pooling = {name: row["spatial"] for name, row in snap_rows.items()}
        artifacts.require_free_space(out, _needed_bytes(len(idx), cfg.dtype, shapes, snap_shapes, len(entries)),
                                     f"the activations of {len(layers)} layers and {len(entries)} snapshots",
                                     _SPACE_FIX)

        sinks = _open_sinks(out, shapes, len(idx), cfg.dtype)
        logits = record_activations(model, images, normalize, pairs, sinks, batch_size=cfg.batch_size,
                                    pooling=pooling)
        nonfinite = _check_finite(sinks, "final model")
        _close_sinks(sinks)
        artifacts.save_npy(out / "labels.npy", labels.astype(np.int64))
        artifacts.save_npy(out / "indices.npy", idx.astype(np.int64))
        if logits is not None:
            artifacts.save_npy(out / "logits.npy", logits.numpy().astype(np.float32))
            artifacts.save_npy(out / "preds.npy", logits.argmax(1).numpy().astype(np.int64))
            confidence = torch.softmax(logits, dim=1).amax(dim=1)
            artifacts.save_npy(out / "confidence.npy", confidence.numpy().astype(np.float32))

        snapshots = []
        for entry in progress(entries, desc="snapshots", unit="snapshot", leave=False):
            load_weights_into(model, paths.MODEL_SNAPSHOTS / entry["file"])
            sub = paths.activation_snapshot(int(entry["step"]))
            sinks = _open_sinks(out / sub, snap_shapes, len(idx), cfg.dtype)
            snap_logits = record_activations(model, images, normalize, snapshot_pairs, sinks,
                                             batch_size=cfg.batch_size, desc=f"step {entry['step']}",
                                             pooling=snap_pooling)
            _check_finite(sinks, f"snapshot step {entry['step']}")
            _close_sinks(sinks)
            if snap_logits is not None:
                artifacts.save_npy(out / sub / "preds.npy", snap_logits.argmax(1).numpy().astype(np.int64))
            snapshots.append({"step": int(entry["step"]), "epoch": entry.get("epoch"), "dir": sub})

        index = {
            "arch": meta["arch"], "task": meta.get("task", "classify"), "dataset": meta.get("dataset"),
            "classes": meta["classes"], "split": cfg.split, "n": int(len(idx)), "dtype": cfg.dtype,
            "spatial": cfg.spatial, "pool_above": cfg.pool_above,
            "layers": [rows[name] for name in layers],
            "output_layer": meta.get("output_layer"),
            "penultimate": penultimate_layer(model),
            "nonfinite_layers": nonfinite,
            "snapshot_layers": snapshot_layers,
            "snapshots": snapshots,
        }
        artifacts.save_json(out / "layers.json", index)
    log(f"wrote {len(layers)} layers x {len(idx)} points and {len(snapshots)} snapshots -> {out}")
    return index
