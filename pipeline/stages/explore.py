"""explore stage: one self-contained interactive page of every map -> plots/explorer.html.

Reads ``data/activations`` (labels, predictions, confidence, layer order, snapshot steps),
``data/prepared/test_images.npy`` (thumbnails), every ``data/embeddings/<method>/`` (maps and
snapshot maps) with ``metrics/embeddings/<method>.json`` and ``metrics/probes.json``, and writes
the page that :func:`pipeline.explorer.explorer_html` builds (Bokeh, JavaScript inline; it opens
from disk with no server and no network).

:func:`load_run` reads one run through any reader with ``read_json`` / ``read_npy`` (this folder,
another folder, or a git revision through DVC: ``python -m pipeline explore A B``, in
:mod:`pipeline.stages.explore_runs`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from pipeline import artifacts, paths
from pipeline.config import METHODS, ExploreConfig, Params
from pipeline.errors import UserError
from pipeline.runtime import log

__all__ = ["run", "load_run", "Folder", "RunData", "pick_rows", "thin_frames", "write_page"]

_REBUILD = "run `dvc repro` (or `dvc pull`)"


class Reader(Protocol):
    label: str

    def read_json(self, path: str | Path, *, required: bool = True) -> Any: ...

    def read_npy(self, path: str | Path, *, required: bool = True, ndim: int | None = None) -> np.ndarray | None: ...


class Folder:
    """A run's files in a project folder (the workspace, or a copy of another run)."""

    def __init__(self, root: str | Path = ".", label: str = "workspace"):
        self.root = Path(root)
        self.label = label

    def _path(self, path: str | Path, required: bool) -> Path | None:
        full = self.root / path
        if full.is_file():
            return full
        if required:
            raise UserError(f"{full} not found; {_REBUILD}")
        return None

    def read_json(self, path: str | Path, *, required: bool = True) -> Any:
        full = self._path(path, required)
        return None if full is None else artifacts.load_json(full, _what(path))

    def read_npy(self, path: str | Path, *, required: bool = True, ndim: int | None = None) -> np.ndarray | None:
        full = self._path(path, required)
        return None if full is None else artifacts.load_npy(full, ndim=ndim, what=_what(path), mmap=True)


def _what(path: str | Path) -> str:
    """data/prepared/test_images.npy -> "test images" (the name error messages use)."""
    return Path(path).stem.replace("_", " ")


@dataclass
class RunData:
    """One run as the explorer needs it, all rows (before any subset)."""

    run: Any                        # pipeline.explorer.ExplorerRun
    labels: np.ndarray              # (n,) int
    indices: np.ndarray             # (n,) rows of data/prepared/test_images.npy
    classes: list[str]
    dataset: str | None


def thin_frames(n_frames: int, keep: int) -> list[int]:
    """At most ``keep`` evenly spaced frame numbers out of ``n_frames``, first and last included."""
    if n_frames <= keep:
        return list(range(n_frames))
    if keep == 1:
        return [n_frames - 1]
    return sorted({int(round(v)) for v in np.linspace(0, n_frames - 1, keep)})


def pick_rows(labels: np.ndarray, max_points: int | None, seed: int) -> np.ndarray:
    """All rows, or a stratified seeded subset of ``max_points`` (sorted)."""
    from pipeline.datasets import stratified_subset

    if max_points is None or len(labels) <= max_points:
        return np.arange(len(labels))
    return stratified_subset(labels, max_points, seed=seed)


def _classes(index: dict, labels: np.ndarray) -> list[str]:
    classes = index.get("classes")
    if isinstance(classes, list) and classes:
        return [str(c) for c in classes]
    return [str(k) for k in range(int(labels.max()) + 1 if len(labels) else 1)]


def load_run(files: Reader, *, methods: Sequence[str] | None, max_snapshots: int,
             ignore: set[str] = frozenset()) -> RunData:
    """Read one run's layers, maps, snapshot maps and scores. ``methods`` None: every method with
    maps; ``ignore``: paths to leave out (outputs made from older activations, see compare)."""
    from pipeline.explorer import ExplorerRun, Snapshot

    act = paths.ACTIVATIONS
    index = files.read_json(act / "layers.json")
    if not isinstance(index, dict) or not isinstance(index.get("layers"), list):
        raise UserError(f"{files.label}: {act}/layers.json is not an activation index; {_REBUILD}")
    layers = [artifacts.check_name(row.get("name") if isinstance(row, dict) else None, f"{act}/layers.json")
              for row in index["layers"]]
    labels = np.asarray(files.read_npy(act / "labels.npy", ndim=1)).astype(np.int64)
    indices = np.asarray(files.read_npy(act / "indices.npy", ndim=1)).astype(np.int64)
    n = len(labels)
    if len(indices) != n:
        raise UserError(f"{files.label}: {act}/indices.npy has {len(indices)} rows but labels.npy {n}; {_REBUILD}")
    classes = _classes(index, labels)
    if n and (labels.min() < 0 or labels.max() >= len(classes)):
        raise UserError(f"{files.label}: {act}/labels.npy holds labels outside 0..{len(classes) - 1}; {_REBUILD}")

    def rows(path: Path, what: str, ndim: int, required: bool = False) -> np.ndarray | None:
        arr = files.read_npy(path, required=required, ndim=ndim)
        if arr is not None and len(arr) != n:
            raise UserError(f"{files.label}: {path} has {len(arr)} rows but labels.npy has {n}; {_REBUILD}")
        return None if arr is None else np.asarray(arr)

    preds = rows(act / "preds.npy", "predictions", 1)
    confidence = rows(act / "confidence.npy", "confidence", 1) if preds is not None else None

    wanted = list(methods) if methods else list(METHODS)
    maps: dict[str, dict[str, np.ndarray]] = {}
    scores: dict[str, dict] = {}
    skipped: dict[str, dict[str, str]] = {}
    snapshots: dict[str, list] = {}
    snapshot_layers = [s for s in index.get("snapshot_layers") or [] if s in layers]
    snap_layer = (index.get("penultimate") if index.get("penultimate") in snapshot_layers
                  else (snapshot_layers[0] if snapshot_layers else None))
    steps_meta = {int(e["step"]): e for e in index.get("snapshots") or [] if isinstance(e, dict) and "step" in e}
    for method in wanted:
        folder = paths.embedding_dir(method)
        info = None if folder.as_posix() in ignore else files.read_json(folder / "info.json", required=False)
        if not isinstance(info, dict):
            if methods:
                raise UserError(f"{files.label}: explore.methods lists {method}, but there are no {method} maps "
                                f"({folder}/info.json); run `dvc repro reduce@{method}` or leave it out")
            continue
        layer_info = info.get("layers") if isinstance(info.get("layers"), dict) else {}
        found: dict[str, np.ndarray] = {}
        for name in layers:
            row = layer_info.get(name) or {}
            if row.get("status") not in (None, "ok"):
                skipped.setdefault(method, {})[name] = str(row.get("reason") or "skipped")
                continue
            if name not in layer_info:
                continue
            xy = rows(folder / f"{name}.npy", f"{method} map", 2)
            if xy is not None:
                found[name] = xy
        if not found:
            continue
        maps[method] = found
        metrics_path = paths.embedding_metrics(method)
        got = None if metrics_path.as_posix() in ignore else files.read_json(metrics_path, required=False)
        scores[method] = got if isinstance(got, dict) else {}
        steps = (info.get("snapshots") or {}).get(snap_layer) if snap_layer else None
        if steps:
            frames = []
            for k in thin_frames(len(steps), max_snapshots):
                step = int(steps[k])
                xy = rows(paths.embedding_snapshot(snap_layer, step, folder / paths.SNAPSHOTS),
                          f"{method} snapshot map", 2)
                if xy is None:
                    continue
                meta = steps_meta.get(step) or {}
                frames.append(Snapshot(step=step, epoch=_float(meta.get("epoch")), coords=xy,
                                       accuracy=_snapshot_accuracy(files, meta, labels)))
            if frames:
                snapshots[method] = frames
    if not maps:
        raise UserError(f"{files.label}: no maps to explore in {paths.EMBEDDINGS}; run the reduce stages "
                        f"(`dvc repro reduce@tsne`, ...) first")
    probes = None if paths.PROBE_METRICS.as_posix() in ignore else files.read_json(paths.PROBE_METRICS,
                                                                                    required=False)
    probe_acc = {name: _float((probes.get(name) or {}).get("accuracy"))
                 for name in layers} if isinstance(probes, dict) else {}
    shown = [name for name in layers if any(name in m for m in maps.values())
             or any(name in s for s in skipped.values())]
    acc = float((preds == labels).mean()) if preds is not None and n else None
    run = ExplorerRun(label=files.label, layers=shown, maps=maps, preds=preds, confidence=confidence,
                      scores=scores, probes=probe_acc, skipped=skipped, snapshot_layer=snap_layer if snapshots else None,
                      snapshots=snapshots, test_accuracy=acc)
    return RunData(run=run, labels=labels, indices=indices, classes=classes, dataset=index.get("dataset"))


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if np.isfinite(value) else None


def _snapshot_accuracy(files: Reader, meta: dict, labels: np.ndarray) -> float | None:
    folder = meta.get("dir")
    if not isinstance(folder, str):
        return None
    preds = files.read_npy(paths.ACTIVATIONS / folder / "preds.npy", required=False, ndim=1)
    if preds is None or len(preds) != len(labels):
        return None
    return float((np.asarray(preds) == labels).mean())


def write_page(out: Path, runs: Sequence[Any], *, labels: np.ndarray, classes: Sequence[str],
               images: np.ndarray | None, indices: np.ndarray, title: str) -> int:
    """Build the page and write it atomically; returns its size in bytes."""
    from pipeline.explorer import explorer_html

    try:
        page = explorer_html(runs, labels=labels, classes=classes, images=images, indices=indices, title=title)
    except ValueError as exc:                 # inconsistent arrays: damaged or mixed-up inputs
        raise UserError(f"explore: {exc}; {_REBUILD}") from None
    data = page.encode("utf-8")
    artifacts.write_bytes(out, data)
    return len(data)


def thumbnails(files: Reader, indices: np.ndarray) -> np.ndarray:
    """uint8 (n, C, H, W) test images of the given rows."""
    path = paths.PREPARED / "test_images.npy"
    images = files.read_npy(path, ndim=4)
    if images.dtype != np.uint8:               # the wording every reader of the test images uses
        where = path if isinstance(files, Folder) and files.root == Path(".") else f"{files.label}: {path}"
        raise UserError(f"{where}: test images has dtype {images.dtype}, expected uint8; delete it and rerun "
                        f"`dvc repro`")
    if len(indices) and int(indices.max()) >= len(images):
        raise UserError(f"{files.label}: {paths.ACTIVATIONS}/indices.npy points past the {len(images)} test "
                        f"images; the activations belong to other data, {_REBUILD}")
    return np.ascontiguousarray(images[indices])


def run(params: Params) -> dict[str, Any]:
    """The stage: this workspace's explorer page -> plots/explorer.html."""
    cfg: ExploreConfig = params.explore
    started = time.perf_counter()
    out = paths.EXPLORER
    with artifacts.stage_outputs(out):
        files = Folder(".", "workspace")
        data = load_run(files, methods=cfg.methods, max_snapshots=cfg.max_snapshots)
        keep = pick_rows(data.labels, cfg.max_points, cfg.seed)
        if len(keep) < len(data.labels):
            log(f"explore: {len(keep)} of {len(data.labels)} points (explore.max_points)")
        images = thumbnails(files, data.indices[keep]) if cfg.thumbnails else None
        run_ = data.run.take(keep)
        size = write_page(out, [run_], labels=data.labels[keep], classes=data.classes, images=images,
                          indices=data.indices[keep], title=f"hidden-spaces explorer: {data.dataset or 'run'}")
    seconds = round(time.perf_counter() - started, 2)
    log(f"explore: wrote {out} ({size / 1e6:.1f} MB, {len(keep)} points, {len(run_.layers)} layers, "
        f"{', '.join(run_.maps)}) in {seconds:.1f} s; open it in a browser")
    return {"path": out, "bytes": size, "points": int(len(keep)), "seconds": seconds}
