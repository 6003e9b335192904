"""extract stage: record every layer's activations on a stratified subset of ``extract.split``.

``extract.split``: ``test`` (default), ``train`` or ``all`` (the test images, then the training
images; ``indices.npy`` counts rows of that pool, see :func:`pipeline.datasets.split_images`).

One batched pass with forward hooks on all chosen layers (inference mode, chunks of
``extract.batch_size``). Each layer's activations stream straight into a memory-mapped
``.npy`` on disk, so memory stays bounded by one chunk whatever the number of points or
layers. The same runs for every weight snapshot, for ``extract.snapshot_layers`` only.
"""

from __future__ import annotations

import errno
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pipeline import artifacts, paths
from pipeline.config import ExtractConfig, Params
from pipeline.datasets import load_prepared, split_arrays, stratified_subset
from pipeline.errors import ConfigError, UserError
from pipeline.models import load_meta, load_model, load_weights_into
from pipeline.models.common import Network
from pipeline.runtime import log, normalizer, progress, resolve_device, seed_everything

__all__ = ["run", "record_activations", "choose_layers", "penultimate_layer", "INPUT"]

INPUT = "input"                      # pseudo-layer: the normalised pixels
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def penultimate_layer(model: Network) -> str:
    """The layer before the output (e.g. ``act4`` of LeNet, ``latent``'s neighbour for autoencoders)."""
    names = [n for n, _ in model.named_layers()]
    if model.task != "classify" and "latent" in names:
        return "latent"
    return names[-2] if len(names) >= 2 else names[-1]


def choose_layers(model: Network, wanted: Sequence[str] | None, key: str = "extract.layers") -> list[str]:
    """Validate layer names against the model; ``None`` means ``input`` plus every named layer."""
    names = [n for n, _ in model.named_layers()]
    for n in names:
        if not _SAFE_NAME.match(n):  # pragma: no cover - our models use plain names
            raise UserError(f"layer name {n!r} cannot be a file name")
    if wanted is None or wanted in ("auto", "all"):
        return [INPUT, *names]
    valid = [INPUT, *names]
    unknown = [w for w in wanted if w not in valid]
    if unknown:
        raise ConfigError(f"{key}: unknown layer '{unknown[0]}'; valid names: {', '.join(valid)} "
                          f"(`python -m pipeline layers` lists them)")
    seen: set[str] = set()
    return [w for w in valid if w in wanted and not (w in seen or seen.add(w))]


@torch.inference_mode()
def record_activations(model: Network, images: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor],
                       layers: Sequence[str], sinks: dict[str, np.ndarray], *, batch_size: int = 256,
                       desc: str = "extract") -> torch.Tensor | None:
    """Run ``images`` (N, C, H, W uint8) through ``model`` once, writing each layer's flattened
    output into ``sinks[layer]`` (an (N, dim) array or memmap). Returns the logits (N, K) on the
    CPU for classifiers, else None. The model is left in the mode it was found in."""
    modules = dict(model.named_layers())
    current: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    logits_parts: list[torch.Tensor] = []
    with ExitStack() as stack:
        for name in layers:
            if name == INPUT:
                continue

            def hook(_m, _inp, out, name=name):
                out = out[0] if isinstance(out, (tuple, list)) else out
                current[name] = out
            stack.callback(modules[name].register_forward_hook(hook).remove)
        n = len(images)
        bar = progress(range(0, n, batch_size), desc=desc, unit="batch", leave=False)
        for start in bar:
            x = normalize(images[start:start + batch_size])                 # (B, C, H, W) float32
            current.clear()
            out = model(x)
            stop = start + len(x)
            for name in layers:
                act = x if name == INPUT else current[name]
                sinks[name][start:stop] = act.reshape(len(x), -1).float().cpu().numpy()
            if model.task == "classify":
                logits_parts.append(out.float().cpu())
    model.train(was_training)
    return torch.cat(logits_parts) if logits_parts else None


def _layer_dims(model: Network, layers: Sequence[str], input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    from pipeline.models import describe_layers

    shapes = {row["name"]: tuple(row["shape"]) for row in describe_layers(model, input_shape)}
    shapes[INPUT] = tuple(input_shape)
    return {name: shapes[name] for name in layers}


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
        snapshot_layers = choose_layers(model, cfg.snapshot_layers or [penultimate_layer(model)],
                                        key="extract.snapshot_layers")
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
        shapes = _layer_dims(model, layers, tuple(meta["input_shape"]))
        _check_memory(cfg, shapes, images, len(snapshot_layers))
        log(f"extracting {len(layers)} layers for {len(idx)} {cfg.split} images ({cfg.dtype}) on {device}")
        index_path = paths.MODEL / "snapshots" / "index.json"
        entries = artifacts.load_json(index_path, "snapshot index")["snapshots"] if index_path.exists() else []
        snap_shapes = {name: shapes.get(name) or _layer_dims(model, [name], tuple(meta["input_shape"]))[name]
                       for name in snapshot_layers}
        artifacts.require_free_space(out, _needed_bytes(len(idx), cfg.dtype, shapes, snap_shapes, len(entries)),
                                     f"the activations of {len(layers)} layers and {len(entries)} snapshots",
                                     _SPACE_FIX)

        sinks = _open_sinks(out, shapes, len(idx), cfg.dtype)
        logits = record_activations(model, images, normalize, layers, sinks, batch_size=cfg.batch_size)
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
            load_weights_into(model, paths.MODEL / "snapshots" / entry["file"])
            sub = f"snapshots/step_{int(entry['step']):06d}"
            sinks = _open_sinks(out / sub, snap_shapes, len(idx), cfg.dtype)
            snap_logits = record_activations(model, images, normalize, snapshot_layers, sinks,
                                             batch_size=cfg.batch_size, desc=f"step {entry['step']}")
            _check_finite(sinks, f"snapshot step {entry['step']}")
            _close_sinks(sinks)
            if snap_logits is not None:
                artifacts.save_npy(out / sub / "preds.npy", snap_logits.argmax(1).numpy().astype(np.int64))
            snapshots.append({"step": int(entry["step"]), "epoch": entry.get("epoch"), "dir": sub})

        index = {
            "arch": meta["arch"], "task": meta.get("task", "classify"), "dataset": meta.get("dataset"),
            "classes": meta["classes"], "split": cfg.split, "n": int(len(idx)), "dtype": cfg.dtype,
            "layers": [{"name": name, "type": "input" if name == INPUT else
                        next(r["type"] for r in meta["layers"] if r["name"] == name),
                        "shape": list(shapes[name]), "dim": int(np.prod(shapes[name]))} for name in layers],
            "output_layer": meta.get("output_layer"),
            "penultimate": penultimate_layer(model),
            "nonfinite_layers": nonfinite,
            "snapshot_layers": snapshot_layers,
            "snapshots": snapshots,
        }
        artifacts.save_json(out / "layers.json", index)
    log(f"wrote {len(layers)} layers x {len(idx)} points and {len(snapshots)} snapshots -> {out}")
    return index
