"""TensorBoard Embedding Projector bundle: a pure writer (arrays in, files out; nothing read).

A bundle is one folder that ``tensorboard --logdir <folder>`` opens in its Projector tab::

    projector_config.pbtxt     one `embeddings { ... }` block per layer, paths relative to it
    tensors/<layer>.bytes      raw float32 little-endian, row-major (n, dim); or <layer>.tsv
    metadata.tsv               header row + one row per point (shared by every layer)
    sprite.png                 thumbnails of the inputs in row-major grid order (shared)
    events.out.tfevents.0.hidden-spaces   one marker summary so the Projector tab is active at once

How the plugin (tensorboard/plugins/projector/projector_plugin.py) reads it, and what follows:

- Every path is resolved against the pbtxt's folder and must stay inside it.
- A tensor file is first parsed as UTF-8 TSV; only a ``UnicodeDecodeError`` makes it fall back
  to raw float32 of ``tensor_shape``. Raw bytes that happen to be valid UTF-8 (an all-zero
  layer, for one) would be parsed as text and break every projector request, so such a
  layer is written as TSV instead (:func:`_misread_as_text`).
- Metadata with more than one column needs a header row (detected by a tab in line 1).
- The front end refuses sprites over 8192 px per side and reads ``single_image_dim`` as
  ``[width, height]``; the n-th point's thumbnail is the n-th cell, row-major. Points beyond
  what fits are dropped from tensors and metadata alike (:func:`select_points`), so the
  i-th row of every file is the same point.
- Tensors with fewer than 2 rows or 2 columns are hidden by the front end.
- The front end (tensorboard 2.x, `_generateUiForNewCheckpointForRun`) sorts its tensor menu:
  tensors with metadata first, then more rows first, then by name; it opens on the first entry
  and colours by nothing ("No color map") whatever the bundle says (bookmarks load only on a
  click). So names that sort in network order (``01_input``, ..., ``13_logits``) give the menu
  in network order, and the tensor to open on is listed once more under a name that sorts before
  all of them (``first`` in :func:`write_bundle`; same tensor file, no copy).
- The plugin decides in a background thread whether it has data, so a fresh TensorBoard lists
  the tab as inactive ("No dashboards are active") until the page is reloaded. An event file
  holding one summary tagged with the plugin name ``projector`` makes the tab active on the
  first page load; no other dashboard shows it.
"""

from __future__ import annotations

import codecs
import io
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from pipeline import artifacts

__all__ = [
    "MAX_SPRITE_SIDE", "CONFIG_NAME", "METADATA_NAME", "SPRITE_NAME", "TENSOR_DIR", "EVENT_NAME",
    "sprite_capacity", "select_points", "make_sprite", "metadata_tsv", "format_tsv",
    "write_tensor", "config_text", "marker_event", "write_bundle",
]

MAX_SPRITE_SIDE = 8192                # px; the projector front end refuses larger sprites
CONFIG_NAME = "projector_config.pbtxt"
METADATA_NAME = "metadata.tsv"
SPRITE_NAME = "sprite.png"
TENSOR_DIR = "tensors"
EVENT_NAME = "events.out.tfevents.0.hidden-spaces"
_TB_TEXT_CHUNK = 16 * 1024 * 1024     # tensorboard's GFile reads text in 16 Mi-character chunks
_CHUNK_VALUES = 1 << 14               # values formatted per vectorised TSV step (temporaries stay in cache)
_CHUNK_ROWS_VALUES = 1 << 21          # values read and converted from the source at a time


# --------------------------------------------------------------------------- points and sprite

def sprite_capacity(image_hw: Sequence[int], max_side: int = MAX_SPRITE_SIDE) -> int:
    """Most thumbnails of ``(H, W)`` pixels a square grid fits in ``max_side`` px per side."""
    h, w = int(image_hw[0]), int(image_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {h}x{w}")
    cols = max_side // max(h, w)
    return cols * cols


def select_points(n: int, limit: int | None) -> np.ndarray:
    """Rows kept when at most ``limit`` of ``n`` points may be shown: all, or evenly spaced.

    Evenly spaced (deterministic, order kept) rather than random: the extracted subset is
    already a seeded stratified sample, so a stride keeps the class balance.
    """
    if limit is None or n <= limit:
        return np.arange(n, dtype=np.int64)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(np.int64))


def _grid(n: int) -> int:
    """Side of the square sprite grid for n thumbnails (the inspector's neighbour list assumes square)."""
    return max(1, math.ceil(math.sqrt(n)))


def make_sprite(images: np.ndarray, max_side: int = MAX_SPRITE_SIDE) -> np.ndarray:
    """uint8 (n, C, H, W) with C in {1, 3} -> sprite (g*H, g*W) or (g*H, g*W, 3), g = ceil(sqrt(n)).

    Thumbnail i sits at row ``i // g``, column ``i % g``; unused cells stay black. The grid is
    square because the projector's neighbour list scales the sprite as g x g cells.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (n, 1 or 3, H, W), got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {images.dtype}")
    n, c, h, w = images.shape
    rows = cols = _grid(n)
    if rows * h > max_side or cols * w > max_side:
        raise ValueError(f"{n} thumbnails of {h}x{w} px need a {cols * w}x{rows * h} px sprite, over the "
                         f"{max_side} px limit; keep at most {sprite_capacity((h, w), max_side)} points")
    padded = np.zeros((rows * cols, c, h, w), dtype=np.uint8)
    padded[:n] = images
    # (rows, cols, C, H, W) -> (rows, H, cols, W, C) -> (rows*H, cols*W, C)
    sprite = padded.reshape(rows, cols, c, h, w).transpose(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)
    return sprite[..., 0] if c == 1 else sprite


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    with artifacts.atomic_path(path) as tmp:
        Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB").save(tmp, format="PNG", optimize=False)


# --------------------------------------------------------------------------- metadata

def _clean(values: np.ndarray) -> np.ndarray:
    """Strings safe inside one TSV cell: no tabs or line breaks."""
    out = np.asarray(values).astype(str)
    for bad in ("\t", "\r", "\n"):
        out = np.char.replace(out, bad, " ")
    return out


def metadata_tsv(labels: np.ndarray, classes: Sequence[str], preds: np.ndarray | None = None,
                 confidence: np.ndarray | None = None) -> str:
    """The metadata file: header + one row per point.

    Columns ``label  class`` (true label index and name), plus ``prediction  correct
    confidence`` (predicted class name, 1/0, max softmax probability) when ``preds`` is
    given. The projector labels points by the first non-numeric column (else the first), so
    ``correct`` is 1/0 rather than true/false: digits then show their label, named classes
    their name. Columns with <= 50 distinct values are coloured by category.
    """
    labels = np.asarray(labels).astype(np.int64)
    names = _clean(np.asarray(list(classes), dtype=object))
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"labels outside 0..{len(names) - 1}")
    header = ["label", "class"]
    cols = [labels.astype(str), names[labels]]
    if preds is not None:
        preds = np.asarray(preds).astype(np.int64)
        if preds.shape != labels.shape:
            raise ValueError(f"preds has shape {preds.shape}, labels {labels.shape}")
        if len(preds) and (preds.min() < 0 or preds.max() >= len(names)):
            raise ValueError(f"preds outside 0..{len(names) - 1}")
        header += ["prediction", "correct"]
        cols += [names[preds], np.where(preds == labels, "1", "0")]
        if confidence is not None:
            confidence = np.asarray(confidence, dtype=np.float64)
            if confidence.shape != labels.shape:
                raise ValueError(f"confidence has shape {confidence.shape}, labels {labels.shape}")
            header.append("confidence")
            cols.append(np.char.mod("%.4f", confidence))
    elif confidence is not None:
        raise ValueError("confidence needs preds")
    rows = ["\t".join(r) for r in zip(*[c.tolist() for c in cols])]
    return "\t".join(header) + "\n" + "".join(r + "\n" for r in rows)


# --------------------------------------------------------------------------- tensors

_POW10 = 10.0 ** np.arange(-64, 65)                 # scale factors, looked up by exponent + 64


def _word(*byte_arrays: Any) -> np.ndarray:
    """Little-endian uint32 words from four byte values (arrays or scalars): b0 | b1<<8 | b2<<16 | b3<<24."""
    out = np.zeros(np.broadcast(*byte_arrays).shape, dtype=np.uint32)
    for i, b in enumerate(byte_arrays):
        out |= np.asarray(b, dtype=np.uint32) << np.uint32(8 * i)
    return out


def _tsv_tables() -> dict[str, np.ndarray]:
    """Lookup tables (uint32 words) of the 16-byte cell ``-D.D DDDD De-X Y<sep>..`` of one value.

    A value with mantissa ``hi * 10**4 + lo`` (hi 100..999, lo 0..9999), exponent e (-64..64)
    and ``kept`` printed digits (1..7) is four words of characters and four of keep-flags.
    """
    hi, lo, e, kept = np.arange(1000), np.arange(10_000), np.arange(-64, 65), np.arange(8)
    ae = np.abs(e)
    d = lambda a, p: 48 + (a // p) % 10                                   # ASCII digit of a at place p
    lo_digits = (lo[:, None] // np.array([1000, 100, 10, 1])) % 10
    lo_nonzero = lo_digits[:, ::-1] != 0
    hi_digits = (hi[:, None] // np.array([100, 10, 1])) % 10
    hi_nonzero = hi_digits[:, ::-1] != 0
    return {
        "hi_w0": _word(ord("-"), d(hi, 100), ord("."), d(hi, 10)),           # sign d0 . d1
        "hi_w1": _word(d(hi, 1), 0, 0, 0),                                  # d2
        "lo_w1": _word(0, d(lo, 1000), d(lo, 100), d(lo, 10)),              # d3 d4 d5
        "lo_w2": _word(d(lo, 1), 0, 0, 0),                                  # d6
        "e_w2": _word(0, ord("e"), ord("-"), 48 + (ae // 10) % 10),         # e - x
        "e_w3": _word(48 + ae % 10, 0, 0, 0),                               # y
        "e_k2": _word(0, e != 0, e < 0, ae >= 10),
        "e_k3": _word(e != 0, 1, 0, 0),                                     # y, separator
        "k0": _word(0, 1, kept > 1, kept > 1),
        "k1": _word(kept > 2, kept > 3, kept > 4, kept > 5),
        "k2": _word(kept > 6, 0, 0, 0),
        "lo_trailing": np.where(lo_nonzero.any(1), lo_nonzero.argmax(1), 4).astype(np.int64),
        "hi_trailing": np.where(hi_nonzero.any(1), hi_nonzero.argmax(1), 3).astype(np.int64),
    }


_T = _tsv_tables()


def _format_flat(v: np.ndarray, first_col: int, dim: int) -> bytes:
    """Finite floats (a row-major run of a (n, dim) tensor from column ``first_col``) -> TSV bytes.

    No Python loop per value: each value becomes a 16-byte cell ``-D.DDDDDDe-XY<sep>``
    (7 significant digits) assembled from lookup tables as four uint32 words, plus a
    keep-mask that drops unused bytes (sign of positives, trailing mantissa zeros, ``e0``, a
    leading exponent zero, padding); zeros print as ``0``. Rows end in a newline, others a tab.
    """
    v = v.astype(np.float64, copy=False)
    mag = np.abs(v)
    zero = mag == 0
    mag[zero] = 1.0
    e = np.floor(np.log10(mag)).astype(np.int64)
    m = np.rint(mag * _POW10.take(70 - e)).astype(np.int64)           # 7 digits: 10**6 <= m < 10**7
    for _ in range(3):                                    # log10 off by one / rounding up to 10**7
        off = (m >= 10_000_000).astype(np.int64) - (m < 1_000_000)
        if not off.any():
            break
        e += off
        m = np.rint(mag * _POW10.take(70 - e)).astype(np.int64)
    m[zero] = 0
    e[zero] = 0
    hi, lo = np.divmod(m, 10_000)                         # (3 digits, 4 digits)
    trailing = np.where(lo == 0, 4 + _T["hi_trailing"].take(hi), _T["lo_trailing"].take(lo))
    kept = 7 - np.minimum(trailing, 6)                    # mantissa digits printed, 1..7
    ei = e + 64
    last = (np.arange(first_col, first_col + v.size) % dim) == dim - 1
    sep = np.where(last, np.uint32(ord("\n") << 8), np.uint32(ord("\t") << 8))
    chars = np.stack([_T["hi_w0"].take(hi),
                      _T["hi_w1"].take(hi) | _T["lo_w1"].take(lo),
                      _T["lo_w2"].take(lo) | _T["e_w2"].take(ei),
                      _T["e_w3"].take(ei) | sep], axis=1)
    keep = np.stack([_T["k0"].take(kept) | (np.signbit(v) & ~zero),
                     _T["k1"].take(kept),
                     _T["k2"].take(kept) | _T["e_k2"].take(ei),
                     _T["e_k3"].take(ei)], axis=1)
    return chars.view(np.uint8)[keep.view(bool)].tobytes()


def _tsv_chunks(x: np.ndarray) -> Iterable[bytes]:
    """TSV bytes of a (n, dim) array in pieces of ~``_CHUNK_VALUES`` values (cache-sized temporaries)."""
    n, dim = x.shape
    rows = max(1, _CHUNK_ROWS_VALUES // max(1, dim))      # rows read (and converted) at a time
    for i in range(0, n, rows):
        block = np.asarray(x[i:i + rows], dtype=np.float64).reshape(-1)
        if not np.isfinite(block).all():
            raise ValueError("tensor has NaN or infinite values")
        for j in range(0, block.size, _CHUNK_VALUES):
            yield _format_flat(block[j:j + _CHUNK_VALUES], j % dim, dim)


def format_tsv(x: np.ndarray) -> bytes:
    """(n, dim) finite floats -> TSV bytes, 7 significant digits (tab between values, newline after rows)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"tensor must be 2-D (n, dim), got shape {x.shape}")
    return b"".join(_tsv_chunks(x))


def _misread_as_text(raw: np.ndarray) -> bool:
    """True if TensorBoard would take these float32 bytes for UTF-8 text.

    Its reader decodes the first 16 Mi characters as UTF-8 before it falls back to binary; if
    they decode, it parses them as TSV and fails. Decoding the first 16 MiB of bytes is exact
    for files up to that size and errs towards "text" beyond it.
    """
    head = raw[:_TB_TEXT_CHUNK].tobytes()
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def write_tensor(path_stem: str | Path, x: np.ndarray, tensor_format: str = "bytes") -> Path:
    """Write (n, dim) values as ``<stem>.bytes`` (float32 little-endian) or ``<stem>.tsv``.

    Returns the path written: a ``bytes`` request becomes TSV when the raw bytes would be
    misread by TensorBoard (see :func:`_misread_as_text`). ``x`` may be a memory map.
    """
    if tensor_format not in ("bytes", "tsv"):
        raise ValueError(f"tensor_format must be 'bytes' or 'tsv', got {tensor_format!r}")
    if x.ndim != 2:
        raise ValueError(f"tensor must be 2-D (n, dim), got shape {x.shape}")
    path_stem = Path(path_stem)
    if tensor_format == "bytes":
        head_rows = _TB_TEXT_CHUNK // (4 * max(1, x.shape[1])) + 1
        head = np.ascontiguousarray(x[:head_rows], dtype="<f4")
        if not _misread_as_text(head.reshape(-1).view(np.uint8)):
            path = path_stem.with_name(path_stem.name + ".bytes")
            rows = max(1, _CHUNK_ROWS_VALUES // max(1, x.shape[1]))
            with artifacts.atomic_path(path) as tmp, open(tmp, "wb") as fh:
                for i in range(0, len(x), rows):
                    block = np.ascontiguousarray(x[i:i + rows], dtype="<f4")
                    if not np.isfinite(block).all():
                        raise ValueError("tensor has NaN or infinite values")
                    block.tofile(fh)
            return path
    path = path_stem.with_name(path_stem.name + ".tsv")
    with artifacts.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for piece in _tsv_chunks(x):
            fh.write(piece)
    return path


# --------------------------------------------------------------------------- config

def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def config_text(embeddings: Iterable[Mapping[str, Any]]) -> str:
    """``projector_config.pbtxt`` (ProjectorConfig in protobuf text format).

    Each mapping has ``tensor_name``, ``tensor_path``, ``tensor_shape`` (n, dim) and optionally
    ``metadata_path``, ``sprite_path`` and ``single_image_dim`` ([width, height]).
    """
    lines = ["# TensorBoard Embedding Projector bundle: tensorboard --logdir <this folder>, "
             "then the Projector tab.", "# Paths are relative to this file."]
    for emb in embeddings:
        lines.append("embeddings {")
        lines.append(f"  tensor_name: {_quote(emb['tensor_name'])}")
        lines.append(f"  tensor_path: {_quote(emb['tensor_path'])}")
        lines += [f"  tensor_shape: {int(s)}" for s in emb["tensor_shape"]]
        if emb.get("metadata_path"):
            lines.append(f"  metadata_path: {_quote(emb['metadata_path'])}")
        if emb.get("sprite_path"):
            lines.append("  sprite {")
            lines.append(f"    image_path: {_quote(emb['sprite_path'])}")
            lines += [f"    single_image_dim: {int(s)}" for s in emb["single_image_dim"]]
            lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"


def marker_event() -> bytes:
    """An event file (TFRecord framing) with one string summary owned by the ``projector`` plugin.

    TensorBoard marks a plugin active at once when any run has a summary whose metadata names
    it; without one the Projector tab starts inactive. Fixed wall time: same bytes every run.
    """
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    note = "TensorBoard Embedding Projector bundle written by hidden-spaces; see projector_config.pbtxt"
    value = summary_pb2.Summary.Value(
        tag="projector",
        metadata=summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="projector"),
            data_class=summary_pb2.DATA_CLASS_TENSOR),
        tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[note.encode()],
                                      tensor_shape=tensor_shape_pb2.TensorShapeProto()))
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    writer.write(event_pb2.Event(wall_time=0.0, file_version="brain.Event:2").SerializeToString())
    writer.write(event_pb2.Event(wall_time=0.0, step=0, summary=summary_pb2.Summary(value=[value])).SerializeToString())
    return buffer.getvalue()


# --------------------------------------------------------------------------- bundle

def write_bundle(out_dir: str | Path, tensors: Mapping[str, np.ndarray], *, labels: np.ndarray,
                 classes: Sequence[str], preds: np.ndarray | None = None,
                 confidence: np.ndarray | None = None, images: np.ndarray | None = None,
                 tensor_format: str = "bytes", max_points: int | None = None,
                 first: tuple[str, str] | None = None,
                 progress: Callable[[Iterable], Iterable] = lambda it: it) -> dict[str, Any]:
    """Write a whole bundle into ``out_dir``; return a summary.

    ``tensors``: layer name -> (n, dim) array (memory maps are fine: only kept rows are read),
    rows aligned with ``labels``, ``preds``, ``confidence`` and ``images`` (uint8 (n, C, H, W),
    or None for no sprite). At most ``max_points`` points are kept, and no more than the
    sprite can hold; the same rows go into every file. Layers with dim < 2 are skipped (the
    projector cannot show them). ``first = (tensor, menu_name)`` lists ``tensor`` again at the top
    of the projector's menu as ``menu_name``, which must sort before every tensor name, so the
    projector opens on it (see the module notes). ``progress`` wraps the loop over layers.
    """
    out_dir = Path(out_dir)
    labels = np.asarray(labels)
    n_total = len(labels)
    names = list(tensors)
    for name in names:
        if tensors[name].ndim != 2 or len(tensors[name]) != n_total:
            raise ValueError(f"tensor {name!r} has shape {tensors[name].shape}, expected ({n_total}, dim)")
    limit = max_points
    if images is not None:
        if len(images) != n_total:
            raise ValueError(f"{len(images)} images for {n_total} points")
        cap = sprite_capacity(images.shape[2:])
        if cap < 2:
            raise ValueError(f"thumbnails of {images.shape[2]}x{images.shape[3]} px leave room for {cap} in a "
                             f"{MAX_SPRITE_SIDE} px sprite; write the bundle without images")
        limit = cap if limit is None else min(limit, cap)
    keep = select_points(n_total, limit)
    subset = len(keep) < n_total
    if len(keep) < 2:
        raise ValueError(f"the projector needs at least 2 points, {len(keep)} kept")

    def rows(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else (np.asarray(a)[keep] if subset else np.asarray(a))

    artifacts.write_text(out_dir / METADATA_NAME,
                         metadata_tsv(rows(labels), classes, rows(preds), rows(confidence)))
    sprite_info: dict[str, Any] | None = None
    if images is not None:
        thumbs = np.asarray(images[keep] if subset else images)
        sprite = make_sprite(thumbs)
        _save_png(out_dir / SPRITE_NAME, sprite)
        h, w = thumbs.shape[2:]
        sprite_info = {"path": SPRITE_NAME, "single_image_dim": [int(w), int(h)],
                       "size": [int(sprite.shape[1]), int(sprite.shape[0])]}

    layers: dict[str, Any] = {}
    embeddings = []
    skipped: dict[str, str] = {}
    for name in progress(names):
        x = tensors[name]
        if x.shape[1] < 2:
            skipped[name] = f"dim {x.shape[1]} < 2: the projector shows only tensors with 2+ columns"
            continue
        if subset:
            x = x[keep]
        try:
            path = write_tensor(out_dir / TENSOR_DIR / name, x, tensor_format)
        except ValueError as exc:
            raise ValueError(f"layer {name}: {exc}") from None
        rel = path.relative_to(out_dir).as_posix()
        fmt = "bytes" if path.suffix == ".bytes" else "tsv"
        layers[name] = {"path": rel, "format": fmt, "shape": [int(len(keep)), int(x.shape[1])]}
        embeddings.append({"tensor_name": name, "tensor_path": rel, "tensor_shape": layers[name]["shape"],
                           "metadata_path": METADATA_NAME,
                           "sprite_path": sprite_info and sprite_info["path"],
                           "single_image_dim": sprite_info and sprite_info["single_image_dim"]})
    if not embeddings:
        raise ValueError("no layer can be shown (every one has dim < 2)")
    if first is not None:
        key, menu_name = first
        if key not in layers:
            raise ValueError(f"first: {key!r} is not a written tensor ({', '.join(layers)})")
        if any(menu_name >= name for name in layers):
            raise ValueError(f"first: {menu_name!r} must sort before every tensor name, or the projector "
                             f"opens on another one")
        embeddings.insert(0, {**next(e for e in embeddings if e["tensor_name"] == key), "tensor_name": menu_name})
    artifacts.write_text(out_dir / CONFIG_NAME, config_text(embeddings))
    artifacts.write_bytes(out_dir / EVENT_NAME, marker_event())
    return {"n_points": int(len(keep)), "n_total": int(n_total), "layers": layers, "skipped": skipped,
            "sprite": sprite_info, "points": keep, "first": first and first[1]}
