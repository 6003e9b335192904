"""render's planners for the analysis figures: redundancy in every conv layer, filters over
training, feature maps of a confident and an unsure image, the dataset montage, thumbnail maps.

Each planner is a pure pass, as the other planners of :mod:`pipeline.stages.render`: it computes
the numbers ``metrics/render.json`` reports and returns a :class:`~pipeline.figures.Plan` of
figure jobs (module-level drawing functions from :mod:`pipeline.plots` with plain arguments).

Figure files:

- ``redundancy_<conv>.png``: every conv layer, weight correlation beside the correlation of its
  output maps on the test images (less each channel's mean map, best over shifts of up to
  ``render.redundancy_shift`` px); ``redundancy`` in the metrics
- ``filters_evolution_<conv>.png`` / ``.gif``: the first two conv layers' filters at every
  weight snapshot, on one colour scale (the second layer one tile per input channel)
- ``feature_maps_confident_unsure.png``: the most confident correct test image and the least
  confident one, every spatial layer, ``render.max_channels`` channels a row
- ``dataset_montage.png``: ``render.montage_per_class`` training images of every class
- ``thumbnails_<m>_<layer>.png``: the input and the layer before the output, per method: a
  ``render.atlas_grid`` square grid over the map, each occupied cell showing the test image
  nearest its centre
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pipeline import artifacts, paths
from pipeline.figures import Plan, Rows
from pipeline.runtime import log

if TYPE_CHECKING:
    from pipeline.stages.render import Inputs

__all__ = ["plan_redundancy", "plan_filter_evolution", "plan_confident_unsure", "plan_montage", "plan_thumbnails",
           "conv_layers", "snapshot_weights"]

EVOLVING_CONVS = 2                     # filters over training: the first two conv layers
REDUNDANCY_IMAGES = 500                # test images the activation correlation reads at most


def conv_layers(inp: "Inputs") -> list[str]:
    """Conv layers with weights, in forward order."""
    return [name for name, kind in inp.weight_kinds.items() if kind == "Conv2d"]


def plan_redundancy(inp: "Inputs", threshold: float, shift: int) -> Plan:
    """``redundancy_<conv>.png`` for every conv layer and ``redundancy`` in the metrics: filters,
    near-duplicate pairs by weights and by output maps, mean largest |r|, ``redundant_fraction``
    (:func:`pipeline.redundancy.redundancy_summary`). A conv layer that was not extracted gets the
    weight numbers only."""
    from pipeline import plots
    from pipeline.redundancy import activation_correlations, filter_correlations, redundancy_summary

    plan, numbers = Plan(), {}
    for name in conv_layers(inp):
        weights = inp.weights[name]
        weight_corr = filter_correlations(weights)
        shape = inp.shapes.get(name)
        act_corr, n_images = None, None
        if name in inp.layers and shape is not None and len(shape) == 3 and shape[0] == len(weight_corr):
            act_corr = activation_correlations(inp.activations(name), tuple(int(s) for s in shape), max_shift=shift,
                                               max_images=REDUNDANCY_IMAGES)
            n_images = min(len(inp.labels), REDUNDANCY_IMAGES)
        summary = redundancy_summary(threshold, weight_corr=weight_corr, activation_corr=act_corr)
        if act_corr is None:
            summary["activation"] = f"{name} was not extracted (extract.layers); weights only"
        numbers[name] = summary
        plan.add(f"redundancy_{name}.png", plots.redundancy_figure, weights, layer=name, threshold=threshold,
                 activation_corr=act_corr, max_shift=shift, n_images=n_images)
    if numbers:
        plan.metrics["redundancy"] = numbers
    return plan


def _qualified(model: Any, module: Any) -> str:
    for qualname, candidate in model.named_modules():
        if candidate is module:
            return qualname
    raise KeyError("module not found in the model")


def snapshot_weights(model: Any, layers: list[str]) -> tuple[list[dict[str, Any]], dict[str, list[np.ndarray]]]:
    """(snapshot index rows sorted by step, layer -> the layer's weight (F_out, F_in, kh, kw) at
    every snapshot), read from ``data/model/snapshots``; empty when there are none."""
    index = paths.MODEL / "snapshots" / "index.json"
    if not index.exists() or not layers:
        return [], {}
    rows = sorted(artifacts.load_json(index, "snapshot index").get("snapshots") or [],
                  key=lambda r: int(r["step"]))
    modules = dict(model.named_layers())
    if hasattr(model, "all_layers"):             # not ours: conv layers by module path, keys of the wrapped net
        modules.update(model.all_layers())
    root = getattr(model, "net", model) if hasattr(model, "all_layers") else model
    keys = {name: f"{_qualified(root, modules[name])}.weight" for name in layers}
    frames: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    for row in rows:
        state = artifacts.load_safetensors(paths.MODEL / "snapshots" / row["file"])
        for name, key in keys.items():
            frames[name].append(state[key].detach().float().cpu().numpy())
    return rows, frames


def plan_filter_evolution(inp: "Inputs", accuracy_of: Callable[[int], float | None]) -> Plan:
    """``filters_evolution_<conv>.png`` / ``.gif``: the first two conv layers' filters at every
    weight snapshot (``accuracy_of(step)``: the snapshot's test accuracy, or None)."""
    from pipeline.plots import filters

    plan = Plan()
    evolving = conv_layers(inp)[:EVOLVING_CONVS]
    if not evolving or inp.model is None:
        return plan
    rows, frames = snapshot_weights(inp.model, evolving)
    if not rows:
        log("render: no weight snapshots in data/model/snapshots (train.snapshot_every = 0); skipping the "
            "filters-over-training figures")
        return plan
    steps = [int(r["step"]) for r in rows]
    common = dict(steps=steps, epochs=[r.get("epoch") for r in rows], accuracies=[accuracy_of(s) for s in steps])
    for k, name in enumerate(evolving):
        plan.add(f"filters_evolution_{name}.png", filters.filter_evolution_figure, frames[name], layer=name,
                 first_layer=k == 0, **common)
        plan.add(f"filters_evolution_{name}.gif", filters.filter_evolution_animation, frames[name], layer=name,
                 first_layer=k == 0, **common)
    return plan


def plan_confident_unsure(inp: "Inputs", max_channels: int, caption: Callable[[int], str]) -> Plan:
    """``feature_maps_confident_unsure.png``: every spatial layer for the most confident correct
    test image beside the least confident one (classifiers; ``caption(i)`` describes image i)."""
    from pipeline.plots import predictions

    plan = Plan()
    spatial = [name for name in inp.layers if name != "input" and len(inp.shapes[name]) == 3
               and min(inp.shapes[name][1:]) > 1]
    if not spatial or inp.preds is None or inp.confidence is None:
        return plan
    picks = predictions.pick_cases(inp.labels, inp.preds, inp.confidence)
    chosen = [("confident", picks.get("most_confident_correct", int(np.argmax(inp.confidence)))),
              ("unsure", int(np.argmin(inp.confidence)))]
    cases = [predictions.MapsCase(label, caption(i), inp.images[i], [
        predictions.FeatureMaps(name, inp.kinds.get(name, ""),
                                np.asarray(inp.activations(name)[i], dtype=np.float32).reshape(inp.shapes[name]))
        for name in spatial]) for label, i in chosen]
    plan.add("feature_maps_confident_unsure.png", predictions.feature_maps_comparison, cases,
             max_channels=max_channels)
    return plan


def plan_montage(inp: "Inputs", per_class: int, colors: np.ndarray) -> Plan:
    """``dataset_montage.png``: the first ``per_class`` training images of every class."""
    from pipeline.plots import atlas
    from pipeline.plots.common import display_images

    plan = Plan()
    images = artifacts.load_npy(paths.PREPARED / "train_images.npy", dtype=np.uint8, ndim=4, mmap=True,
                                what="training images")
    labels = artifacts.load_labels(paths.PREPARED / "train_labels.npy", len(inp.classes), what="training labels")
    shown = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(inp.classes))]
                                   + [np.zeros(0, dtype=np.int64)]).astype(np.int64))
    counts = np.bincount(labels, minlength=len(inp.classes))
    plan.add("dataset_montage.png", atlas.dataset_montage, display_images(np.asarray(images[shown])), labels[shown],
             inp.classes, per_class=per_class, dataset=str(inp.info.get("dataset", "dataset")), colors=colors,
             counts=counts)
    return plan


def plan_thumbnails(inp: "Inputs", layer: str, grid: int, colors: np.ndarray) -> Plan:
    """``thumbnails_<m>_<layer>.png`` for the input and ``layer`` (the one before the output),
    per method with a map of them."""
    from pipeline.plots import atlas

    plan, n = Plan(), len(inp.labels)
    for method in inp.methods:
        for name in dict.fromkeys(["input", layer]):
            path = paths.embedding_dir(method) / f"{name}.npy"
            if path.exists():
                plan.add(f"thumbnails_{method}_{name}.png", atlas.thumbnail_map, Rows(path, n, "embedding"),
                         inp.images, inp.labels, inp.classes, method=method, layer=name, grid=grid, colors=colors)
    return plan
