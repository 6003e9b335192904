"""render stage: draw every figure of the representation story into plots/figures/.

Reads (formats in ARTIFACTS.md) ``data/prepared`` (display images), ``data/model`` (weights),
``data/activations`` (per-layer activations, labels, predictions, snapshots) and, per method,
``data/embeddings/<method>/`` with ``metrics/embeddings/<method>.json``. A method whose folder
is missing is skipped with a warning, so the stage also works after reducing only one method.

Writes ``plots/figures/*.png`` (+ ``evolution_*.gif``), ``plots/confusion.csv``
(``actual,predicted`` class names, DVC's confusion template) and ``metrics/render.json``
(numbers the figures show: redundant filter pairs, class separation per layer, ...).

Planning and drawing are separate: :func:`plan_figures` calls one planner per figure family
(``plan_maps``, ``plan_weights``, ...), each a pure pass that computes its numbers and returns
:class:`~pipeline.figures.FigureJob` s -- a file name, a module-level drawing function and its
plain arguments -- so ``render.json`` never depends on which figures are drawn, and the jobs
can be drawn in any order or process (:mod:`pipeline.figures`).

Figure files, with ``<m>`` a method and ``<layer>`` a layer name:

- ``scatter_<m>_<layer>.png``: one map per layer and method
- ``progression_<m>.png``: every layer of a method, input to output, kNN accuracy per panel
- ``filters_<conv>.png``: first conv layer's filters; deeper conv layers, filter x input channel
- ``weights_<dense>.png``: weight images (linear model: one per class; MLP: first hidden units)
- ``redundancy_<layer>.png``: correlation of a conv layer's filters (every conv layer: by weights
  and by output maps, :mod:`~pipeline.stages.render_analyses`) or of a dense first layer's units,
  near-duplicates boxed
- ``filters_evolution_<conv>.png`` / ``.gif``, ``feature_maps_confident_unsure.png``,
  ``dataset_montage.png``, ``thumbnails_<m>_<layer>.png``: :mod:`~pipeline.stages.render_analyses`
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
from typing import Any

import numpy as np

from pipeline import artifacts, memory, paths
from pipeline.config import FIGURE_FAMILIES, METHODS, Params, RenderConfig
from pipeline.datasets import load_info, split_images
from pipeline.errors import ConfigError, UserError
from pipeline.figures import Plan, Rows, draw_all
from pipeline.stages import render_analyses as analyses
from pipeline.runtime import log, progress, worker_processes

__all__ = ["run", "Inputs", "load_inputs", "plan_figures", "plan_maps", "plan_weights", "plan_feature_maps",
           "plan_classifier", "plan_evolution", "plan_outliers", "plan_class_distances", "plan_dataset",
           "plan_autoencoder", "dense_layers", "choose_layer"]

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
        path = paths.ACTIVATIONS / f"{layer}.npy"
        return Rows(path, len(self.labels), "activations", artifacts.EXTRACT_FIX).load()


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
    layers = list(model.named_layers())
    if hasattr(model, "all_layers"):            # not ours: the first conv (by module path) and the output layer
        first_conv = [(n, m) for n, m in model.all_layers() if type(m).__name__ == "Conv2d"][:1]
        layers = first_conv + [(n, m) for n, m in layers if n == model.output_layer]
    for name, module in layers:
        w = getattr(module, "weight", None)
        if w is not None and w.ndim in (2, 4):
            weights[name] = w.detach().cpu().float().numpy()
            kinds[name] = type(module).__name__
    return weights, kinds, model, meta


def _whole_maps(inp: Inputs, names: list[str], row: int) -> dict[str, np.ndarray]:
    """The unpooled outputs (flattened) of ``names`` for extracted image ``row``, recomputed with the
    trained model (extract stored them pooled)."""
    if not names:
        return {}
    import torch

    from pipeline.runtime import normalizer
    from pipeline.activations import layer_modules, record_activations

    pairs = layer_modules(inp.model, names)
    sinks = {name: np.zeros((1, int(np.prod(module_shape))), np.float32) for name, module_shape in
             ((n, next(r.get("map_shape") for r in inp.index["layers"] if r["name"] == n)) for n in names)}
    image = torch.from_numpy(np.ascontiguousarray(inp.pixels[row:row + 1]))
    record_activations(inp.model, image, normalizer(inp.info["mean"], inp.info["std"], "cpu"), pairs, sinks,
                       desc="render: feature maps")
    return {name: sink[0] for name, sink in sinks.items()}


def _kind_label(row: dict[str, Any]) -> str:
    """A layer's module type as figure titles show it, with how it was stored when pooled
    (extract.spatial): ``Sequential, mean-pooled``."""
    kind = str(row.get("type", ""))
    spatial = row.get("spatial")
    return f"{kind}, {spatial}-pooled" if spatial and spatial != "flatten" else kind


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
        kinds={row["name"]: _kind_label(row) for row in index["layers"]},
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
    # a pooled feature vector right before a Linear output (a ResNet's avgpool, 512 x 1 x 1) is a dense
    # layer too, when no Linear activation already stands for it
    pen = inp.index.get("penultimate")
    if (pen in inp.shapes and pen not in out and int(np.prod(inp.shapes[pen][1:])) == 1
            and inp.kinds.get(inp.output_layer or "") == "Linear"):
        out.insert(len(out) - 1 if out and out[-1] == inp.output_layer else len(out), pen)
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
    folder = paths.embedding_snapshots(method) / layer
    steps = [(paths.step_of(path.stem), path) for path in sorted(folder.glob("*.npy"))]
    return sorted((step, path) for step, path in steps if step is not None)


def _snapshot_layers(method: str) -> list[str]:
    folder = paths.embedding_snapshots(method)
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def plan_figures(inp: Inputs, cfg: RenderConfig, *, noise: float = 0.0, noise_kind: str = "masking",
                 seed: int = 0) -> Plan:
    """Every figure to draw, in a stable order, and every number ``metrics/render.json`` reports,
    computed before anything is drawn: one planner per figure family, each a pure pass over the
    inputs. ``noise``, ``noise_kind``, ``seed`` (params.yaml ``train``) give an autoencoder's
    denoising view. ``cfg.figures`` (``render.figures``) chooses the families whose figures are
    drawn; the numbers are those of every family whichever are drawn."""
    from pipeline import plots

    n = len(inp.labels)
    if cfg.sample_index >= n:
        raise ConfigError(f"render.sample_index = {cfg.sample_index} is outside the {n} extracted test images; "
                          f"use 0..{n - 1}")
    colors = plots.class_colors(len(inp.classes))
    layer = choose_layer(cfg, inp.index, inp.layers)
    drawn = set(cfg.figures or FIGURE_FAMILIES)
    plan = Plan()

    def family(name: str, part: Plan) -> None:
        # every family's numbers go into render.json; its figures only when render.figures names it
        plan.extend(part, figures=name in drawn)

    family("maps", plan_maps(inp, colors))
    family("weights", plan_weights(inp, cfg.redundancy_threshold))
    family("feature_maps", plan_feature_maps(inp, cfg.sample_index, cfg.max_channels))
    family("classifier", plan_classifier(inp, colors))
    family("evolution", plan_evolution(inp, layer, colors))
    family("outliers", plan_outliers(inp, layer, cfg.n_outliers, colors))
    family("class_distances", plan_class_distances(inp, layer))
    family("dataset", plan_dataset(inp))
    if inp.task == "reconstruct" and inp.model is not None:
        family("autoencoder", plan_autoencoder(inp, colors, noise=noise, noise_kind=noise_kind, seed=seed))
    # the analyses (pipeline.stages.render_analyses): every conv layer's redundancy, filters over
    # training, confident / unsure feature maps, dataset montage, thumbnail maps
    steps_meta = {int(e["step"]): e for e in inp.index.get("snapshots") or []}
    family("redundancy", analyses.plan_redundancy(inp, cfg.redundancy_threshold, cfg.redundancy_shift))
    family("filters_evolution",
           analyses.plan_filter_evolution(inp, lambda step: _snapshot_accuracy(steps_meta.get(step), inp.labels)))
    family("confident_unsure",
           analyses.plan_confident_unsure(inp, cfg.max_channels, lambda i: _caption(inp, i, short=True)))
    family("dataset", analyses.plan_montage(inp, cfg.montage_per_class, colors))
    family("thumbnails", analyses.plan_thumbnails(inp, layer, cfg.atlas_grid, colors))
    return plan


def plan_maps(inp: Inputs, colors: np.ndarray) -> Plan:
    """``scatter_<m>_<layer>.png`` per layer and method, ``progression_<m>.png`` per method."""
    from pipeline import plots
    from pipeline.plots.embeddings import variance_note

    plan, n = Plan(), len(inp.labels)
    for method in inp.methods:
        coord_paths, skipped, scores = _embedding(method)
        shown = [name for name in inp.layers if name in coord_paths or name in skipped]
        for name in shown:
            if name in coord_paths:
                plan.add(f"scatter_{method}_{name}.png", plots.scatter_embedding,
                         Rows(coord_paths[name], n, "embedding"), inp.labels, inp.classes, method=method, layer=name,
                         scores=scores.get(name), kind=inp.kinds.get(name), colors=colors)
        if shown:
            coords = {name: Rows(coord_paths[name], n, "embedding") for name in shown if name in coord_paths}
            knn = {name: (scores.get(name) or {}).get("knn_accuracy") for name in shown}
            notes = {name: variance_note(scores.get(name)) for name in shown}   # PCA: explained variance +/- sphereize
            plan.add(f"progression_{method}.png", plots.progression_grid, shown, coords, inp.labels, inp.classes,
                     method=method, knn=knn, kinds=inp.kinds, skipped=skipped, notes=notes, colors=colors)
        else:
            log(f"warning: render: {paths.embedding_dir(method)} holds no layer maps; skipping {method}")
    return plan


def plan_weights(inp: Inputs, threshold: float) -> Plan:
    """Filters of every conv layer (or the first dense layer's weight images) and the first
    layer's redundant filters, with their counts (``redundant_filter_pairs``, ``max_filter_correlation``)."""
    from pipeline import plots

    plan = Plan()
    conv = [name for name, kind in inp.weight_kinds.items() if kind == "Conv2d"]
    dense = [name for name, kind in inp.weight_kinds.items() if kind == "Linear"]
    first = conv[0] if conv else (dense[0] if dense else None)
    for k, name in enumerate(conv):
        plan.add(f"filters_{name}.png", plots.filter_montage if k == 0 else plots.conv_weights_grid,
                 inp.weights[name], layer=name)
    if not conv and first is not None:
        w = inp.weights[first]
        is_output = first == inp.output_layer and len(w) == len(inp.classes)
        plan.add(f"weights_{first}.png", plots.weight_images, w, inp.input_shape, layer=first,
                 unit_names=inp.classes if is_output else None, max_units=_WEIGHT_UNITS,
                 what="class" if is_output else "unit")
    if first is not None:
        w = inp.weights[first]
        corr = plots.filter_correlations(w)
        pairs = plots.redundant_pairs(corr, threshold)
        off = np.abs(corr[np.triu_indices(len(corr), k=1)])
        plan.metrics["redundant_filter_pairs"] = {first: len(pairs)}
        plan.metrics["max_filter_correlation"] = {first: round(float(off.max()), 6) if off.size else None}
        if first not in conv:                       # conv layers: analyses.plan_redundancy (weights and maps)
            plan.add(f"redundancy_{first}.png", plots.redundancy_figure, w, layer=first, threshold=threshold)
    return plan


def plan_feature_maps(inp: Inputs, sample: int, max_channels: int = 16) -> Plan:
    """``feature_maps.png``: every spatial layer's maps for test image ``sample``. Maps that extract
    stored pooled (extract.spatial) are recomputed whole for this one image with the trained model."""
    from pipeline import plots
    from pipeline.plots.predictions import FeatureMaps

    plan = Plan()
    rows = {row["name"]: row for row in inp.index["layers"]}
    map_shapes = {name: tuple(rows.get(name, {}).get("map_shape") or inp.shapes[name]) for name in inp.layers}
    spatial = [name for name in inp.layers if name != "input" and len(map_shapes[name]) == 3
               and min(map_shapes[name][1:]) > 1
               and (map_shapes[name] == inp.shapes[name] or inp.model is not None)]
    if spatial:
        whole = _whole_maps(inp, [n for n in spatial if map_shapes[n] != inp.shapes[n]], sample)
        maps = [FeatureMaps(name, str(rows.get(name, {}).get("type", "")), whole[name].reshape(map_shapes[name])
                            if name in whole else
                            np.asarray(inp.activations(name)[sample], dtype=np.float32).reshape(inp.shapes[name]))
                for name in spatial]
        plan.add("feature_maps.png", plots.feature_maps_figure, inp.images[sample], maps,
                 caption=_caption(inp, sample), max_channels=max_channels)
    return plan


def plan_classifier(inp: Inputs, colors: np.ndarray) -> Plan:
    """Classifiers only: confusion matrix (``accuracy``), dense activations of the most confident
    right and least confident wrong image, the output layer's class vectors."""
    from pipeline import plots
    from pipeline.plots.predictions import DenseCase

    plan = Plan()
    if inp.preds is None:
        return plan
    cm = plots.confusion_matrix(inp.labels, inp.preds, len(inp.classes))
    plan.metrics["accuracy"] = round(float(np.trace(cm) / max(cm.sum(), 1)), 6)
    plan.add("confusion.png", plots.confusion_figure, cm, inp.classes, colors=colors)
    denses = dense_layers(inp)
    if inp.confidence is not None and denses:
        picks = plots.pick_cases(inp.labels, inp.preds, inp.confidence)
        titles = {"most_confident_correct": "most confident correct", "least_confident_wrong": "least confident wrong"}
        cases = [DenseCase(f"{titles[key]}\n{_caption(inp, i, short=True)}", inp.images[i],
                           {name: np.asarray(inp.activations(name)[i]) for name in denses})
                 for key, i in picks.items()]
        plan.add("dense_activations.png", plots.dense_activations_figure, cases, denses, inp.classes,
                 output_layer=inp.output_layer)
    out = inp.output_layer
    if out in inp.weights and inp.weights[out].ndim == 2 and len(inp.weights[out]) == len(inp.classes):
        plan.add("class_embedding.png", plots.class_embedding_figure, inp.weights[out], inp.classes, layer=out,
                 colors=colors)
    return plan


def plan_evolution(inp: Inputs, layer: str, colors: np.ndarray) -> Plan:
    """``evolution_<m>_<layer>.png`` / ``.gif``: the chosen layer's map at every weight snapshot."""
    from pipeline import plots

    plan, n = Plan(), len(inp.labels)
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
            common = dict(steps=steps, epochs=[steps_meta.get(step, {}).get("epoch") for step in steps],
                          accuracies=[_snapshot_accuracy(steps_meta.get(step), inp.labels) for step in steps],
                          method=method, layer=name, colors=colors)
            coords = [Rows(p, n, "snapshot embedding") for _, p in frames]
            plan.add(f"evolution_{method}_{name}.png", plots.evolution_grid, coords, inp.labels, inp.classes, **common)
            plan.add(f"evolution_{method}_{name}.gif", plots.evolution_animation, coords, inp.labels, inp.classes,
                     **common)
    return plan


def plan_outliers(inp: Inputs, layer: str, n_outliers: int, colors: np.ndarray) -> Plan:
    """``outliers_<layer>.png``: per class the typical image and the farthest from the centroid;
    for classifiers the share of those that are misclassified (``outliers``)."""
    from pipeline import plots

    plan = Plan()
    rows = plots.class_outliers(inp.activations(layer), inp.labels, len(inp.classes), n_outliers)
    if inp.preds is not None:
        shown = np.concatenate([r.outliers for r in rows]) if rows else np.zeros(0, dtype=int)
        wrong = inp.preds[shown] != inp.labels[shown]
        plan.metrics["outliers"] = {layer: {"shown": int(len(shown)),
                                            "misclassified": round(float(wrong.mean()), 6) if len(shown) else None}}
    plan.add(f"outliers_{layer}.png", plots.outliers_figure, inp.images, rows, inp.classes, layer=layer,
             n_outliers=n_outliers, preds=inp.preds, colors=colors)
    return plan


def plan_class_distances(inp: Inputs, layer: str) -> Plan:
    """Class neighbours in every layer (``class_distances.png``, mean off-diagonal separation per
    layer as ``class_separation``) and in the chosen layer (``class_distances_<layer>.png``)."""
    from pipeline import plots

    plan = Plan()
    matrices = {name: plots.class_separation(inp.activations(name), inp.labels, len(inp.classes))
                for name in inp.layers}
    plan.metrics["class_separation"] = {
        name: round(float(np.nanmean(np.where(np.eye(len(m), dtype=bool), np.nan, m))), 6)
        for name, m in matrices.items()}
    plan.add("class_distances.png", plots.class_distance_grid, inp.layers, matrices, inp.classes)
    plan.add(f"class_distances_{layer}.png", plots.class_distance_figure, matrices[layer], inp.classes, layer=layer)
    return plan


def plan_dataset(inp: Inputs) -> Plan:
    """``dataset_mean_std.png``: per-pixel mean and standard deviation of the training images."""
    from pipeline.plots.autoencoders import mean_std_figure, pixel_stats

    plan = Plan()
    train = artifacts.load_npy(paths.PREPARED / "train_images.npy", dtype=np.uint8, ndim=4, mmap=True,
                               what="training images")
    mean, std = pixel_stats(train)
    plan.add("dataset_mean_std.png", mean_std_figure, mean, std, dataset=str(inp.info.get("dataset", "dataset")),
             n_images=len(train))
    return plan


def _snapshot_index() -> list[dict[str, Any]]:
    path = paths.SNAPSHOT_INDEX
    if not path.exists():
        return []
    rows = artifacts.load_json(path, "snapshot index").get("snapshots") or []
    return sorted(rows, key=lambda r: int(r["step"]))


def plan_autoencoder(inp: Inputs, colors: np.ndarray, *, noise: float, noise_kind: str, seed: int) -> Plan:
    """Reconstructions (``reconstruction``), denoising with the training noise (``denoising``),
    reconstructions by every weight snapshot (``snapshot_mse_pixels``), and for a 2-D code the
    code itself and the decoded manifold."""
    from pipeline.models import load_model, load_weights_into
    from pipeline.models.autoencoders import decode_grid, denoise, reconstruct
    from pipeline.plots import autoencoders as ae_plots
    from pipeline.runtime import normalized_batches, normalizer

    plan = Plan()
    model, meta = inp.model, inp.model_meta
    mean, std = meta.get("mean") or inp.info["mean"], meta.get("std") or inp.info["std"]
    normalize = normalizer(mean, std, "cpu")
    k = len(inp.classes)
    labels = inp.labels
    shown = ae_plots.pick_per_class(labels, k, 3 if k <= 10 else 1)
    clean = inp.pixels.astype(np.float32) / 255.0                               # (n, C, H, W) in [0, 1]

    recon = reconstruct(model, inp.pixels, normalize)                           # (n, C, H, W) in [0, 1]
    mse_all = ae_plots.pixel_mse(recon, clean)
    mse_shown = ae_plots.pixel_mse(recon[shown], clean[shown])
    plan.metrics["reconstruction"] = {"mse_pixels": round(mse_all, 6), "n": int(len(labels))}
    plan.add("reconstructions.png", ae_plots.reconstruction_figure,
             [("input", inp.images[shown]), ("reconstruction", ae_plots.to_display(recon[shown]))],
             labels[shown], inp.classes,
             title=f"{meta.get('arch', 'autoencoder')}: test images (upper) and their reconstructions "
                   f"(lower)\nMSE {mse_all:.4f} over {len(labels)} test images ({mse_shown:.4f} on those shown), "
                   f"[0, 1] pixel units")

    if noise > 0:
        noisy, denoised = denoise(model, inp.pixels, mean=mean, std=std, noise=noise, noise_kind=noise_kind,
                                  seed=seed)
        mse_noisy, mse_out = ae_plots.pixel_mse(noisy, clean), ae_plots.pixel_mse(denoised, clean)
        plan.metrics["denoising"] = {"noise": noise, "noise_kind": noise_kind,
                                     "noisy_mse_pixels": round(mse_noisy, 6),
                                     "denoised_mse_pixels": round(mse_out, 6), "n": int(len(labels))}
        what = f"{noise:g} of the pixels masked" if noise_kind == "masking" else \
            f"Gaussian noise, std {noise:g} (normalised units)"
        plan.add("denoising.png", ae_plots.reconstruction_figure,
                 [("clean", inp.images[shown]), ("noisy input", ae_plots.to_display(noisy[shown])),
                  ("denoised output", ae_plots.to_display(denoised[shown]))],
                 labels[shown], inp.classes,
                 title=f"Denoising ({what}, as in training, seed {seed})\nMSE to the clean image over "
                       f"{len(labels)} test images: noisy input {mse_noisy:.4f}, denoised output {mse_out:.4f} "
                       f"([0, 1] pixel units)")

    snapshots = _snapshot_index()
    if snapshots:
        one = ae_plots.pick_per_class(labels, k, 1)
        measured = np.unique(np.round(np.linspace(0, len(labels) - 1, min(len(labels), _SNAPSHOT_MSE_IMAGES)))
                             .astype(np.int64))
        snap_model, _ = load_model(paths.MODEL)
        images, mses = [], []
        target = clean[measured]
        for row in progress(snapshots, desc="render: snapshot reconstructions", unit="snapshot"):
            load_weights_into(snap_model, paths.MODEL_SNAPSHOTS / row["file"])
            mses.append(ae_plots.pixel_mse(reconstruct(snap_model, inp.pixels[measured], normalize), target))
            images.append(ae_plots.to_display(reconstruct(snap_model, inp.pixels[one], normalize)))
        steps = [int(r["step"]) for r in snapshots]
        plan.metrics["snapshot_mse_pixels"] = [{"step": s, "mse_pixels": round(m, 6)} for s, m in zip(steps, mses)]
        common = dict(steps=steps, epochs=[r.get("epoch") for r in snapshots], mses=mses, mse_images=len(measured))
        plan.add("reconstruction_progress.png", ae_plots.progress_figure, inp.images[one], images, labels[one],
                 inp.classes, **common)
        plan.add("reconstruction_progress.gif", ae_plots.progress_animation, inp.images[one], images, labels[one],
                 inp.classes, **common)
    else:
        log("render: no weight snapshots in data/model/snapshots (train.snapshot_every = 0); "
            "skipping the reconstruction progress figures")

    if getattr(model, "latent_dim", None) == 2:
        if "latent" in inp.layers:
            latent = np.asarray(inp.activations("latent"), dtype=np.float64)
        else:
            import torch

            with torch.inference_mode():
                latent = np.concatenate([model.encode(x)[0].numpy()
                                         for _, x in normalized_batches(inp.pixels, normalize, 256)]).astype(np.float64)
        variational = bool(getattr(model, "variational", False))
        plan.add("latent.png", ae_plots.latent_figure, latent, labels, inp.classes, variational=variational,
                 colors=colors)
        grid = decode_grid(model, normalize, n=_MANIFOLD_SIDE, latents=latent)
        plan.add("manifold.png", ae_plots.manifold_figure, grid["images"], grid["xs"], grid["ys"], dims=grid["dims"],
                 latents=latent, labels=labels, classes=inp.classes, variational=variational, colors=colors)
    return plan


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
        plan = plan_figures(inp, cfg, noise=params.train.noise, noise_kind=params.train.noise_kind,
                            seed=params.train.seed)
        chosen = f"; render.figures: {', '.join(cfg.figures)}" if cfg.figures else ""
        log(f"render: {len(plan.jobs)} figures ({', '.join(inp.methods) or 'no'} maps{chosen}) -> {figures}")
        draw_all(plan.jobs, figures, cfg.dpi, workers=worker_processes(len(plan.jobs)),
                 bar=lambda done, total: progress(done, total=total, desc="render", unit="figure"))
        names = np.asarray(inp.classes, dtype=object)
        if inp.preds is not None:
            columns = {"actual": names[inp.labels].astype(str), "predicted": names[inp.preds].astype(str)}
        else:
            log("render: the model is not a classifier; plots/confusion.csv has no rows")
            columns = {"actual": np.zeros(0, dtype=str), "predicted": np.zeros(0, dtype=str)}
        artifacts.save_csv(paths.CONFUSION, columns)
        metrics = {**plan.metrics, "figures": len(plan.jobs)}
        artifacts.save_json(paths.RENDER_METRICS, metrics)
    seconds = time.perf_counter() - started
    log(f"render: wrote {len(plan.jobs)} figures in {seconds:.1f} s")
    return {**metrics, "seconds": round(seconds, 2), "files": [job.name for job in plan.jobs]}
