"""``data/model/model.json``: the trained model's description, read and checked without torch.

The train stage writes it (:func:`pipeline.models.model_meta` builds it; the format is in
ARTIFACTS.md). Stages that only need the description (diagnose) read it here, without importing
torch and the model families (1.3 s per run); :mod:`pipeline.models` re-exports :func:`load_meta`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import artifacts
from pipeline.config import ModelConfig
from pipeline.errors import UserError

__all__ = ["CONFIG_FILE", "FULL_META", "load_meta"]

CONFIG_FILE = "model.json"


def _count(value: Any, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


FULL_META = ("arch", "classes", "mean", "std", "layers")   # what extract, export and diagnose read besides the model


def _meta_problem(meta: Any, full: bool) -> str | None:
    """What is wrong with a parsed model.json (the train format in ARTIFACTS.md), or None. Always
    needed: ``model``, ``input_shape``, ``n_classes``; the keys of :data:`FULL_META` are checked when
    present and required when ``full``."""
    from pydantic import ValidationError

    if not isinstance(meta, dict):
        return f"expected a JSON object, got {type(meta).__name__}"
    if not isinstance(meta.get("model"), dict):
        return "no `model` section"
    try:
        ModelConfig.model_validate(meta["model"])
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"] if not str(p).startswith("literal["))
        return f"model.{key}: {' '.join(err['msg'].replace('Value error, ', '').split())}"
    shape = meta.get("input_shape")
    if not isinstance(shape, list) or len(shape) != 3 or not all(_count(v) for v in shape):
        return f"`input_shape` = {str(shape)[:40]} is not [C, H, W]"
    if not _count(meta.get("n_classes")):
        return "`n_classes` is not a positive integer"
    if full:
        missing = [key for key in FULL_META if key not in meta]
        if missing:
            return f"no `{missing[0]}`"
    if "arch" in meta and not isinstance(meta["arch"], str):
        return "`arch` is not a name"
    if "classes" in meta and (not isinstance(meta["classes"], list) or len(meta["classes"]) != meta["n_classes"]):
        return f"`classes` is not a list of n_classes = {meta['n_classes']} names"
    for key in ("mean", "std"):
        values = meta.get(key, [0.0] * shape[0])
        if (not isinstance(values, list) or len(values) != shape[0]
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            return f"`{key}` is not a list of {shape[0]} numbers (one per channel)"
    layers = meta.get("layers", [])
    if not isinstance(layers, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                               and isinstance(r.get("type"), str) for r in layers):
        return "`layers` is not a list of {name, type, ...}"
    return None


def load_meta(directory: str | Path, *, full: bool = True) -> dict[str, Any]:
    """``model.json`` in ``directory``, checked (``full``: every key the stages read, see
    :data:`FULL_META`); a damaged or foreign file gives a one-line UserError."""
    path = Path(directory) / CONFIG_FILE
    meta = artifacts.load_json(path, "model config")
    problem = _meta_problem(meta, full)
    if problem:
        raise UserError(f"{path}: malformed model config ({problem}); rerun `dvc repro train`")
    return meta
