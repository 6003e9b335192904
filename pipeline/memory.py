"""Will a stage fit in memory? An estimate before it starts, checked against the free memory.

Each analysis stage holds a few copies of the widest layer at a time (the extract stage: the
images and one chunk per layer; the outputs stream into memory maps). :func:`estimate` turns
the stage's sizes into bytes with per-stage factors measured on this project's stages (peak
resident memory at 1,000 and 10,000 points, ``benchmarks/real_sizes.py``), rounded up;
:func:`check_fits` compares the estimate with :func:`available_memory` and, when it does not
fit, stops the stage before it writes anything, with one line naming what to shrink.

``HIDDEN_SPACES_MEMORY`` (e.g. ``4G``, ``512M``, or bytes) sets the memory a stage may plan
to use instead of the free memory the system reports (a shared machine, a container whose
limit the kernel does not show, or a test); ``0`` turns the check off.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Optional

from pipeline.errors import UserError

__all__ = ["LIMIT_VARIABLE", "KNOBS", "BASE_BYTES", "PER_VALUE", "available_memory", "parse_size", "estimate",
           "check_fits", "check_layers", "workers_that_fit", "gib"]

LIMIT_VARIABLE = "HIDDEN_SPACES_MEMORY"
KNOBS = ("lower extract.n_samples, use extract.dtype: float16, list fewer extract.layers, "
         "or extract.split: test")
BASE_BYTES = 700 * 2 ** 20          # interpreter, torch / scikit-learn / numba imports, small arrays
# bytes per activation value of the widest layer held at once, per stage (see the module docstring)
PER_VALUE = {"extract": 0.0, "projector": 8.0, "reduce": 28.0, "probe": 36.0, "diagnose": 12.0,
             "render": 12.0}


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2 ** 30:.1f} GiB"


def parse_size(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` -> bytes; ValueError otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", text)
    if not match:
        raise ValueError(text)
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * 1024 ** power)


def _cgroup_free() -> Optional[int]:
    """What a cgroup v2 memory limit leaves (containers), or None without one."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_memory() -> Optional[int]:
    """Bytes a new allocation can get without swapping: ``HIDDEN_SPACES_MEMORY`` if set, else
    the kernel's MemAvailable (and a cgroup limit, if lower); None where neither is known (then
    nothing is checked)."""
    override = os.environ.get(LIMIT_VARIABLE)
    if override:
        try:
            value = parse_size(override)
        except ValueError:
            raise UserError(f"{LIMIT_VARIABLE}={override!r} is not a size; use e.g. 4G, 512M or a number "
                            f"of bytes (0 turns the memory check off)") from None
        return value or None
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        free = None
    group = _cgroup_free()
    if group is not None:
        free = group if free is None else min(free, group)
    return free


def estimate(stage: str, n: int, dims: Mapping[str, int], itemsize: int, *, extra: int = 0) -> int:
    """Bytes ``stage`` needs at its peak for ``n`` points of layers with ``dims`` features stored
    with ``itemsize`` bytes per value: :data:`BASE_BYTES`, the widest layer as loaded, the
    stage's float64 working copies of it (:data:`PER_VALUE`), and ``extra`` (e.g. images)."""
    widest = max(dims.values(), default=0)
    values = n * widest
    return int(BASE_BYTES + values * (itemsize + PER_VALUE[stage]) + extra)


def check_fits(stage: str, need: int, what: str) -> None:
    """Raise a one-line :class:`UserError` when ``need`` bytes exceed the available memory.

    ``what`` says what the estimate is for (e.g. ``"13 layers x 70000 points, widest conv1
    (4704)"``); the message names the knobs that shrink it.
    """
    free = available_memory()
    if free is None or need <= free:
        return
    source = f"{LIMIT_VARIABLE}={os.environ[LIMIT_VARIABLE]}" if os.environ.get(LIMIT_VARIABLE) else "free"
    raise UserError(f"{stage} needs about {gib(need)} of memory for {what}, but only {gib(free)} is available "
                    f"({source}); {KNOBS}, then rerun (or set {LIMIT_VARIABLE} to override)")


def _sizes(index: Mapping) -> tuple[int, dict[str, int], int]:
    """``layers.json``'s points, each layer's width and the bytes per stored value."""
    dims = {str(row["name"]): int(row.get("dim") or 0) for row in index.get("layers") or []}
    return int(index.get("n") or 0), dims, 2 if index.get("dtype") == "float16" else 4


def check_layers(stage: str, index: Mapping, *, extra: int = 0) -> int:
    """:func:`check_fits` for an analysis stage reading ``data/activations`` described by ``index``
    (``layers.json``: ``n``, ``dtype``, each layer's ``dim``); returns the estimate in bytes."""
    n, dims, itemsize = _sizes(index)
    need = estimate(stage, n, dims, itemsize, extra=extra)
    if dims:
        widest = max(dims, key=lambda name: dims[name])
        check_fits(stage, need, f"{len(dims)} layers x {n} points (widest {widest}: {dims[widest]} values "
                                f"per point, {index.get('dtype', 'float32')})")
    return need


def workers_that_fit(stage: str, index: Mapping, wanted: int) -> int:
    """How many of ``wanted`` worker processes, each holding the stage's working copies of the
    widest layer (:func:`estimate`, with its own imports), fit in the available memory beside
    the stage's own process; at least 1 (the stage then runs its jobs itself, as
    :func:`check_layers` already allowed for)."""
    if wanted <= 1:
        return max(1, wanted)
    free = available_memory()
    if free is None:
        return wanted
    each = estimate(stage, *_sizes(index))
    return max(1, min(wanted, (free - BASE_BYTES) // max(each, 1)))
