"""compare command: which of two runs has the better representation, answered with numbers.

``python -m pipeline compare A B`` reads both runs' outputs straight from DVC (git revisions,
tags, branches or ``dvc exp`` names; nothing is rerun), through :class:`dvc.fs.DVCFileSystem`,
which resolves experiment names (refs/exps/...) and reads the files of tracked directories
from the cache. It writes into ``--out`` (default plots/compare/):

- ``cka.json`` / ``cka.png``: linear CKA between every layer of A and every layer of B (no
  matching needed, so different architectures compare);
- ``maps.png``: the 2-D maps (t-SNE, else UMAP, else PCA) of each run's layer before the
  output, side by side with the same class colours, titled with kNN accuracy, trustworthiness
  and probe accuracy;
- ``summary.md``: test accuracy, per-layer metrics of both (layers matched by name) and which
  run is better at the layer before the output; also printed to stdout.

Both runs must have been extracted on the same test images (``indices.npy``); anything else is
refused with a one-line error, and nothing is left in ``--out``.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from pipeline import artifacts, paths
from pipeline.config import METHODS, Params
from pipeline.errors import UserError
from pipeline.runtime import log, progress

__all__ = [
    "run", "Revision", "open_revision", "align_layers", "check_same_images", "choose_method", "verdict",
    "summary_markdown", "stale_outputs", "OUTPUT_FILES", "MAX_CKA_POINTS", "MAP_METHODS", "WORKSPACE",
]

OUTPUT_FILES = ("cka.json", "cka.png", "maps.png", "summary.md")
# CKA is O(n^2) memory per layer; above this many images a seeded stratified subset (the same
# rows for A and B) is used: the estimate's spread is ~1/sqrt(n), far below the figure's 2 digits.
MAX_CKA_POINTS = 2000
MAP_METHODS = ("tsne", "umap", "pca")           # preference for the side-by-side maps
WORKSPACE = "workspace"                         # `dvc exp show`'s name for the working tree
_TIE = 0.005                                    # metric differences below this are a tie
_LIST_REVS = "list them with `git log --oneline`, `git tag` or `dvc exp show`"
_REBUILD = "run `dvc repro` / `dvc exp run` at that revision, or `dvc pull`"


@dataclass
class Revision:
    """One run, read through DVC at a git revision (or the workspace)."""

    rev: str                                    # as the user wrote it
    sha: str | None                             # None for the workspace
    fs: Any                                     # dvc.fs.DVCFileSystem rooted at the repository

    @property
    def label(self) -> str:
        if self.sha is None or self.sha.startswith(self.rev):
            return self.rev if self.sha is None else self.sha[:7]
        return f"{self.rev} ({self.sha[:7]})"

    def read_bytes(self, path: str | Path, *, required: bool = True) -> bytes | None:
        """The file's bytes at this revision; None (or a UserError if ``required``) when missing."""
        path = Path(path).as_posix()
        try:
            return self.fs.read_bytes(path)
        except FileNotFoundError:
            if not required:
                return None
            tracked = _exists(self.fs, path)
            where = "is tracked but not in the DVC cache" if tracked else "does not exist"
            raise UserError(f"revision {self.label}: {path} {where}; {_REBUILD}") from None
        except IsADirectoryError:
            raise UserError(f"revision {self.label}: {path} is a directory, expected a file") from None
        except Exception as exc:  # DVC storage / index errors: still one line
            if type(exc).__module__.split(".")[0] not in ("dvc", "dvc_data", "dvc_objects", "scmrepo"):
                raise
            if not required:
                return None
            raise UserError(f"revision {self.label}: cannot read {path} ({artifacts.first_line(exc)}); "
                            f"{_REBUILD}") from None

    def read_json(self, path: str | Path, *, required: bool = True) -> Any:
        raw = self.read_bytes(path, required=required)
        if raw is None:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"revision {self.label}: {path} is not valid JSON ({exc}); {_REBUILD}") from None

    def read_npy(self, path: str | Path, *, required: bool = True, ndim: int | None = None) -> np.ndarray | None:
        raw = self.read_bytes(path, required=required)
        if raw is None:
            return None
        try:
            array = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise UserError(f"revision {self.label}: {path} is not a plain .npy ({artifacts.first_line(exc)}); "
                            f"{_REBUILD}") from None
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
            raise UserError(f"revision {self.label}: {path} is not a plain numeric .npy; {_REBUILD}")
        if ndim is not None and array.ndim != ndim:
            raise UserError(f"revision {self.label}: {path} has shape {array.shape}, expected {ndim} "
                            f"dimensions; {_REBUILD}")
        return array


def _exists(fs: Any, path: str) -> bool:
    with contextlib.suppress(Exception):
        return bool(fs.exists(path))
    return False


def _repo_root() -> Path:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root())
    except NotDvcRepoError:
        raise UserError(f"{Path.cwd()} is not inside a DVC project; run compare from the project folder "
                        f"(the one with dvc.yaml)") from None


def open_revision(rev: str, root: str | Path | None = None) -> Revision:
    """Resolve ``rev`` (commit, branch, tag, experiment name, or ``workspace``) and open its files."""
    from dvc.fs import DVCFileSystem
    from dvc.scm import SCM, RevError, SCMError, resolve_rev

    root = Path(root) if root is not None else _repo_root()
    if not rev or not rev.strip():
        raise UserError(f"empty revision; {_LIST_REVS}")
    if rev == WORKSPACE:
        return Revision(rev=rev, sha=None, fs=DVCFileSystem(repo=str(root)))
    try:
        scm = SCM(str(root))
        sha = resolve_rev(scm, rev)        # also resolves `dvc exp` names (refs/exps/...)
    except RevError as exc:
        if "ambiguous" in str(exc):
            raise UserError(f"revision '{rev}' is ambiguous (experiments of several baselines have that name); "
                            f"use its commit sha, listed by `dvc exp show --sha`") from None
        raise UserError(f"unknown revision '{rev}': not a commit, branch, tag or experiment name; "
                        f"{_LIST_REVS}") from None
    except SCMError as exc:
        raise UserError(f"cannot read git history at {root} ({artifacts.first_line(exc)}); compare needs a git "
                        f"repository with at least one commit") from None
    return Revision(rev=rev, sha=sha, fs=DVCFileSystem(repo=str(root), rev=sha))


def _layer_names(index: Mapping[str, Any], rev: Revision) -> list[str]:
    try:
        return [str(row["name"]) for row in index["layers"]]
    except (KeyError, TypeError):
        raise UserError(f"revision {rev.label}: {paths.ACTIVATIONS}/layers.json has no layer list; {_REBUILD}") from None


def check_same_images(a: Mapping[str, Any], b: Mapping[str, Any], label_a: str, label_b: str) -> np.ndarray:
    """Row order that puts B's samples in A's order (identity when already equal), or a UserError
    when the two runs saw different test images. ``a``/``b`` hold ``dataset``, ``indices``, ``labels``."""
    fix = "CKA and side-by-side maps need the same images: use the same data.*, extract.n_samples and " \
          "extract.seed in both runs"
    if a["dataset"] != b["dataset"]:
        raise UserError(f"A = {label_a} was extracted from dataset {a['dataset']} and B = {label_b} from "
                        f"{b['dataset']}; {fix}")
    ia, ib = np.asarray(a["indices"]), np.asarray(b["indices"])
    if len(ia) == len(ib) and np.array_equal(ia, ib):
        order = np.arange(len(ib))
    else:
        common = len(np.intersect1d(ia, ib))
        if len(ia) != len(ib) or common != len(ia) or len(np.unique(ia)) != len(ia):
            raise UserError(f"A = {label_a} and B = {label_b} were extracted on different test images "
                            f"(indices.npy: {len(ia)} and {len(ib)} images, {common} in common); {fix}")
        pos_b = {int(v): i for i, v in enumerate(ib)}
        order = np.array([pos_b[int(v)] for v in ia])
    if not np.array_equal(np.asarray(a["labels"]), np.asarray(b["labels"])[order]):
        raise UserError(f"A = {label_a} and B = {label_b} have the same test image indices but different labels "
                        f"(data prepared differently); {fix}")
    return order


def align_layers(a: Sequence[str], b: Sequence[str]) -> list[tuple[str | None, str | None]]:
    """Rows of the per-layer table: (layer of A, layer of B) matched by name, in forward order;
    a layer only one side has gets None on the other side."""
    rows: list[tuple[str | None, str | None]] = []
    matcher = difflib.SequenceMatcher(a=list(a), b=list(b), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows.extend((name, name) for name in a[i1:i2])
        else:
            rows.extend((name, None) for name in a[i1:i2])
            rows.extend((None, name) for name in b[j1:j2])
    return rows


def choose_method(available_a: Sequence[str], available_b: Sequence[str]) -> str | None:
    """The first of t-SNE, UMAP, PCA that both runs have maps of (None if there is none)."""
    for method in MAP_METHODS:
        if method in available_a and method in available_b:
            return method
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _layer_scores(emb: Mapping[str, Any] | None, probes: Mapping[str, Any] | None, layer: str | None) -> dict:
    """{knn, trust, probe} of one layer (None where unknown)."""
    if layer is None:
        return {"knn": None, "trust": None, "probe": None}
    e = (emb or {}).get(layer) or {}
    p = (probes or {}).get(layer) or {}
    return {"knn": _number(e.get("knn_accuracy")), "trust": _number(e.get("trustworthiness")),
            "probe": _number(p.get("accuracy"))}


_METRIC_NAMES = {"knn": "kNN accuracy", "trust": "trustworthiness", "probe": "probe accuracy"}


def verdict(scores_a: Mapping[str, float | None], scores_b: Mapping[str, float | None],
            tie: float = _TIE) -> tuple[str | None, list[str]]:
    """Which run wins more of the metrics both have ("A", "B", or None for a tie / nothing to
    compare), and one "name a vs b" phrase per metric."""
    wins = {"A": 0, "B": 0}
    phrases = []
    for key, name in _METRIC_NAMES.items():
        va, vb = scores_a.get(key), scores_b.get(key)
        if va is None or vb is None:
            continue
        if abs(va - vb) < tie:
            mark = "tie"
        else:
            winner = "A" if va > vb else "B"
            wins[winner] += 1
            mark = f"{winner} higher"
        phrases.append(f"{name} {va:.3f} vs {vb:.3f} ({mark})")
    if wins["A"] == wins["B"]:
        return None, phrases
    return ("A" if wins["A"] > wins["B"] else "B"), phrases


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def summary_markdown(*, label_a: str, label_b: str, info_a: Mapping[str, Any], info_b: Mapping[str, Any],
                     rows: Sequence[tuple[str | None, str | None]], cka: Mapping[tuple[str, str], float],
                     emb_a: Mapping[str, Any] | None, emb_b: Mapping[str, Any] | None,
                     probes_a: Mapping[str, Any] | None, probes_b: Mapping[str, Any] | None,
                     method: str | None, n_images: int) -> str:
    """The Markdown report: run overview, per-layer table, verdict at the layer before the output.
    ``info_*`` hold ``arch``, ``params``, ``test_accuracy``, ``test_loss``, ``penultimate``."""
    from pipeline.plots.compare import method_name

    def cell(value: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{value:,}" if isinstance(value, int) else _fmt(value, 4)
        return "–" if value in (None, "") else str(value)

    lines = [f"# Comparing A = `{label_a}` and B = `{label_b}`", "",
             f"Both runs on the same {n_images} test images.", ""]
    overview = [f"| {name} | {cell(info_a.get(key))} | {cell(info_b.get(key))} |"
                for key, name in (("arch", "architecture"), ("params", "parameters"),
                                  ("test_accuracy", "test accuracy"), ("test_loss", "test loss"))
                if info_a.get(key) is not None or info_b.get(key) is not None]
    if overview:
        lines += ["| | A | B |", "|---|---|---|", *overview, ""]
    pen_a, pen_b = info_a.get("penultimate"), info_b.get("penultimate")
    where = (f"kNN accuracy and trustworthiness of the 2-D {method_name(method)} maps" if method else
             "no 2-D maps made with the same method at both revisions")
    lines += [f"Per layer (matched by name; {where}; linear-probe accuracy on the activations; "
              f"CKA between the two same-named layers):", "",
              "| layer | CKA | kNN A | kNN B | trust A | trust B | probe A | probe B |",
              "|---|---|---|---|---|---|---|---|"]
    for la, lb in rows:
        name = la or lb
        marks = []
        if la is not None and la == pen_a:
            marks.append("A")
        if lb is not None and lb == pen_b:
            marks.append("B")
        shown = f"**{name}** (before output{' of ' + marks[0] if len(marks) == 1 else ''})" if marks else name
        if la is None:
            shown += " (B only)"
        elif lb is None:
            shown += " (A only)"
        sa = _layer_scores(emb_a if method else None, probes_a, la)
        sb = _layer_scores(emb_b if method else None, probes_b, lb)
        c = cka.get((la, lb)) if la is not None and lb is not None else None
        lines.append(f"| {shown} | {_fmt(c)} | {_fmt(sa['knn'])} | {_fmt(sb['knn'])} | {_fmt(sa['trust'])} | "
                     f"{_fmt(sb['trust'])} | {_fmt(sa['probe'])} | {_fmt(sb['probe'])} |")
    sa = _layer_scores(emb_a if method else None, probes_a, pen_a)
    sb = _layer_scores(emb_b if method else None, probes_b, pen_b)
    winner, phrases = verdict(sa, sb)
    lines += ["", f"**Layer before the output** (A: `{pen_a}`, B: `{pen_b}`): "]
    if not phrases:
        lines[-1] += ("no metrics of that layer at both revisions; run the reduce and probe stages "
                      "(`dvc repro`) at both to get them.")
    else:
        count = sum(1 for p in phrases if p.endswith(f"({winner} higher)")) if winner else 0
        if winner is None:
            head = "neither run is clearly better"
        else:
            head = (f"**{winner}** (`{label_a if winner == 'A' else label_b}`) has the better representation, "
                    f"higher on {count} of {len(phrases)}")
        lines[-1] += f"{head}: " + "; ".join(phrases) + "."
    return "\n".join(lines) + "\n"


def stale_outputs(lock: Mapping[str, Any] | None, source: str | Path = paths.ACTIVATIONS) -> set[str]:
    """Paths (outs and metrics) of the dvc.lock stages that were made from other ``source`` data
    than the lock's current ``source`` output: e.g. reduce maps left over from before
    `dvc exp run extract -S extract.seed=1`. Their numbers would describe other images."""
    source = Path(source).as_posix()
    stages = (lock or {}).get("stages") if isinstance(lock, Mapping) else None
    if not isinstance(stages, Mapping):
        return set()

    def entries(stage: Any, key: str) -> list[Mapping[str, Any]]:
        items = stage.get(key) if isinstance(stage, Mapping) else None
        return [e for e in items if isinstance(e, Mapping)] if isinstance(items, list) else []

    current = {e.get("md5") for st in stages.values() for e in entries(st, "outs") if e.get("path") == source}
    current.discard(None)
    if len(current) != 1:
        return set()
    stale = set()
    for stage in stages.values():
        used = [e.get("md5") for e in entries(stage, "deps") if e.get("path") == source]
        if used and used[0] not in current:
            stale.update(str(e.get("path")) for e in entries(stage, "outs") if e.get("path"))
    return stale


def _read_lock(rev: Revision) -> Any:
    raw = rev.read_bytes("dvc.lock", required=False)
    if raw is None:
        return None
    import yaml

    with contextlib.suppress(yaml.YAMLError, UnicodeDecodeError):
        return yaml.safe_load(raw.decode("utf-8"))
    return None


def _available_methods(rev: Revision, stale: set[str]) -> dict[str, dict]:
    """method -> metrics/embeddings/<method>.json for each method the run reduced with (and whose
    maps were made from the run's current activations)."""
    found = {}
    for method in METHODS:
        path = paths.embedding_metrics(method)
        metrics = rev.read_json(path, required=False)
        if not isinstance(metrics, dict):
            continue
        if path.as_posix() in stale or paths.embedding_dir(method).as_posix() in stale:
            log(f"warning: compare: {rev.label}: the {method} maps were made from older activations "
                f"(outdated in dvc.lock); ignoring them; run `dvc repro` at that revision to update them")
            continue
        found[method] = metrics
    return found


def _probes(rev: Revision, stale: set[str]) -> Any:
    probes = rev.read_json(paths.PROBE_METRICS, required=False)
    if probes is not None and paths.PROBE_METRICS.as_posix() in stale:
        log(f"warning: compare: {rev.label}: {paths.PROBE_METRICS} was computed from older activations "
            f"(outdated in dvc.lock); ignoring it; run `dvc repro` at that revision to update it")
        return None
    return probes


def _train_info(rev: Revision, index: Mapping[str, Any]) -> dict[str, Any]:
    train = rev.read_json(paths.TRAIN_METRICS / "metrics.json", required=False) or {}
    test = train.get("test") if isinstance(train.get("test"), dict) else {}
    params = train.get("params")
    return {"arch": index.get("arch"), "params": params if isinstance(params, int) else None,
            "test_accuracy": _number(test.get("accuracy")), "test_loss": _number(test.get("loss")),
            "penultimate": index.get("penultimate")}


def _load_index(rev: Revision) -> dict[str, Any]:
    act = paths.ACTIVATIONS
    index = rev.read_json(act / "layers.json")
    if not isinstance(index, dict):
        raise UserError(f"revision {rev.label}: {act}/layers.json is not an activation index; {_REBUILD}")
    labels = rev.read_npy(act / "labels.npy", ndim=1)
    indices = rev.read_npy(act / "indices.npy", ndim=1)
    if len(labels) != len(indices):
        raise UserError(f"revision {rev.label}: labels.npy has {len(labels)} rows but indices.npy {len(indices)}; "
                        f"{_REBUILD}")
    return {"index": index, "layers": _layer_names(index, rev), "labels": labels, "indices": indices,
            "dataset": index.get("dataset")}


def _load_activations(rev: Revision, layers: Sequence[str], rows: np.ndarray, n: int, bar: Any) -> list[np.ndarray]:
    """Each layer's (len(rows), dim) activations at this revision, rows in A's sample order."""
    out = []
    for name in layers:
        path = paths.ACTIVATIONS / f"{name}.npy"
        x = rev.read_npy(path, ndim=2)
        artifacts.check_rows(x, n, f"revision {rev.label}: {path}", _REBUILD)
        out.append(np.ascontiguousarray(x[rows]))
        bar.update(1)
    return out


def _map_coords(rev: Revision, method: str, layer: str, n: int) -> np.ndarray | None:
    coords = rev.read_npy(paths.embedding_dir(method) / f"{layer}.npy", required=False, ndim=2)
    if coords is None or len(coords) != n or coords.shape[1] < 2:
        return None
    return coords


def _score_text(scores: Mapping[str, float | None]) -> str:
    parts = [f"{name} {scores[key]:.3f}" for key, name in
             (("knn", "kNN acc"), ("trust", "trust"), ("probe", "probe acc")) if scores.get(key) is not None]
    return " · ".join(parts) if parts else "no metrics at this revision"


@contextlib.contextmanager
def _outputs(out: Path) -> Iterator[list[Path]]:
    """Clear this command's files in ``out``; on failure remove them again, and the folders this
    command created if they are empty (other files in ``out`` are never touched)."""
    created = [d for d in (out, *out.parents) if not d.exists()]          # deepest first
    files = [out / name for name in OUTPUT_FILES]
    try:
        with artifacts.stage_outputs(*files):
            yield files
    except BaseException:
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def run(params: Params, *, rev_a: str, rev_b: str, out: str | Path = paths.COMPARE) -> dict[str, Any]:
    """Compare two runs; returns {cka, layers_a, layers_b, summary, files, seconds}."""
    started = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder (default {paths.COMPARE})")
    with _outputs(out):
        root = _repo_root()
        a, b = open_revision(rev_a, root), open_revision(rev_b, root)
        log(f"compare: A = {a.label}, B = {b.label}")
        da, db = _load_index(a), _load_index(b)
        order_b = check_same_images(da, db, a.label, b.label)
        n = len(da["labels"])
        labels = np.asarray(da["labels"])
        classes = list(da["index"].get("classes") or [str(k) for k in range(int(labels.max()) + 1)])
        rows = np.arange(n)
        if n > MAX_CKA_POINTS:
            from pipeline.datasets import stratified_subset

            rows = stratified_subset(labels, MAX_CKA_POINTS, seed=0)
            log(f"compare: CKA on a stratified subset of {len(rows)} of the {n} images (memory is O(n^2))")

        bar = progress(total=len(da["layers"]) + len(db["layers"]), desc="compare: read activations", unit="layer")
        xs = _load_activations(a, da["layers"], rows, n, bar)
        ys = _load_activations(b, db["layers"], order_b[rows], n, bar)
        bar.close()
        n_chunks = 1 + (len(ys) - 1) // max(1, _chunk_size(len(rows)))
        bar = progress(total=len(ys) + len(xs) * n_chunks, desc="compare: CKA", unit="layer")
        from pipeline.similarity import cka_matrix

        matrix = cka_matrix(xs, ys, on_layer=lambda: bar.update(1))
        bar.close()
        del xs, ys

        stale_a, stale_b = stale_outputs(_read_lock(a)), stale_outputs(_read_lock(b))
        emb_all_a, emb_all_b = _available_methods(a, stale_a), _available_methods(b, stale_b)
        method = choose_method(list(emb_all_a), list(emb_all_b))
        emb_a = emb_all_a.get(method) if method else None
        emb_b = emb_all_b.get(method) if method else None
        probes_a, probes_b = _probes(a, stale_a), _probes(b, stale_b)
        info_a, info_b = _train_info(a, da["index"]), _train_info(b, db["index"])
        pen_a, pen_b = info_a["penultimate"], info_b["penultimate"]

        cka_pairs = {(la, lb): float(matrix[i, j]) if np.isfinite(matrix[i, j]) else None
                     for i, la in enumerate(da["layers"]) for j, lb in enumerate(db["layers"])}
        aligned = align_layers(da["layers"], db["layers"])
        summary = summary_markdown(label_a=a.label, label_b=b.label, info_a=info_a, info_b=info_b, rows=aligned,
                                   cka=cka_pairs, emb_a=emb_a, emb_b=emb_b, probes_a=probes_a, probes_b=probes_b,
                                   method=method, n_images=n)

        from pipeline.plots.compare import cka_heatmap

        dpi = params.render.dpi
        written = []
        artifacts.save_json(out / "cka.json", {
            "rev_a": a.rev, "rev_b": b.rev, "sha_a": a.sha, "sha_b": b.sha, "n": int(len(rows)),
            "layers_a": da["layers"], "layers_b": db["layers"], "matrix": np.round(matrix, 6),
            "penultimate_a": pen_a, "penultimate_b": pen_b,
            "same_name": {la: cka_pairs[(la, lb)] for la, lb in aligned if la is not None and lb is not None},
        })
        written.append(out / "cka.json")
        fig = cka_heatmap(matrix, da["layers"], db["layers"], label_a=a.label, label_b=b.label,
                          mark_a=pen_a, mark_b=pen_b, n_points=len(rows))
        artifacts.save_figure(out / "cka.png", fig, dpi=dpi)
        written.append(out / "cka.png")

        maps_note = _maps(a, b, method, pen_a, pen_b, n, order_b, labels, classes,
                          (emb_a, probes_a), (emb_b, probes_b), out / "maps.png", dpi)
        if maps_note:
            log(f"warning: compare: no side-by-side maps: {maps_note}")
        else:
            written.append(out / "maps.png")
        artifacts.write_text(out / "summary.md", summary)
        written.append(out / "summary.md")
    sys.stdout.write(summary)
    sys.stdout.flush()
    seconds = round(time.perf_counter() - started, 2)
    log(f"compare: wrote {', '.join(str(p) for p in written)} in {seconds:.1f} s")
    return {"cka": matrix, "layers_a": da["layers"], "layers_b": db["layers"], "summary": summary,
            "files": written, "method": method, "seconds": seconds}


def _chunk_size(n: int) -> int:
    from pipeline.similarity import GRAM_BUDGET_BYTES

    return max(1, int(GRAM_BUDGET_BYTES // max(1, n * n * 8)) - 1)


def _maps(a: Revision, b: Revision, method: str | None, pen_a: str | None, pen_b: str | None, n: int,
          order_b: np.ndarray, labels: np.ndarray, classes: list[str], side_a: tuple, side_b: tuple,
          path: Path, dpi: int) -> str | None:
    """Draw maps.png; returns why not when it cannot be drawn (nothing written then)."""
    if method is None:
        return ("no t-SNE, UMAP or PCA maps of the current activations at both revisions; run the reduce "
                "stages (`dvc repro`) at both")
    if not pen_a or not pen_b:
        return "layers.json does not name the layer before the output; rerun extract (`dvc repro extract`)"
    coords_a = _map_coords(a, method, pen_a, n)
    coords_b = _map_coords(b, method, pen_b, n)
    missing = [f"{r.label} ({method} map of {layer})" for r, layer, c in
               ((a, pen_a, coords_a), (b, pen_b, coords_b)) if c is None]
    if missing:
        return f"no readable {', '.join(missing)}; {_REBUILD}"
    from pipeline.plots.compare import maps_side_by_side

    (emb_a, probes_a), (emb_b, probes_b) = side_a, side_b
    fig = maps_side_by_side(coords_a, coords_b[order_b], labels, classes, method=method,
                            title_a=f"A: {a.label} · layer {pen_a}", title_b=f"B: {b.label} · layer {pen_b}",
                            scores_a=_score_text(_layer_scores(emb_a, probes_a, pen_a)),
                            scores_b=_score_text(_layer_scores(emb_b, probes_b, pen_b)))
    artifacts.save_figure(path, fig, dpi=dpi)
    return None
