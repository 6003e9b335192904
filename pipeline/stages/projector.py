"""projector stage: data/activations (+ data/prepared thumbnails) -> data/projector.

Writes a TensorBoard Embedding Projector bundle (see :mod:`pipeline.projector` for the format)
of every extracted layer, or of ``projector.layers``: one tensor per layer, one shared
``metadata.tsv`` and ``sprite.png``, and ``projector_config.pbtxt``. Open it with
``tensorboard --logdir data/projector`` (Projector tab; the run is called ``.``).

Tensors are named after their place among the extracted layers (``01_input`` ... ``13_logits``,
:func:`pipeline.paths.layer_stem`), so the projector's menu runs from the input to the output;
the layer before the output is listed first once more (``* 12_act4 (before the output)``), so
the projector opens on it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipeline import artifacts, memory, paths, projector
from pipeline.config import Params
from pipeline.datasets import split_images
from pipeline.errors import ConfigError, UserError
from pipeline.runtime import log, progress

__all__ = ["run", "choose_layers"]


def choose_layers(extracted: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """``projector.layers`` checked against the extracted layers; None means all, in extraction order."""
    if wanted is None:
        return list(extracted)
    unknown = [w for w in wanted if w not in extracted]
    if unknown:
        raise ConfigError(f"projector.layers: unknown layer '{unknown[0]}'; valid names (extracted layers): "
                          f"{', '.join(extracted)} (add it to extract.layers first if it is a model layer)")
    return [name for name in extracted if name in set(wanted)]


def _thumbnails(indices: np.ndarray, split: str) -> np.ndarray:
    """uint8 (n, C, H, W) images of the extracted points (rows of ``split``'s pool), as fetch stored
    them (no normalisation)."""
    images = split_images(paths.PREPARED, split, indices)
    if images.shape[1] not in (1, 3):
        raise UserError(f"{paths.PREPARED} images have {images.shape[1]} channels; a sprite needs "
                        f"1 (grayscale) or 3 (RGB); set projector.sprite: false")
    return images


def run(params: Params) -> dict[str, Any]:
    """The projector stage: read data/activations and data/prepared, write data/projector."""
    cfg = params.projector
    src = paths.ACTIVATIONS
    with artifacts.stage_outputs(paths.PROJECTOR):
        index = artifacts.load_layer_index(src)
        memory.check_layers("projector", index)       # before anything is written (pipeline.memory)
        extracted = [layer["name"] for layer in index["layers"]]
        layers = choose_layers(extracted, cfg.layers)
        nonfinite = set(index.get("nonfinite_layers") or [])
        for name in [n for n in layers if n in nonfinite]:
            log(f"warning: projector: layer {name} has NaN or inf activations; left out of the bundle")
        layers = [n for n in layers if n not in nonfinite]
        if not layers:
            raise UserError(f"projector: every chosen layer has NaN or inf activations ({', '.join(sorted(nonfinite))}); "
                            f"retrain with a lower train.lr or choose other projector.layers")

        labels = artifacts.load_labels(src / "labels.npy", len(index["classes"]))
        n = len(labels)
        stems = {name: paths.layer_stem(i, len(extracted), name) for i, name in enumerate(extracted, start=1)}
        penultimate = index.get("penultimate")
        first = ((stems[penultimate], f"* {stems[penultimate]} (before the output)")
                 if penultimate in layers else None)
        tensors = {}
        for name in layers:
            x = artifacts.check_rows(artifacts.load_npy(src / f"{name}.npy", dtype=np.floating, ndim=2, mmap=True,
                                                        what=f"activations of {name}"), n, src / f"{name}.npy")
            tensors[stems[name]] = x
        preds = confidence = None
        if index.get("task", "classify") == "classify" and (src / "preds.npy").exists():
            preds = artifacts.load_npy(src / "preds.npy", dtype=np.integer, ndim=1, what="predictions")
            confidence = artifacts.load_npy(src / "confidence.npy", dtype=np.floating, ndim=1, what="confidence")
            if len(preds) != n or len(confidence) != n:
                raise UserError(f"{src}: preds/confidence do not match labels.npy ({n} rows); "
                                f"rerun `dvc repro extract`")
        images = None
        if cfg.sprite:
            indices = artifacts.load_npy(src / "indices.npy", dtype=np.integer, ndim=1, what="indices")
            artifacts.check_rows(indices, n, src / "indices.npy")
            images = _thumbnails(indices.astype(np.int64), index.get("split", "test"))
            if projector.sprite_capacity(images.shape[2:]) < 2:
                raise UserError(f"projector: {images.shape[2]}x{images.shape[3]} px images are too large for "
                                f"an {projector.MAX_SPRITE_SIDE} px sprite; set projector.sprite: false")

        try:
            summary = projector.write_bundle(
                paths.PROJECTOR, tensors, labels=labels, classes=index["classes"], preds=preds,
                confidence=confidence, images=images, tensor_format=cfg.tensor_format,
                max_points=cfg.max_points, first=first,
                progress=lambda names: progress(names, desc="projector", unit="layer"))
        except ValueError as exc:
            raise UserError(f"projector: {exc}") from None
    for name, reason in summary["skipped"].items():
        log(f"warning: projector: layer {name} left out: {reason}")
    for name, info in summary["layers"].items():
        if info["format"] != cfg.tensor_format:
            log(f"note: projector: {name} written as TSV (its raw float32 bytes read as UTF-8 text, "
                f"which TensorBoard would misparse)")
    kept = summary["n_points"]
    sampled = f" (of {n}: evenly spaced, so the sprite fits 8192 px or projector.max_points)" if kept < n else ""
    log(f"wrote {len(summary['layers'])} layers x {kept} points{sampled} -> {paths.PROJECTOR}; "
        f"open with `tensorboard --logdir {paths.PROJECTOR}` (Projector tab)")
    summary["points"] = summary["points"].tolist()
    return summary
