"""render stage: draw every figure of the representation story into plots/figures/.

Reads (formats in ARTIFACTS.md) ``data/prepared`` (display images), ``data/model`` (weights),
``data/activations`` (per-layer activations, labels, predictions, snapshots) and, per method,
``data/embeddings/<method>/`` with ``metrics/embeddings/<method>.json``. A method whose folder
is missing is skipped with a warning, so the stage also works after reducing only one method.

Writes ``plots/figures/*.png`` (+ ``evolution_*.gif``), ``plots/confusion.csv``
(``actual,predicted`` class names, DVC's confusion template) and ``metrics/render.json``
(numbers read off the figures: redundant filter pairs, class separation per layer, ...).

Figure files, with ``<m>`` a method and ``<layer>`` a layer name:

- ``scatter_<m>_<layer>.png``: one map per layer and method
- ``progression_<m>.png``: every layer of a method, input to output, kNN accuracy per panel
- ``filters_<conv>.png``: first conv layer's filters; deeper conv layers, filter x input channel
- ``weights_<dense>.png``: weight images (linear model: one per class; MLP: first hidden units)
- ``redundancy_<layer>.png``: correlation of the first layer's filters, near-duplicates boxed
- ``feature_maps.png``: every spatial layer's maps for test image ``render.sample_index``
- ``dense_activations.png``: dense layers for the most confident right / least confident wrong image
- ``evolution_<m>_<layer>.png`` / ``.gif``: the chosen layer's map at every weight snapshot
- ``confusion.png``: confusion matrix and per-class accuracy
- ``outliers_<layer>.png``: per class, the typical image and those farthest from the centroid
- ``class_distances.png`` / ``class_distances_<layer>.png``: class neighbours, all layers / one
- ``class_embedding.png``: the output layer's class vectors in 2-D
- ``dataset_mean_std.png``: per-pixel mean and standard deviation of the training images (every model)

Autoencoders (``task: reconstruct`` in ``data/model/model.json``) skip the classifier views
(confusion, dense activations, class embedding) and add:

- ``reconstructions.png``: test images of every class above their reconstructions, MSE in the title
- ``denoising.png`` (``train.noise`` > 0): clean / noisy input (``train.noise_kind``, seeded with
  ``train.seed``) / denoised output
- ``reconstruction_progress.png`` / ``.gif``: the same images reconstructed by every weight snapshot
- ``latent.png`` (``model.latent_dim`` 2): the code itself, no reduction (wider codes: the
  ``scatter_<m>_latent.png`` maps)
- ``manifold.png`` (``model.latent_dim`` 2): the decoder's images over a grid of the code, beside
  the test codes
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline import artifacts, memory, paths
from pipeline.config import METHODS, Params, RenderConfig, TrainConfig
from pipeline.datasets import load_info, split_images
from pipeline.errors import ConfigError, UserError
from pipeline.runtime import log, progress

__all__ = ["run", "Inputs", "Job", "load_inputs", "plan_figures", "dense_layers", "choose_layer"]

_NOT_ACTIVATIONS = {"Linear", "Flatten", "Dropout", "Conv2d", "ConvTranspose2d", "input"}
_WEIGHT_UNITS = 32                      # MLP first-layer weight images shown
_MANIFOLD_SIDE = 15                     # decoded images per side of the latent grid
_SNAPSHOT_MSE_IMAGES = 512              # test images whose MSE is measured at every snapshot


@dataclass
class Inputs:
    """Everything the figures need, read once (activations stay memory-mapped)."""

    index: dict[str, Any]
    classes: list[str]
    layers: list[str]                    # extracted layers, forward order (starts with ``input``)
    kinds: dict[str, str]                # layer -> module type ("Conv2d", "Tanh", ...)
    shapes: dict[str, tuple[int, ...]]
    labels: np.ndarray                   # (n,)
    indices: np.ndarray                  # (n,) rows of data/prepared/test_*.npy
    images: np.ndarray                   # (n, H, W) or (n, H, W, 3) uint8 display images
    input_shape: tuple[int, int, int]
    pixels: np.ndarray | None = None     # (n, C, H, W) uint8 test images as stored (model inputs)
    info: dict[str, Any] = field(default_factory=dict)         # data/prepared/info.json
    task: str = "classify"               # model.json `task`: classify | reconstruct
    model: Any = None                    # the trained network (eval mode), for autoencoder figures
    model_meta: dict[str, Any] = field(default_factory=dict)   # data/model/model.json
    preds: np.ndarray | None = None      # (n,) classifiers only
    confidence: np.ndarray | None = None
    weights: dict[str, np.ndarray] = field(default_factory=dict)   # layer -> weight array
    weight_kinds: dict[str, str] = field(default_factory=dict)
    output_layer: str | None = None
    methods: list[str] = field(default_factory=list)               # methods with an embedding folder

    def activations(self, layer: str) -> np.ndarray:
        return _load_rows(paths.ACTIVATIONS / f"{layer}.npy", len(self.labels), "activations")


@dataclass
class Job:
    """One output file: ``make()`` returns a Figure (PNG) or an Animation (GIF)."""

    name: str
    make: Callable[[], Any]


def _load_rows(path: Path, n: int, what: str) -> np.ndarray:
    array = artifacts.load_npy(path, ndim=2, mmap=True, what=what)
    if len(array) != n:
        raise UserError(f"{path}: {len(array)} rows but labels.npy has {n}; rerun the stage that wrote it "
                        f"(`dvc repro`)")
    return array


def choose_layer(cfg: RenderConfig, index: dict[str, Any], layers: list[str]) -> str:
    """``render.layer``, or the layer before the output (falling back to the last extracted one)."""
    if cfg.layer is not None:
        if cfg.layer not in layers:
            raise ConfigError(f"render.layer = {cfg.layer}: not an extracted layer; use one of "
                              f"{', '.join(layers)} (or null for the layer before the output)")
        return cfg.layer
    wanted = index.get("penultimate")
    if wanted in layers:
        return wanted
    candidates = [n for n in layers if n not in ("input", index.get("output_layer"))] or layers
    log(f"warning: render: layer {wanted} was not extracted; using {candidates[-1]} for outliers and evolution")
    return candidates[-1]


def _model_weights() -> tuple[dict[str, np.ndarray], dict[str, str], Any, dict[str, Any]]:
    """Weights of every named layer that has one (conv and dense), as numpy arrays, with the
    model itself and its model.json."""
    from pipeline.models import load_model

    model, meta = load_model(paths.MODEL)
    weights, kinds = {}, {}
    for name, module in model.named_layers():
        w = getattr(module, "weight", None)
        if w is not None and w.ndim in (2, 4):
            weights[name] = w.detach().cpu().float().numpy()
            kinds[name] = type(module).__name__
    return weights, kinds, model, meta


def load_inputs(cfg: RenderConfig) -> Inputs:
    act = paths.ACTIVATIONS
    index = artifacts.load_layer_index(act)
    memory.check_layers("render", index)       # before anything is written (pipeline.memory)
    info = load_info(paths.PREPARED)
    labels = artifacts.load_labels(act / "labels.npy", len(info["classes"]))
    indices = artifacts.load_npy(act / "indices.npy", dtype=np.integer, ndim=1, what="indices")
    if len(indices) != len(labels):
        raise UserError(f"{act}: indices.npy and labels.npy differ in length; rerun extract (`dvc repro extract`)")
    from pipeline.plots.common import display_images

    classes = [str(c) for c in (index.get("classes") or info["classes"])]
    layers = [row["name"] for row in index["layers"]]
    preds = confidence = None
    if (act / "preds.npy").exists():
        preds = artifacts.load_npy(act / "preds.npy", dtype=np.integer, ndim=1, what="predictions")
        if (act / "confidence.npy").exists():
            confidence = artifacts.load_npy(act / "confidence.npy", ndim=1, what="confidence")
    weights, weight_kinds, model, meta = _model_weights()
    pixels = split_images(paths.PREPARED, index.get("split", "test"), indices)     # (n, C, H, W) uint8
    methods = []
    for method in METHODS:
        if paths.embedding_dir(method).is_dir():
            methods.append(method)
        else:
            log(f"warning: render: {paths.embedding_dir(method)} not found, skipping the {method} figures "
                f"(run `python -m pipeline reduce {method}`)")
    return Inputs(
        index=index, classes=classes, layers=layers,
        kinds={row["name"]: row.get("type", "") for row in index["layers"]},
        shapes={row["name"]: tuple(row["shape"]) for row in index["layers"]},
        labels=np.asarray(labels, dtype=np.int64), indices=np.asarray(indices, dtype=np.int64),
        images=display_images(pixels), pixels=pixels, info=info, task=str(meta.get("task", "classify")),
        model=model, model_meta=meta,
        input_shape=tuple(info["shape"]), preds=None if preds is None else np.asarray(preds, dtype=np.int64),
        confidence=None if confidence is None else np.asarray(confidence, dtype=np.float64),
        weights=weights, weight_kinds=weight_kinds, output_layer=index.get("output_layer"), methods=methods,
    )


def dense_layers(inp: Inputs) -> list[str]:
    """The dense layers worth reading unit by unit: each Linear layer's activation (or the
    Linear itself when no activation follows, e.g. the output), in forward order."""
    out = []
    for i, name in enumerate(inp.layers):
        if inp.kinds.get(name) != "Linear" or len(inp.shapes[name]) != 1:
            continue
        nxt = inp.layers[i + 1] if i + 1 < len(inp.layers) else None
        if (nxt is not None and inp.kinds.get(nxt) not in _NOT_ACTIVATIONS
                and inp.shapes.get(nxt) == inp.shapes[name]):
            out.append(nxt)
        else:
            out.append(name)
    return out


def _embedding(method: str) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, Any]]:
    """(layer -> coords, layer -> reason it was skipped, layer -> metrics) of one method."""
    folder = paths.embedding_dir(method)
    info_path = folder / "info.json"
    info = artifacts.load_json(info_path, f"{method} embedding info") if info_path.exists() else {}
    metrics_path = paths.embedding_metrics(method)
    metrics = artifacts.load_json(metrics_path, f"{method} metrics") if metrics_path.exists() else {}
    coords, skipped = {}, {}
    for name, row in (info.get("layers") or {}).items():
        if row.get("status") != "ok":
            skipped[name] = str(row.get("reason") or "skipped")
    for path in sorted(folder.glob("*.npy")):
        coords[path.stem] = path
    return coords, skipped, metrics


def _snapshot_frames(method: str, layer: str) -> list[tuple[int, Path]]:
    folder = paths.embedding_dir(method) / "snapshots" / layer
    frames = []
    for path in sorted(folder.glob("step_*.npy")):
        try:
            frames.append((int(path.stem.removeprefix("step_")), path))
        except ValueError:
            continue
    return sorted(frames)


def _snapshot_layers(method: str) -> list[str]:
    folder = paths.embedding_dir(method) / "snapshots"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def plan_figures(inp: Inputs, cfg: RenderConfig, metrics: dict[str, Any],
                 train: TrainConfig | None = None) -> list[Job]:
    """Every figure to draw, in a stable order; jobs record figure-derived numbers in ``metrics``.
    ``train`` (params.yaml ``train``) gives the denoising noise of autoencoders."""
    from pipeline import plots
    from pipeline.plots import classes as class_plots
    from pipeline.plots.predictions import DenseCase, FeatureMaps

    n = len(inp.labels)
    if cfg.sample_index >= n:
        raise ConfigError(f"render.sample_index = {cfg.sample_index} is outside the {n} extracted test images; "
                          f"use 0..{n - 1}")
    colors = plots.class_colors(len(inp.classes))
    layer = choose_layer(cfg, inp.index, inp.layers)
    jobs: list[Job] = []
    add = lambda name, make: jobs.append(Job(name, make))   # noqa: E731

    # 1-2: maps per layer and method, and the layer-by-layer progression per method.
    for method in inp.methods:
        coord_paths, skipped, scores = _embedding(method)
        shown = [name for name in inp.layers if name in coord_paths or name in skipped]
        for name in shown:
            if name in coord_paths:
                add(f"scatter_{method}_{name}.png", lambda m=method, l=name, p=coord_paths[name], s=scores.get(name):
                    plots.scatter_embedding(_load_rows(p, n, "embedding"), inp.labels, inp.classes, method=m,
                                            layer=l, scores=s, kind=inp.kinds.get(l), colors=colors))
        if shown:
            def progression(m=method, shown=shown, coord_paths=coord_paths, skipped=skipped, scores=scores):
                coords = {l: _load_rows(coord_paths[l], n, "embedding") for l in shown if l in coord_paths}
                knn = {l: (scores.get(l) or {}).get("knn_accuracy") for l in shown}
                return plots.progression_grid(shown, coords, inp.labels, inp.classes, method=m, knn=knn,
                                              kinds=inp.kinds, skipped=skipped, colors=colors)
            add(f"progression_{method}.png", progression)
        else:
            log(f"warning: render: {paths.embedding_dir(method)} holds no layer maps; skipping {method}")

    # 3-4: weights of the first layers, redundant filters.
    conv = [name for name, kind in inp.weight_kinds.items() if kind == "Conv2d"]
    dense = [name for name, kind in inp.weight_kinds.items() if kind == "Linear"]
    first = conv[0] if conv else (dense[0] if dense else None)
    for k, name in enumerate(conv):
        w = inp.weights[name]
        if k == 0:
            add(f"filters_{name}.png", lambda w=w, l=name: plots.filter_montage(w, layer=l))
        else:
            add(f"filters_{name}.png", lambda w=w, l=name: plots.conv_weights_grid(w, layer=l))
    if not conv and first is not None:
        w = inp.weights[first]
        is_output = first == inp.output_layer and len(w) == len(inp.classes)
        add(f"weights_{first}.png", lambda w=w, l=first, o=is_output: plots.weight_images(
            w, inp.input_shape, layer=l, unit_names=inp.classes if o else None, max_units=_WEIGHT_UNITS,
            what="class" if o else "unit"))
    if first is not None:
        w = inp.weights[first]
        corr = plots.filter_correlations(w)
        pairs = plots.redundant_pairs(corr, cfg.redundancy_threshold)
        off = np.abs(corr[np.triu_indices(len(corr), k=1)])
        metrics["redundant_filter_pairs"] = {first: len(pairs)}
        metrics["max_filter_correlation"] = {first: round(float(off.max()), 6) if off.size else None}
        add(f"redundancy_{first}.png", lambda w=w, l=first: plots.redundancy_figure(
            w, layer=l, threshold=cfg.redundancy_threshold))

    # 5: feature maps of one image.
    spatial = [name for name in inp.layers if name != "input" and len(inp.shapes[name]) == 3
               and min(inp.shapes[name][1:]) > 1]
    if spatial:
        s = cfg.sample_index

        def feature_maps():
            maps = [FeatureMaps(name, inp.kinds.get(name, ""),
                                np.asarray(inp.activations(name)[s], dtype=np.float32).reshape(inp.shapes[name]))
                    for name in spatial]
            return plots.feature_maps_figure(inp.images[s], maps, caption=_caption(inp, s))
        add("feature_maps.png", feature_maps)

    # 6, 8, 11: classifier views.
    if inp.preds is not None:
        cm = plots.confusion_matrix(inp.labels, inp.preds, len(inp.classes))
        metrics["accuracy"] = round(float(np.trace(cm) / max(cm.sum(), 1)), 6)
        add("confusion.png", lambda: plots.confusion_figure(cm, inp.classes, colors=colors))
        denses = dense_layers(inp)
        if inp.confidence is not None and denses:
            def dense_figure():
                picks = plots.pick_cases(inp.labels, inp.preds, inp.confidence)
                titles = {"most_confident_correct": "most confident correct",
                          "least_confident_wrong": "least confident wrong"}
                cases = [DenseCase(f"{titles[key]}\n{_caption(inp, i, short=True)}", inp.images[i],
                                   {name: np.asarray(inp.activations(name)[i]) for name in denses})
                         for key, i in picks.items()]
                return plots.dense_activations_figure(cases, denses, inp.classes, output_layer=inp.output_layer)
            add("dense_activations.png", dense_figure)
        out = inp.output_layer
        if out in inp.weights and inp.weights[out].ndim == 2 and len(inp.weights[out]) == len(inp.classes):
            add("class_embedding.png", lambda: plots.class_embedding_figure(inp.weights[out], inp.classes,
                                                                            layer=out, colors=colors))

    # 7: evolution of the chosen layer's map during training.
    steps_meta = {int(e["step"]): e for e in inp.index.get("snapshots") or []}
    for method in inp.methods:
        available = _snapshot_layers(method)
        if not available:
            continue
        evo_layers = [layer] if layer in available else available
        if layer not in available:
            log(f"warning: render: no {method} snapshot maps of layer {layer}; showing {', '.join(available)} "
                f"(set extract.snapshot_layers to include {layer})")
        for name in evo_layers:
            frames = _snapshot_frames(method, name)
            if not frames:
                continue
            steps = [step for step, _ in frames]
            epochs = [steps_meta.get(step, {}).get("epoch") for step in steps]
            accs = [_snapshot_accuracy(steps_meta.get(step), inp.labels) for step in steps]
            load = lambda frames=frames: [_load_rows(p, n, "snapshot embedding") for _, p in frames]  # noqa: E731
            add(f"evolution_{method}_{name}.png", lambda m=method, l=name, load=load, steps=steps, epochs=epochs,
                accs=accs: plots.evolution_grid(load(), inp.labels, inp.classes, steps=steps, epochs=epochs,
                                                accuracies=accs, method=m, layer=l, colors=colors))
            add(f"evolution_{method}_{name}.gif", lambda m=method, l=name, load=load, steps=steps, epochs=epochs,
                accs=accs: plots.evolution_animation(load(), inp.labels, inp.classes, steps=steps, epochs=epochs,
                                                     accuracies=accs, method=m, layer=l, colors=colors))

    # 9: outliers of the chosen layer.
    def outliers():
        rows = plots.class_outliers(inp.activations(layer), inp.labels, len(inp.classes), cfg.n_outliers)
        if inp.preds is not None:
            shown = np.concatenate([r.outliers for r in rows]) if rows else np.zeros(0, dtype=int)
            wrong = inp.preds[shown] != inp.labels[shown]
            metrics["outliers"] = {layer: {"shown": int(len(shown)),
                                           "misclassified": round(float(wrong.mean()), 6) if len(shown) else None}}
        return plots.outliers_figure(inp.images, rows, inp.classes, layer=layer, n_outliers=cfg.n_outliers,
                                     preds=inp.preds, colors=colors)
    add(f"outliers_{layer}.png", outliers)

    # 10: class neighbours, every layer and the chosen one in detail.
    separations: dict[str, np.ndarray] = {}

    def separation(name: str) -> np.ndarray:
        if name not in separations:
            separations[name] = class_plots.class_separation(inp.activations(name), inp.labels, len(inp.classes))
        return separations[name]

    def distance_grid():
        matrices = {name: separation(name) for name in inp.layers}
        metrics["class_separation"] = {
            name: round(float(np.nanmean(np.where(np.eye(len(m), dtype=bool), np.nan, m))), 6)
            for name, m in matrices.items()}
        return plots.class_distance_grid(inp.layers, matrices, inp.classes)
    add("class_distances.png", distance_grid)
    add(f"class_distances_{layer}.png", lambda: plots.class_distance_figure(separation(layer), inp.classes,
                                                                             layer=layer))

    # 12: the data itself.
    add("dataset_mean_std.png", lambda: _dataset_mean_std(inp.info))

    # 13: autoencoders.
    if inp.task == "reconstruct" and inp.model is not None:
        jobs += _autoencoder_jobs(inp, train or TrainConfig(), metrics, colors)
    return jobs


def _dataset_mean_std(info: dict[str, Any]):
    from pipeline.plots.autoencoders import mean_std_figure, pixel_stats

    train = artifacts.load_npy(paths.PREPARED / "train_images.npy", dtype=np.uint8, ndim=4, mmap=True,
                               what="training images")
    mean, std = pixel_stats(train)
    return mean_std_figure(mean, std, dataset=str(info.get("dataset", "dataset")), n_images=len(train))


def _snapshot_index() -> list[dict[str, Any]]:
    path = paths.MODEL / "snapshots" / "index.json"
    if not path.exists():
        return []
    rows = artifacts.load_json(path, "snapshot index").get("snapshots") or []
    return sorted(rows, key=lambda r: int(r["step"]))


def _autoencoder_jobs(inp: Inputs, train: TrainConfig, metrics: dict[str, Any], colors: np.ndarray) -> list[Job]:
    """Reconstructions (and denoising), their progress over the snapshots, and for a 2-D code
    the code itself and the decoded manifold."""
    from pipeline.models import load_model, load_weights_into
    from pipeline.models.autoencoders import decode_grid, denoise, reconstruct
    from pipeline.plots import autoencoders as ae_plots
    from pipeline.runtime import normalizer

    model, meta = inp.model, inp.model_meta
    mean, std = meta.get("mean") or inp.info["mean"], meta.get("std") or inp.info["std"]
    normalize = normalizer(mean, std, "cpu")
    k = len(inp.classes)
    labels = inp.labels
    shown = ae_plots.pick_per_class(labels, k, 3 if k <= 10 else 1)
    jobs: list[Job] = []
    add = lambda name, make: jobs.append(Job(name, make))   # noqa: E731
    cache: dict[str, Any] = {}

    def recon_all() -> np.ndarray:
        if "recon" not in cache:
            cache["recon"] = reconstruct(model, inp.pixels, normalize)           # (n, C, H, W) in [0, 1]
        return cache["recon"]

    def clean() -> np.ndarray:
        return inp.pixels.astype(np.float32) / 255.0

    def reconstructions():
        recon = recon_all()
        mse_all = ae_plots.pixel_mse(recon, clean())
        mse_shown = ae_plots.pixel_mse(recon[shown], clean()[shown])
        metrics["reconstruction"] = {"mse_pixels": round(mse_all, 6), "n": int(len(labels))}
        rows = [("input", inp.images[shown]), ("reconstruction", ae_plots.to_display(recon[shown]))]
        return ae_plots.reconstruction_figure(
            rows, labels[shown], inp.classes,
            title=f"{inp.model_meta.get('arch', 'autoencoder')}: test images (upper) and their reconstructions "
                  f"(lower)\nMSE {mse_all:.4f} over {len(labels)} test images ({mse_shown:.4f} on those shown), "
                  f"[0, 1] pixel units")
    add("reconstructions.png", reconstructions)

    if train.noise > 0:
        def denoising():
            noisy, denoised = denoise(model, inp.pixels, mean=mean, std=std, noise=train.noise,
                                      noise_kind=train.noise_kind, seed=train.seed)
            c = clean()
            mse_noisy, mse_out = ae_plots.pixel_mse(noisy, c), ae_plots.pixel_mse(denoised, c)
            metrics["denoising"] = {"noise": train.noise, "noise_kind": train.noise_kind,
                                    "noisy_mse_pixels": round(mse_noisy, 6),
                                    "denoised_mse_pixels": round(mse_out, 6), "n": int(len(labels))}
            rows = [("clean", inp.images[shown]), ("noisy input", ae_plots.to_display(noisy[shown])),
                    ("denoised output", ae_plots.to_display(denoised[shown]))]
            what = f"{train.noise:g} of the pixels masked" if train.noise_kind == "masking" else \
                f"Gaussian noise, std {train.noise:g} (normalised units)"
            return ae_plots.reconstruction_figure(
                rows, labels[shown], inp.classes,
                title=f"Denoising ({what}, as in training, seed {train.seed})\nMSE to the clean image over "
                      f"{len(labels)} test images: noisy input {mse_noisy:.4f}, denoised output {mse_out:.4f} "
                      f"([0, 1] pixel units)")
        add("denoising.png", denoising)

    snapshots = _snapshot_index()
    if snapshots:
        one = ae_plots.pick_per_class(labels, k, 1)
        measured = np.unique(np.round(np.linspace(0, len(labels) - 1, min(len(labels), _SNAPSHOT_MSE_IMAGES)))
                             .astype(np.int64))

        def frames() -> dict[str, Any]:
            if "frames" not in cache:
                snap_model, _ = load_model(paths.MODEL)
                images, mses = [], []
                target = clean()[measured]
                for row in progress(snapshots, desc="render: snapshot reconstructions", unit="snapshot"):
                    load_weights_into(snap_model, paths.MODEL / "snapshots" / row["file"])
                    recon = reconstruct(snap_model, inp.pixels[measured], normalize)
                    mses.append(ae_plots.pixel_mse(recon, target))
                    images.append(ae_plots.to_display(reconstruct(snap_model, inp.pixels[one], normalize)))
                cache["frames"] = {"images": images, "mses": mses,
                                   "steps": [int(r["step"]) for r in snapshots],
                                   "epochs": [r.get("epoch") for r in snapshots]}
                metrics["snapshot_mse_pixels"] = [{"step": s, "mse_pixels": round(m, 6)}
                                                  for s, m in zip(cache["frames"]["steps"], mses)]
            return cache["frames"]

        def progress_png():
            f = frames()
            return ae_plots.progress_figure(inp.images[one], f["images"], labels[one], inp.classes, steps=f["steps"],
                                            epochs=f["epochs"], mses=f["mses"], mse_images=len(measured))

        def progress_gif():
            f = frames()
            return ae_plots.progress_animation(inp.images[one], f["images"], labels[one], inp.classes,
                                               steps=f["steps"], epochs=f["epochs"], mses=f["mses"],
                                               mse_images=len(measured))
        add("reconstruction_progress.png", progress_png)
        add("reconstruction_progress.gif", progress_gif)
    else:
        log("render: no weight snapshots in data/model/snapshots (train.snapshot_every = 0); "
            "skipping the reconstruction progress figures")

    if getattr(model, "latent_dim", None) == 2:
        def latent() -> np.ndarray:
            if "latent" not in cache:
                if "latent" in inp.layers:
                    cache["latent"] = np.asarray(inp.activations("latent"), dtype=np.float64)
                else:
                    import torch

                    with torch.inference_mode():
                        cache["latent"] = np.concatenate([
                            model.encode(normalize(torch.from_numpy(np.ascontiguousarray(inp.pixels[s:s + 256]))))[0]
                            .numpy() for s in range(0, len(inp.pixels), 256)]).astype(np.float64)
            return cache["latent"]

        variational = bool(getattr(model, "variational", False))
        add("latent.png", lambda: ae_plots.latent_figure(latent(), labels, inp.classes, variational=variational,
                                                         colors=colors))

        def manifold():
            grid = decode_grid(model, normalize, n=_MANIFOLD_SIDE, latents=latent())
            return ae_plots.manifold_figure(grid["images"], grid["xs"], grid["ys"], dims=grid["dims"],
                                            latents=latent(), labels=labels, classes=inp.classes,
                                            variational=variational, colors=colors)
        add("manifold.png", manifold)
    return jobs


def _snapshot_accuracy(entry: dict[str, Any] | None, labels: np.ndarray) -> float | None:
    if not entry:
        return None
    path = paths.ACTIVATIONS / entry["dir"] / "preds.npy"
    if not path.exists():
        return None
    preds = artifacts.load_npy(path, dtype=np.integer, ndim=1, what="snapshot predictions")
    return float((preds == labels).mean()) if len(preds) == len(labels) else None


def _caption(inp: Inputs, i: int, *, short: bool = False) -> str:
    """"test image 17 / true 3 / predicted 5 (p=0.61)", on separate lines unless ``short``."""
    true = inp.classes[int(inp.labels[i])]
    lines = [] if short else [f"test image {int(inp.indices[i])}"]
    if inp.preds is None:
        return "\n".join([*lines, f"class {true}"])
    pred = inp.classes[int(inp.preds[i])]
    conf = f" (p={inp.confidence[i]:.2f})" if inp.confidence is not None else ""
    if short:
        return f"true {true}, predicted {pred}{conf}"
    return "\n".join([*lines, f"true {true}", f"predicted {pred}{conf}"])


def run(params: Params) -> dict[str, Any]:
    cfg = params.render
    started = time.perf_counter()
    figures = paths.FIGURES
    with artifacts.stage_outputs(figures, paths.CONFUSION, paths.RENDER_METRICS):
        inp = load_inputs(cfg)
        metrics: dict[str, Any] = {}
        jobs = plan_figures(inp, cfg, metrics, params.train)
        log(f"render: {len(jobs)} figures ({', '.join(inp.methods) or 'no'} maps) -> {figures}")
        for job in progress(jobs, desc="render", unit="figure"):
            made = job.make()
            if job.name.endswith(".gif"):
                artifacts.save_animation(figures / job.name, made, dpi=min(cfg.dpi, 80))
            else:
                artifacts.save_figure(figures / job.name, made, dpi=cfg.dpi)
        names = np.asarray(inp.classes, dtype=object)
        if inp.preds is not None:
            columns = {"actual": names[inp.labels].astype(str), "predicted": names[inp.preds].astype(str)}
        else:
            log("render: the model is not a classifier; plots/confusion.csv has no rows")
            columns = {"actual": np.zeros(0, dtype=str), "predicted": np.zeros(0, dtype=str)}
        artifacts.save_csv(paths.CONFUSION, columns)
        metrics["figures"] = len(jobs)
        artifacts.save_json(paths.RENDER_METRICS, metrics)
    seconds = time.perf_counter() - started
    log(f"render: wrote {len(jobs)} figures in {seconds:.1f} s")
    return {**metrics, "seconds": round(seconds, 2), "files": [job.name for job in jobs]}
