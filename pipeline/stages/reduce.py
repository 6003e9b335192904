"""reduce stage: map every extracted layer to 2-D/3-D with one method, and measure the maps.

``python -m pipeline reduce pca|tsne|umap``: one process fits every layer for that method, so
UMAP's numba compilation is paid once. Reads ``data/activations/`` (``layers.json``, one
``<layer>.npy`` per layer, ``labels.npy``, ``preds.npy``, ``snapshots/step_*/``). Writes
(formats in ARTIFACTS.md):

- ``data/embeddings/<method>/<layer>.npy`` (n, 2 or 3) float32, and ``info.json``
- ``data/embeddings/<method>/snapshots/<layer>/step_NNNNNN.npy``: snapshot maps, aligned
- ``metrics/embeddings/<method>.json``: layer -> metric -> number (``dvc metrics diff``)
- ``plots/points/<method>/<NN>_<layer>.csv``: ``x,y[,z],label,class[,prediction,correct],map``, NN the
  layer's place from the input (:func:`pipeline.paths.points_file`), ``map`` the chart title

and ``logs/reduce/<method>.json``, seconds per layer and in all: outside what DVC hashes, since
timings differ on every run.

A layer that cannot be mapped (NaN/inf, constant, too few points) is skipped with a warning
that names it, and its reason is recorded as ``skipped`` in the metrics file. A layer whose
activations equal an earlier layer's (``flatten`` after ``pool2``, dropout at inference) gets
that layer's map and metrics without a second fit (``same_as`` in info.json).

Snapshots are mapped backwards, from the final model to initialisation: the final map (the
one every other view shows) anchors the sequence, the last frame equals it, and each earlier
frame starts from the later one. Going forwards would carry the arbitrary layout of the
untrained network (step 0, little class structure) into the trained frames, and the final
frame would not match the main map.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import artifacts, memory, paths
from pipeline.config import METHOD_NAMES, METHODS, Params
from pipeline.errors import UsageError, UserError
from pipeline.mapping import LayerJob, LayerMaps, map_layer
from pipeline.reducers import check_config, fingerprint
from pipeline.runtime import collect_jobs, job_threads, layer_workers, log

__all__ = ["run", "points_columns"]


def map_title(method: str, layer: str, position: int, n_layers: int, spatial: str | None = None) -> str:
    """``t-SNE: act4 (layer 12 of 13)``: a map's title, the place counted from the input (= 1);
    ``t-SNE: layer1, mean-pooled (layer 3 of 8)`` for a map stored pooled (extract.spatial)."""
    pooled = f", {spatial}-pooled" if spatial and spatial != "flatten" else ""
    return f"{METHOD_NAMES.get(method, method)}: {layer}{pooled} (layer {position} of {n_layers})"


def points_columns(coords: np.ndarray, labels: np.ndarray, classes: list[str],
                   preds: np.ndarray | None, title: str | None = None) -> dict[str, np.ndarray]:
    """The CSV columns of one map, vectorised: x, y[, z], label, class[, prediction, correct][, map].

    ``map`` repeats the chart title on every row: DVC's plot templates get one title per plot
    definition (a whole folder of maps), so the template reads each chart's title from its data."""
    columns: dict[str, np.ndarray] = {axis: coords[:, i] for i, axis in enumerate("xyz"[:coords.shape[1]])}
    names = np.asarray(classes, dtype=object)
    columns["label"] = labels
    columns["class"] = names[labels].astype(str) if len(names) else labels.astype(str)
    if preds is not None:
        columns["prediction"] = preds
        columns["correct"] = (preds == labels).astype(np.int64)
    if title is not None:
        columns["map"] = np.full(len(labels), title)
    return columns


def _jobs(method: str, params: Params, index: dict, act: Path, labels: np.ndarray, layer_names: list[str],
          twin_of: dict[str, str], dims: dict[str, int]) -> list[LayerJob]:
    """One job per distinct layer (snapshot frames go with the job whose final map they start
    from), the longest first: those with frames, then the widest."""
    cfg = params.reduce
    entries = sorted(index.get("snapshots") or [], key=lambda e: int(e["step"]))
    frames: dict[str, list] = {}
    for layer in (index.get("snapshot_layers") or []) if entries else []:
        series = (layer, tuple((int(e["step"]), act / e["dir"] / f"{layer}.npy") for e in entries))
        frames.setdefault(twin_of.get(layer, layer), []).append(series)
    heads = [name for name in layer_names if twin_of[name] == name]
    heads += [layer for layer in frames if layer not in twin_of]       # snapshot layers not extracted at the end
    jobs = [LayerJob(name, act / f"{name}.npy" if name in twin_of else None, labels, method,
                     getattr(cfg, method).model_dump(), seed=cfg.seed, pca_dims=cfg.pca_dims,
                     sphereize=cfg.sphereize, knn_k=cfg.knn_k, frames=tuple(frames.get(name, ())))
            for name in heads]
    return sorted(jobs, key=lambda job: (not job.frames, -dims.get(job.name, 0)))


def run(params: Params, method: str) -> dict[str, Any]:
    """The reduce stage for one method: every layer of data/activations -> maps and metrics."""
    if method not in METHODS:
        raise UsageError(f"unknown reduce method '{method}'; use one of {', '.join(METHODS)} "
                        f"(e.g. `python -m pipeline reduce tsne`)")
    cfg = params.reduce
    options = getattr(cfg, method).model_dump()     # the method's hyperparameters, as plain keywords
    check_config(method, **options)
    act = paths.ACTIVATIONS
    out, metrics_path, points = paths.embedding_dir(method), paths.embedding_metrics(method), paths.points_dir(method)
    started = time.perf_counter()
    artifacts.remove(paths.reduce_log(method))
    timings: dict[str, float] = {}
    with artifacts.stage_outputs(out, metrics_path, points):
        index = artifacts.load_layer_index(act)
        memory.check_layers("reduce", index)       # before anything is written (pipeline.memory)
        classes = list(index.get("classes") or [])
        labels = artifacts.load_labels(act / "labels.npy", len(classes))
        preds = (artifacts.load_npy(act / "preds.npy", dtype=np.integer, ndim=1, what="predictions")
                 if (act / "preds.npy").exists() else None)
        if preds is not None:
            artifacts.check_rows(preds, len(labels), act / "preds.npy")
        layer_names = [row["name"] for row in index["layers"]]
        dims = {row["name"]: int(row.get("dim") or 0) for row in index["layers"]}
        spatial = {row["name"]: row.get("spatial") for row in index["layers"]}
        place = {name: i for i, name in enumerate(layer_names, start=1)}
        n_layers = len(layer_names)

        def save_points(name: str, coords: np.ndarray) -> None:
            artifacts.save_csv(paths.points_file(method, place[name], n_layers, name),
                               points_columns(coords, labels, classes, preds,
                                              map_title(method, name, place[name], n_layers, spatial[name])))

        # layers with equal activations (flatten after pool2, dropout at inference) are mapped once
        twin_of: dict[str, str] = {}               # layer -> first layer with the same activations
        seen: dict[str, str] = {}
        for name in layer_names:
            twin_of[name] = seen.setdefault(fingerprint(artifacts.load_rows(act / f"{name}.npy", len(labels),
                                                                            mmap=True)), name)
        jobs = _jobs(method, params, index, act, labels, layer_names, twin_of, dims)
        # one job per layer, in worker processes from runtime.PARALLEL_FROM points; a multi-layer run
        # maps every layer on one thread, so the maps are the same for any number of workers, a
        # single layer (e.g. 70,000 points) gets every core (runtime.layer_workers)
        workers = memory.workers_that_fit("reduce", index, layer_workers(len(jobs), len(labels)))
        threads = job_threads(len(jobs))
        d = options["n_components"]
        log(f"reduce {method}: {len(layer_names)} layers x {len(labels)} points -> {d}-D"
            + (f" ({workers} processes)" if workers > 1 else ""))
        results: dict[str, LayerMaps] = collect_jobs(map_layer, [replace(job, threads=threads) for job in jobs],
                                                     [job.name for job in jobs], workers=workers,
                                                     desc=f"reduce {method}")

        info: dict[str, Any] = {"method": method, "n_components": d, "n": int(len(labels)),
                                "params": {"pca_dims": cfg.pca_dims, "seed": cfg.seed, "knn_k": cfg.knn_k,
                                           **options},
                                "layers": {}, "snapshots": {}, "snapshot_metrics": {}, "snapshot_skipped": {}}
        metrics: dict[str, Any] = {}
        mapped: list[str] = []
        noted: dict[str, list[str]] = {}           # clamp note -> layers (one warning line each)
        for name in layer_names:                   # written in layer order, whichever process finished first
            twin = twin_of[name]
            result = results[twin]
            if twin != name:
                info["layers"][name] = {**info["layers"][twin], "same_as": twin}
                metrics[name] = dict(metrics[twin])
            elif result.skipped is not None:
                log(f"warning: reduce {method}: layer {name} skipped: {result.skipped}")
                info["layers"][name] = {"status": "skipped", "reason": result.skipped}
                metrics[name] = {"skipped": result.skipped}
            else:
                timings[name] = result.info["seconds"]
                for note in result.info["notes"]:
                    noted.setdefault(note, []).append(name)
                metrics[name] = result.metrics
                info["layers"][name] = {"status": "ok", "reason": None,
                                        "params": {k: v for k, v in result.info.items() if k != "seconds"}}
            if result.coords is not None:
                artifacts.save_npy(out / f"{name}.npy", result.coords)
                save_points(name, result.coords)
                mapped.append(name)
        for note, names in noted.items():
            log(f"warning: reduce {method}: {note} for layer{'s' if len(names) > 1 else ''} {', '.join(names)}")
        if not mapped:
            reasons = "; ".join(f"{k}: {v['reason']}" for k, v in list(info["layers"].items())[:3])
            raise UserError(f"reduce {method}: no layer could be mapped ({reasons}); "
                            f"check the model and rerun extract (`dvc repro extract`)")
        frames = {layer: series for result in results.values() for layer, series in result.frames.items()}
        for layer in index.get("snapshot_layers") or []:
            if layer not in frames:
                continue
            steps, frame_metrics, skipped = [], [], []
            for frame in frames[layer]:
                if frame.coords is None:
                    log(f"warning: reduce {method}: layer {layer} at step {frame.step} skipped: {frame.skipped}")
                    skipped.append({"step": frame.step, "reason": frame.skipped})
                    continue
                artifacts.save_npy(paths.embedding_snapshot(layer, frame.step, paths.embedding_snapshots(method)),
                                   frame.coords)
                steps.append(frame.step)
                frame_metrics.append({"step": frame.step, "knn_accuracy": frame.knn_accuracy})
            info["snapshots"][layer] = steps
            info["snapshot_metrics"][layer] = frame_metrics
            if skipped:
                info["snapshot_skipped"][layer] = skipped
        artifacts.save_json(metrics_path, metrics)
        artifacts.save_json(out / paths.EMBEDDING_MARKER, info)     # last: the folder's completion marker
    seconds = round(time.perf_counter() - started, 2)
    artifacts.save_json(paths.reduce_log(method), {"seconds": seconds, "layers": timings})
    skipped = [k for k, v in info["layers"].items() if v.get("status") != "ok"]
    log(f"reduce {method}: {len(mapped)} layers mapped" + (f", {len(skipped)} skipped ({', '.join(skipped)})"
                                                           if skipped else "") + f" in {seconds:.1f} s")
    return {"method": method, "metrics": metrics, "skipped": skipped, "seconds": seconds}
