"""``python -m pipeline explore A [B]``: the explorer page of one or two runs (not a DVC stage).

A run is a git revision, branch, tag or ``dvc exp`` name (read through DVC from the cache, as
``compare`` does; nothing reruns), ``workspace``, or a project folder (one holding
``data/activations``). Two runs go side by side on one page, with one selection for both: select
the misclassified 4s of A and see where B puts them. Both must have been extracted on the same
test images. Written to ``--out`` (default plots/compare/explorer.html).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline import artifacts, paths
from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.runtime import log
from pipeline.stages.explore import Folder, load_run, pick_rows, thumbnails, write_page

__all__ = ["run"]


class _Labelled:
    """A compare.Revision with the label the explorer shows (read_json / read_npy passed through)."""

    def __init__(self, rev: Any):
        self.rev = rev
        self.label = rev.label

    def read_json(self, path: str | Path, *, required: bool = True) -> Any:
        return self.rev.read_json(path, required=required)

    def read_npy(self, path: str | Path, *, required: bool = True, ndim: int | None = None) -> np.ndarray | None:
        return self.rev.read_npy(path, required=required, ndim=ndim)


def _reader(name: str) -> tuple[Any, set[str]]:
    """(reader, paths to ignore): outputs dvc.lock shows were made from older activations."""
    folder = Path(name)
    if folder.is_dir() and (folder / paths.ACTIVATIONS).is_dir():
        return Folder(folder, label=name), set()
    import yaml

    from pipeline.stages.compare import open_revision, stale_outputs

    rev = open_revision(name)
    raw = rev.read_bytes("dvc.lock", required=False)
    lock = None
    if raw is not None:
        try:
            lock = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            lock = None
    stale = stale_outputs(lock)
    for path in sorted(stale):
        if path.startswith((paths.EMBEDDINGS.as_posix(), paths.EMBEDDING_METRICS.as_posix(),
                            paths.PROBE_METRICS.as_posix())):
            log(f"warning: explore: {rev.label}: {path} was made from older activations (outdated in dvc.lock); "
                f"leaving it out; run `dvc repro` at that revision to update it")
    return _Labelled(rev), stale


def run(params: Params, *, names: Sequence[str], out: str | Path = paths.EXPLORER_COMPARE) -> dict[str, Any]:
    """Write the page of one or two runs; returns {path, bytes, points, seconds}."""
    cfg = params.explore
    started = time.perf_counter()
    names = list(names)
    if not 1 <= len(names) <= 2:
        raise UserError(f"explore takes one or two runs, got {len(names)}; e.g. `python -m pipeline explore main "
                        f"exp-1a2b3`")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the HTML file to write (default {paths.EXPLORER_COMPARE})")
    with artifacts.stage_outputs(out):
        readers = [_reader(name) for name in names]
        data = [load_run(files, methods=cfg.methods, max_snapshots=cfg.max_snapshots, ignore=stale)
                for files, stale in readers]
        base = data[0]
        runs = [base.run]
        if len(data) == 2:
            from pipeline.stages.compare import check_same_images

            other = data[1]
            order = check_same_images({"dataset": base.dataset, "indices": base.indices, "labels": base.labels},
                                      {"dataset": other.dataset, "indices": other.indices, "labels": other.labels},
                                      readers[0][0].label, readers[1][0].label)
            runs.append(other.run.take(order))
            if runs[0].label == runs[1].label:
                runs[0].label, runs[1].label = f"A: {runs[0].label}", f"B: {runs[1].label}"
        keep = pick_rows(base.labels, cfg.max_points, cfg.seed)
        runs = [r.take(keep) if len(keep) < len(base.labels) else r for r in runs]
        images = thumbnails(readers[0][0], base.indices[keep]) if cfg.thumbnails else None
        size = write_page(out, runs, labels=base.labels[keep], classes=base.classes, images=images,
                          indices=base.indices[keep],
                          title="hidden-spaces explorer: " + " vs ".join(r.label for r in runs))
    seconds = round(time.perf_counter() - started, 2)
    log(f"explore: wrote {out} ({size / 1e6:.1f} MB, {len(keep)} points, {' | '.join(r.label for r in runs)}) "
        f"in {seconds:.1f} s; open it in a browser")
    return {"path": out, "bytes": size, "points": int(len(keep)), "seconds": seconds}
