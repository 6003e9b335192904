"""Every file format the stages read or write, in one place.

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so a killed
stage never leaves a half-written file that looks complete. Reads check what they get and turn
damaged or foreign files into one-line :class:`UserError` messages. Nothing here unpickles:
arrays are ``.npy`` with ``allow_pickle=False``, weights are safetensors, configs are JSON.

:func:`stage_outputs` wraps a stage: it clears the stage's outputs first and removes them
again if the stage fails, so DVC (which caches whatever exists after exit 0) never sees a
partial result, and a rerun never mixes old and new files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
import tokenize
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from pipeline import paths
from pipeline.errors import UserError

__all__ = [
    "atomic_path", "write_bytes", "write_text", "save_json", "load_json", "save_npy", "load_npy",
    "save_safetensors", "load_safetensors", "save_csv", "save_figure", "save_animation", "stage_outputs", "remove",
    "SAFE_NAME", "check_name", "load_layer_index", "load_labels", "check_complete", "require_free_space",
    "reserve", "format_size",
]


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux
    /proc/self/status); elsewhere set and put back at once, at write time, never at import."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.
    ``keep_suffix``: the temporary name ends in ``path``'s suffix (writers such as matplotlib and
    Pillow pick the format from it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_suffix:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())        # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays to Python; NaN/inf to None (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def save_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def check_complete(path: str | Path) -> None:
    """Refuse to read ``path`` from an output folder its stage did not finish (a SIGKILL outside
    DVC, a copy cut short): the stage writes the folder's marker (:data:`paths.COMPLETE_WHEN`) last,
    so a folder without it is incomplete, whatever else it holds."""
    found = paths.output_folder(Path(path))
    if found is None:
        return
    folder, marker, stage = found
    if folder.is_dir() and not (folder / marker).is_file():
        raise UserError(f"{folder}: incomplete ({marker}, which {stage} writes last, is missing: the stage was "
                        f"interrupted); rerun it (`dvc repro {stage}`)")


def load_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    check_complete(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found; run the stage that makes it (`dvc repro`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: damaged JSON ({exc}); delete it and rerun `dvc repro`") from None


def save_npy(path: str | Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def load_npy(path: str | Path, *, dtype: Any = None, ndim: int | None = None,
             mmap: bool = False, what: str = "array") -> np.ndarray:
    """Load a .npy without unpickling; check kind and number of dimensions."""
    path = Path(path)
    check_complete(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found; run the stage that makes it (`dvc repro`)")
    problem = _npy_problem(path)
    if problem:
        raise UserError(f"{path}: {problem}; delete it and rerun `dvc repro`")
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        reason = ("holds pickled Python objects, not numbers" if "pickle" in str(exc) or "Python objects" in str(exc)
                  else f"not a plain numeric .npy ({first_line(exc)})")
        raise UserError(f"{path}: {reason}; delete it and rerun `dvc repro`") from None
    except (OSError, EOFError, zipfile.BadZipFile, SyntaxError, tokenize.TokenError) as exc:  # (np.load reads "PK\x03\x04..." as a .npz;
        # a damaged header dict reaches Python's parser)
        raise UserError(f"{path}: truncated or damaged .npy ({first_line(exc)}); delete it and rerun `dvc repro`") from None
    if not isinstance(array, np.ndarray):                 # np.load opens a .npz (zip) archive whatever the name
        array.close()
        raise UserError(f"{path}: a .npz archive, not a .npy array; delete it and rerun `dvc repro`")
    if array.dtype.kind not in "biuf":                    # strings, structured records, complex, dates
        raise UserError(f"{path}: {what} has dtype {array.dtype}, not a plain numeric .npy; "
                        f"delete it and rerun `dvc repro`")
    if ndim is not None and array.ndim != ndim:
        raise UserError(f"{path}: {what} has shape {array.shape}, expected {ndim} dimensions; "
                        f"delete it and rerun `dvc repro`")
    if dtype is not None and not np.issubdtype(array.dtype, dtype):
        raise UserError(f"{path}: {what} has dtype {array.dtype}, expected {_dtype_name(dtype)}; "
                        f"delete it and rerun `dvc repro`")
    return array


def _npy_problem(path: Path) -> str | None:
    """What makes ``path`` not a .npy file at all (a folder, other bytes), naming a symlink's
    target; None when it starts like one (numpy then checks the rest)."""
    link = f" (a symlink to {os.readlink(path)})" if path.is_symlink() else ""
    if path.is_dir():
        return f"a folder{link}, not a .npy file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        return f"cannot be read{link} ({exc.strerror or exc})"
    if len(head) < 6 or head.startswith(b"PK\x03\x04"):   # empty, cut short or a .npz: numpy says which below
        return None
    if head != b"\x93NUMPY":
        return f"not a .npy file{link}: it starts with {head!r}, a .npy with b'\\x93NUMPY'"
    return None


EXTRACT_FIX = "rerun extract (`dvc repro extract`)"


def check_rows(array: np.ndarray, n: int, where: str | Path, fix: str = EXTRACT_FIX) -> np.ndarray:
    """``array`` if it has ``n`` rows (one per extracted point, as labels.npy), else the one
    UserError for that fault: ``<where>: <rows> rows but labels.npy has <n>; <fix>``."""
    if len(array) != n:
        raise UserError(f"{where}: {len(array)} rows but labels.npy has {n}; {fix}")
    return array


def load_rows(path: str | Path, n: int, *, what: str = "activations", mmap: bool = False,
              fix: str = EXTRACT_FIX) -> np.ndarray:
    """A 2-D per-point array (a layer's activations, a map's coordinates) with exactly ``n`` rows,
    checked (:func:`load_npy`, :func:`check_rows`)."""
    return check_rows(load_npy(path, ndim=2, mmap=mmap, what=what), n, path, fix)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _dtype_name(dtype: Any) -> str:
    """``uint8`` for a concrete dtype, ``integer`` / ``floating`` for numpy's abstract ones."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return getattr(dtype, "__name__", str(dtype))


# Layer names become file and folder names (``<layer>.npy``, ``snapshots/<layer>/``): no separators,
# no leading dot (no ``..``, no hidden files), so a crafted layers.json cannot write outside a stage's folder.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SNAPSHOT_DIR = re.compile(rf"^{paths.SNAPSHOTS}/step_[0-9]{{{paths.STEP_DIGITS},}}$")   # paths.activation_snapshot


def check_name(name: Any, where: str) -> str:
    """``name`` if it is a safe layer name (:data:`SAFE_NAME`), else a UserError naming ``where``."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or len(name) > 200:
        shown = repr(name)[:60]
        raise UserError(f"{where}: layer name {shown} is not a plain file name (letters, digits, _ . -); "
                        f"delete it and rerun extract (`dvc repro extract`)")
    return name


def _index_problem(index: Any) -> str | None:
    """What is wrong with a parsed layers.json (the extract format in ARTIFACTS.md), or None."""
    if not isinstance(index, dict):
        return f"expected a JSON object, got {type(index).__name__}"
    layers = index.get("layers")
    if not isinstance(layers, list) or not layers:
        return "no `layers` list"
    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    for row in layers:
        if not isinstance(row, dict) or "name" not in row:
            return "a `layers` entry without a name"
        shape, dim = row.get("shape"), row.get("dim")
        if not isinstance(shape, list) or not all(count(v) for v in shape) or not count(dim) \
                or dim != math.prod(shape):
            return f"layer {str(row['name'])[:40]!r}: `shape` {str(shape)[:30]} and `dim` {str(dim)[:20]} disagree"
    names = [row["name"] for row in layers]
    if len(set(map(str, names))) != len(names):
        return "a layer name appears twice"
    if not isinstance(index.get("classes"), list) or not index["classes"]:
        return "no `classes` list"
    if not count(index.get("n")):
        return f"n = {str(index.get('n'))[:20]} is not a count"
    for key in ("snapshot_layers", "nonfinite_layers"):
        value = index.get(key)
        if value is not None and not isinstance(value, list):
            return f"`{key}` is not a list"
    snapshots = index.get("snapshots") or []
    if not isinstance(snapshots, list):
        return "`snapshots` is not a list"
    for entry in snapshots:
        if (not isinstance(entry, dict) or not isinstance(entry.get("step"), int)
                or not isinstance(entry.get("dir"), str) or not _SNAPSHOT_DIR.match(entry["dir"])):
            return f"malformed snapshot entry {json.dumps(entry)[:60]}"
    return None


def load_layer_index(directory: str | Path) -> dict:
    """``<directory>/layers.json`` (extract's index of data/activations), checked: a non-empty layer
    list, safe file names for every layer (also ``snapshot_layers``, ``nonfinite_layers``), well-formed
    snapshot entries. A damaged or crafted index gives a one-line UserError."""
    path = Path(directory) / "layers.json"
    index = load_json(path, "activation index (layers.json)")
    problem = _index_problem(index)
    if problem:
        raise UserError(f"{path}: {problem}; delete it and rerun extract (`dvc repro extract`)")
    for row in index["layers"]:
        check_name(row["name"], str(path))
    for key in ("snapshot_layers", "nonfinite_layers"):
        for name in index.get(key) or []:
            check_name(name, f"{path} ({key})")
    return index


def load_labels(path: str | Path, n_classes: int, *, what: str = "labels") -> np.ndarray:
    """Integer class indices (n,) in ``0..n_classes - 1`` (any range when ``n_classes`` is 0) as int64."""
    labels = load_npy(path, dtype=np.integer, ndim=1, what=what)
    if n_classes and len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise UserError(f"{path}: {what} outside 0..{n_classes - 1} (found {int(labels.min())}..{int(labels.max())}) "
                        f"for {n_classes} classes; delete it and rerun extract (`dvc repro extract`)")
    return labels.astype(np.int64)


def save_safetensors(path: str | Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata) if metadata else None)


def load_safetensors(path: str | Path) -> dict:
    """Load tensors from a safetensors file (no code can run); damaged files give a UserError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    check_complete(path)
    if not path.exists():
        raise UserError(f"{path}: weights file not found; train first (`dvc repro train`) or fix model.weights")
    if path.is_dir():
        raise UserError(f"{path}: a folder, not a weights file; point model.weights at a .safetensors file in it")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: not a valid safetensors file ({first_line(exc)}); weights must be saved with "
                        f"safetensors.torch.save_file (pickled .pt files are refused)") from None


def save_csv(path: str | Path, columns: Mapping[str, Sequence], float_format: str = "%.5g") -> None:
    """Write named columns as CSV with a header, vectorised (no per-value Python formatting)."""
    names = list(columns)
    cols = [np.asarray(columns[n]) for n in names]
    n = len(cols[0]) if cols else 0
    if any(len(c) != n for c in cols):
        raise ValueError("all CSV columns must have the same length")
    parts = []
    for c in cols:
        if c.dtype.kind == "f":
            parts.append(np.char.mod(float_format, c))
        elif c.dtype.kind in "biu":
            parts.append(c.astype(str))
        else:                                   # text (class names): RFC 4180 quoting where needed
            parts.append(_csv_cells(c.astype(str)))
    body = ""
    if n:
        table = np.stack(parts, axis=1)
        body = "\n".join(",".join(row) for row in table.tolist()) + "\n"
    write_text(path, ",".join(names) + "\n" + body)


def _csv_cells(text: np.ndarray) -> np.ndarray:
    """Quote cells holding a comma, quote or line break ("a, b" -> '"a, b"', '"' -> '""')."""
    special = np.zeros(text.shape, dtype=bool)
    for ch in (",", '"', "\n", "\r"):
        special |= np.char.find(text, ch) >= 0
    if not special.any():
        return text
    text = text.astype(object)
    text[special] = ['"' + t.replace('"', '""') + '"' for t in text[special]]
    return text.astype(str)


def save_figure(path: str | Path, fig: Any, dpi: int = 110) -> None:
    """Save a matplotlib Figure atomically (format from the suffix, e.g. .png), then close it."""
    path = Path(path)
    try:
        with atomic_path(path, keep_suffix=True) as tmp:
            fig.savefig(tmp, dpi=dpi, facecolor="white")
    finally:
        _close_figure(fig)


def save_animation(path: str | Path, animation: Any, dpi: int = 80, fps: float = 2.5) -> None:
    """Save a matplotlib Animation as an animated GIF (Pillow writer, loops forever) atomically."""
    from matplotlib.animation import PillowWriter

    path = Path(path)
    try:
        with atomic_path(path, keep_suffix=True) as tmp:
            animation.save(tmp, writer=PillowWriter(fps=fps), dpi=dpi, savefig_kwargs={"facecolor": "white"})
    finally:
        fig = getattr(animation, "_fig", None)        # matplotlib keeps the figure there
        if fig is not None:
            _close_figure(fig)


def _close_figure(fig: Any) -> None:
    """Release a figure: close it if pyplot manages it, and drop its artists either way."""
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)
    fig.clear()


def format_size(n_bytes: float) -> str:
    """``1.5 GiB``, ``12.0 MiB``, ``800 KiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{math.ceil(n_bytes / 1024)} KiB"


def require_free_space(folder: str | Path, needed: int, what: str, fix: str) -> None:
    """Refuse to start writing ``needed`` bytes into ``folder`` when its disk has less free space."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(f"{folder}: {what} need {format_size(needed)}, but only {format_size(free)} are free "
                        f"there; {fix}")


def reserve(path: str | Path, fix: str) -> None:
    """Allocate the disk blocks of ``path`` (a file about to be written through a memory map) now.

    A write through a memory map into a sparse file on a full disk is a SIGBUS that kills the
    process (exit 135, partial files left behind), not an exception. Allocated first, a full disk
    is an error here, and the stage's outputs are removed as after any other error.
    """
    path = Path(path)
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"{path.parent}: disk full while reserving {format_size(size)} for {path.name}; "
                            f"{fix}") from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):   # no fallocate here: checked before
            raise
    finally:
        os.close(fd)


def remove(path: str | Path) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM inside the block (main thread only), then restore the handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def stage_outputs(*outputs: str | Path) -> Iterator[None]:
    """Clear a stage's outputs, run it, and remove the outputs again if it fails.

    DVC deletes outputs before a stage runs and caches whatever exists after exit 0; when a
    stage runs outside DVC this gives the same clean slate. On any exception (including
    KeyboardInterrupt) the partial outputs are removed before the error propagates.
    """
    for out in outputs:
        blocker = next((p for p in Path(out).parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise UserError(f"{blocker}: a file stands where the folder for {out} should be; move or delete it "
                            f"and rerun")
    for out in outputs:
        try:
            remove(out)
        except OSError as exc:             # rmtree names only the entry (`input.npy`): say which folder
            raise UserError(f"{out}: cannot clear the previous outputs ({exc.strerror or exc} on "
                            f"{Path(out) / exc.filename if exc.filename else out}); make {out} writable for you "
                            f"(or delete it) and rerun; nothing was changed") from None
    try:
        yield
    except BaseException as exc:
        with _signals_held():                      # a second Ctrl-C must not stop the clean-up half-way
            for out in outputs:
                with contextlib.suppress(OSError):
                    remove(out)
        if not any(Path(out).exists() for out in outputs):
            with contextlib.suppress(AttributeError):
                exc.outputs_removed = True         # type: ignore[attr-defined]  # the CLI says so
        raise
