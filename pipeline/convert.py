"""``python -m pipeline convert-weights in.pth out.safetensors``: a PyTorch checkpoint as safetensors.

The checkpoint is read with ``torch.load(weights_only=True)``: tensors, numbers, strings and plain
containers only, never a full unpickle, so a crafted file cannot run code. Accepted layouts: a state
dict (``{name: tensor}``), or a dict holding one under ``state_dict``, ``model_state_dict``, ``model``
or ``net`` (what training scripts usually save). A ``module.`` prefix on every key
(``nn.DataParallel``) is removed. Entries that are not tensors are left out and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import UserError

__all__ = ["read_checkpoint", "convert_weights"]

_NESTED = ("state_dict", "model_state_dict", "model", "net")


def _state_of(obj: Any) -> tuple[dict[str, Any], str]:
    """The state dict inside a loaded checkpoint and where it was found."""
    import torch

    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, "top level"
    if isinstance(obj, dict):
        for key in _NESTED:
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner, f"`{key}`"
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, "top level"
    raise UserError(f"no state dict found (got {type(obj).__name__}"
                    f"{' with keys ' + ', '.join(map(str, list(obj)[:6])) if isinstance(obj, dict) else ''}); "
                    f"save `model.state_dict()` with torch.save and convert that")


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tensors of the checkpoint at ``path`` (``{name: tensor}``, CPU) and notes (``found``, ``skipped``,
    ``stripped_prefix``). Every problem is a one-line UserError."""
    import pickle
    import re

    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; give the path of a .pth / .pt file")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(unsupported GLOBAL [\w.]+|Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+)", str(exc))
        what = found.group(1) if found else "a Python object that is not a tensor or plain container"
        raise UserError(f"{path}: refused: it holds {what}, and only tensors and plain containers are read "
                        f"(weights_only=True, never a full unpickle); save `model.state_dict()` with torch.save "
                        f"and convert that") from None
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {first[:160]}); "
                        f"save `model.state_dict()` with torch.save and convert that") from None
    try:
        state, found = _state_of(obj)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    skipped = len(state) - len(tensors)
    prefix = ""
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
        prefix = "module."
    return tensors, {"found": found, "skipped": skipped, "stripped_prefix": prefix, "tensors": len(tensors)}


def convert_weights(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Write the tensors of checkpoint ``src`` to safetensors ``dst`` (atomically); returns the notes."""
    from pipeline import artifacts

    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise UserError(f"{dst}: the output must end in .safetensors")
    tensors, notes = read_checkpoint(src)
    # safetensors refuses tensors that share memory (tied weights): each is written as its own copy
    artifacts.save_safetensors(dst, {k: v.clone() for k, v in tensors.items()})
    return notes
