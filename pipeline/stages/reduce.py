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
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import artifacts, memory, paths
from pipeline.config import METHOD_NAMES, METHODS, Params, ReduceConfig
from pipeline.errors import UsageError, UserError
from pipeline.quality import explained_variance, knn_accuracy, map_metrics
from pipeline.reducers import Embedding, SkipLayer, check_config, embed, embed_frames, fingerprint, prepare
from pipeline.runtime import limit_threads, log, progress

__all__ = ["run", "layer_metrics", "points_columns"]


def layer_metrics(x: np.ndarray, emb: Embedding, labels: np.ndarray, method: str, cfg: ReduceConfig) -> dict[str, Any]:
    """Quality numbers of one layer's map (see :mod:`pipeline.quality`).

    ``trustworthiness`` is measured against the PCA-``reduce.pca_dims`` features the method
    saw. The kNN accuracy in the layer's own space is the same for every method: the probe
    stage computes it once (``metrics/probes.json``).
    """
    assert emb.features is not None
    out: dict[str, Any] = map_metrics(emb.features.pcs, emb.coords, labels, k=cfg.knn_k, seed=cfg.seed)
    if method == "pca":
        d = cfg.pca.n_components
        shown = round(explained_variance(emb.features.ratios, d), 6)      # of what the map shows
        try:                                                               # the same layer the other way
            other = round(explained_variance(prepare(x, d, cfg.seed, sphereize=not cfg.sphereize).ratios, d), 6)
        except SkipLayer:
            other = None
        out["explained_variance"] = shown
        out["explained_variance_plain"] = other if cfg.sphereize else shown
        out["explained_variance_sphereized"] = shown if cfg.sphereize else other
    if emb.info.get("notes"):
        out["clamped"] = "; ".join(emb.info["notes"])
    return out


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


def _snapshots(method: str, cfg: ReduceConfig, index: dict, act: Path, out: Path, labels: np.ndarray,
               anchors: dict[str, tuple[np.ndarray, np.ndarray]], info: dict) -> None:
    """Map each snapshot layer at every snapshot step, backwards from the final model."""
    entries = sorted(index.get("snapshots") or [], key=lambda e: int(e["step"]))
    layers = [name for name in index.get("snapshot_layers") or []]
    if not entries or not layers:
        return
    for layer in layers:
        backwards = entries[::-1]
        frames = (artifacts.load_rows(act / e["dir"] / f"{layer}.npy", len(labels)) for e in backwards)  # lazily
        bar = progress(total=len(backwards), desc=f"{method} {layer} snapshots", unit="frame", leave=False)
        results = embed_frames(frames, method, seed=cfg.seed, pca_dims=cfg.pca_dims, sphereize=cfg.sphereize,
                               start=anchors.get(layer),
                               on_frame=lambda: bar.update(1), **getattr(cfg, method).model_dump())
        bar.close()
        steps, frame_metrics, skipped = [], [], []
        for entry, result in zip(backwards[::-1], results[::-1]):
            step = int(entry["step"])
            if isinstance(result, SkipLayer):
                log(f"warning: reduce {method}: layer {layer} at step {step} skipped: {result}")
                skipped.append({"step": step, "reason": str(result)})
                continue
            artifacts.save_npy(paths.embedding_snapshot(layer, step, paths.embedding_snapshots(method)), result.coords)
            steps.append(step)
            acc = knn_accuracy(result.coords, labels, cfg.knn_k, seed=cfg.seed)
            frame_metrics.append({"step": step, "knn_accuracy": None if acc is None else round(acc, 6)})
        info["snapshots"][layer] = steps
        info["snapshot_metrics"][layer] = frame_metrics
        if skipped:
            info["snapshot_skipped"][layer] = skipped


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
        limit_threads(len(labels))                 # small inputs: one thread is faster (runtime.limit_threads)
        preds = (artifacts.load_npy(act / "preds.npy", dtype=np.integer, ndim=1, what="predictions")
                 if (act / "preds.npy").exists() else None)
        if preds is not None:
            artifacts.check_rows(preds, len(labels), act / "preds.npy")
        layer_names = [row["name"] for row in index["layers"]]
        spatial = {row["name"]: row.get("spatial") for row in index["layers"]}
        place = {name: i for i, name in enumerate(layer_names, start=1)}
        n_layers = len(layer_names)

        def save_points(name: str, coords: np.ndarray) -> None:
            artifacts.save_csv(paths.points_file(method, place[name], n_layers, name),
                               points_columns(coords, labels, classes, preds,
                                              map_title(method, name, place[name], n_layers, spatial[name])))

        d = options["n_components"]
        info: dict[str, Any] = {"method": method, "n_components": d, "n": int(len(labels)),
                                "params": {"pca_dims": cfg.pca_dims, "seed": cfg.seed, "knn_k": cfg.knn_k,
                                           **options},
                                "layers": {}, "snapshots": {}, "snapshot_metrics": {}, "snapshot_skipped": {}}
        metrics: dict[str, Any] = {}
        mapped: dict[str, np.ndarray] = {}         # layer -> coords (n, d)
        anchors: dict[str, tuple[np.ndarray, np.ndarray]] = {}   # snapshot layer -> (x, coords)
        snapshot_layers = set(index.get("snapshot_layers") or [])
        seen: dict[str, str] = {}                  # activation digest -> first layer holding it
        noted: dict[str, list[str]] = {}           # clamp note -> layers (one warning line each)
        log(f"reduce {method}: {len(layer_names)} layers x {len(labels)} points -> {d}-D")
        bar = progress(layer_names, desc=f"reduce {method}", unit="layer")
        for name in bar:
            bar.set_postfix_str(name, refresh=False)
            x = artifacts.load_rows(act / f"{name}.npy", len(labels))
            twin = seen.setdefault(fingerprint(x), name)
            if twin != name:                       # e.g. flatten == pool2, dropout at eval: same map
                info["layers"][name] = {**info["layers"][twin], "same_as": twin}
                metrics[name] = dict(metrics[twin])
                if twin in mapped:
                    artifacts.save_npy(out / f"{name}.npy", mapped[twin])
                    save_points(name, mapped[twin])
                    mapped[name] = mapped[twin]
                    if name in snapshot_layers:
                        anchors[name] = (x, mapped[twin])
                continue
            try:
                emb = embed(x, method, seed=cfg.seed, pca_dims=cfg.pca_dims, sphereize=cfg.sphereize, **options)
            except SkipLayer as exc:
                log(f"warning: reduce {method}: layer {name} skipped: {exc}")
                info["layers"][name] = {"status": "skipped", "reason": str(exc)}
                metrics[name] = {"skipped": str(exc)}
                continue
            timings[name] = emb.info["seconds"]
            for note in emb.info["notes"]:
                noted.setdefault(note, []).append(name)
            metrics[name] = layer_metrics(x, emb, labels, method, cfg)
            info["layers"][name] = {
                "status": "ok", "reason": None,
                "params": {k: v for k, v in emb.info.items() if k not in ("seconds",)},
            }
            artifacts.save_npy(out / f"{name}.npy", emb.coords)
            save_points(name, emb.coords)
            mapped[name] = emb.coords
            if name in snapshot_layers:            # the final map anchors the snapshot sequence
                anchors[name] = (x, emb.coords)
        for note, names in noted.items():
            log(f"warning: reduce {method}: {note} for layer{'s' if len(names) > 1 else ''} {', '.join(names)}")
        if not mapped:
            reasons = "; ".join(f"{k}: {v['reason']}" for k, v in list(info["layers"].items())[:3])
            raise UserError(f"reduce {method}: no layer could be mapped ({reasons}); "
                            f"check the model and rerun extract (`dvc repro extract`)")
        _snapshots(method, cfg, index, act, out, labels, anchors, info)
        artifacts.save_json(metrics_path, metrics)
        artifacts.save_json(out / paths.EMBEDDING_MARKER, info)     # last: the folder's completion marker
    seconds = round(time.perf_counter() - started, 2)
    artifacts.save_json(paths.reduce_log(method), {"seconds": seconds, "layers": timings})
    skipped = [k for k, v in info["layers"].items() if v["status"] != "ok"]
    log(f"reduce {method}: {len(mapped)} layers mapped" + (f", {len(skipped)} skipped ({', '.join(skipped)})"
                                                           if skipped else "") + f" in {seconds:.1f} s")
    return {"method": method, "metrics": metrics, "skipped": skipped, "seconds": seconds}
