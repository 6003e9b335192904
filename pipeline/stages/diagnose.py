"""diagnose stage: dead / saturated units and class tightness of every extracted layer.

Reads ``data/activations`` (layers.json, one .npy per layer, labels) and ``data/model/model.json``
(the full layer order and the activation function, so pooling after an activation inherits its
rule even when the activation itself was not extracted). Writes:

- ``metrics/diagnostics.json``: ``{layer: {dead_fraction, n_dead, n_units, mean_activity,
  [saturated_fraction], tightness: {class: value, ..., mean}}}`` (activation layers and the
  pooling / flatten layers after them get the unit numbers, every layer the tightness) plus
  ``summary``: dead units over the activation layers only (pooling would count them twice);
- ``plots/diagnostics/activity.png`` and ``plots/diagnostics/tightness.png``.

The rules (what "active", "dead", "saturated" and "tightness" mean) are in :mod:`pipeline.diagnostics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import artifacts, memory, paths
from pipeline.config import Params
from pipeline.diagnostics import (ACTIVATION_TYPES, PASSTHROUGH_TYPES, class_tightness, dead_summary,
                                  layer_kinds, resolved_activation, tightness_summary, unit_activity)
from pipeline.errors import UserError
from pipeline.model_meta import load_meta
from pipeline.runtime import limit_threads, log, progress

__all__ = ["run", "ACTIVITY_FIGURE", "TIGHTNESS_FIGURE"]

ACTIVITY_FIGURE = "activity.png"
TIGHTNESS_FIGURE = "tightness.png"


def _followers(layers: list[dict[str, Any]], name: str) -> list[str]:
    """The pooling / reshape layers right after ``name`` in forward order (they inherit its dead units)."""
    names = [row["name"] for row in layers]
    out = []
    for row in layers[names.index(name) + 1:] if name in names else []:
        if row["type"] not in PASSTHROUGH_TYPES:
            break
        out.append(row["name"])
    return out


def run(params: Params) -> dict[str, Any]:
    cfg = params.diagnose
    src = paths.ACTIVATIONS
    with artifacts.stage_outputs(paths.DIAGNOSTICS_METRICS, paths.DIAGNOSTICS_PLOTS):
        index = artifacts.load_layer_index(src)
        memory.check_layers("diagnose", index)       # before anything is written (pipeline.memory)
        meta = load_meta(paths.MODEL)
        classes = [str(c) for c in index.get("classes") or meta["classes"]]
        labels = artifacts.load_labels(src / "labels.npy", len(classes))
        limit_threads(len(labels))                 # small inputs: one thread is faster (runtime.limit_threads)
        activation = resolved_activation(meta)
        # a block of a model that is not ours (a ResNet stage) counts as the activation it ends with
        rows = [{**row, "type": row.get("ends_with") or row["type"]} for row in meta["layers"]]
        known = {row["name"] for row in rows}
        rows += [{**row, "type": row.get("ends_with") or row["type"]} for row in index["layers"]
                 if row["name"] not in known and row["name"] != "input"]     # extract.layers: all / a list
        kinds = layer_kinds(rows, default=activation)
        layer_types = {row["name"]: row["type"] for row in rows}
        nonfinite = set(index.get("nonfinite_layers") or [])
        n = int(index["n"])
        if len(labels) != n:
            raise UserError(f"{src / 'labels.npy'} has {len(labels)} labels but layers.json says n = {n}; "
                            f"rerun `dvc repro extract`")

        metrics: dict[str, dict[str, Any]] = {}
        activity: dict[str, np.ndarray] = {}
        tight: dict[str, np.ndarray] = {}
        unit_layers: list[str] = []
        for row in progress(index["layers"], desc="diagnose", unit="layer", leave=False):
            name = row["name"]
            if name in nonfinite:
                log(f"warning: layer {name} has NaN or inf activations; skipped")
                metrics[name] = {"skipped": "NaN or inf activations (extract flagged the layer)"}
                continue
            acts = artifacts.load_rows(src / f"{name}.npy", n, what=f"activations of {name}", mmap=True)
            if acts.shape[1] != int(row["dim"]):
                raise UserError(f"{src / (name + '.npy')} has shape {acts.shape}, layers.json says "
                                f"({n}, {row['dim']}); rerun `dvc repro extract`")
            entry: dict[str, Any] = {}
            kind = kinds.get(name)
            if kind is not None:
                stats = unit_activity(acts, row["shape"], kind, eps=cfg.eps, saturation=cfg.saturation)
                activity[name] = np.asarray(stats["density"])
                entry.update(dead_summary(stats["activity"], kind, float(stats["saturated"]), stats["density"]))
                unit_layers.append(name)
            tight[name] = class_tightness(acts, labels, len(classes))
            entry["tightness"] = tightness_summary(tight[name], classes)
            metrics[name] = entry
            del acts

        act_layers = [m for m in unit_layers if layer_types.get(m) in ACTIVATION_TYPES]   # no double counting
        for name in (act_layers or unit_layers):
            s = metrics[name]
            if s["dead_fraction"] > cfg.warn_dead_fraction:
                what = "always saturated" if kinds[name] in ("tanh", "sigmoid") else "never active"
                after = [m for m in _followers(meta["layers"], name) if m in metrics]
                also = f" (and {', '.join(after)} after it)" if after else ""
                log(f"warning: layer {name}{also}: {s['n_dead']} of {s['n_units']} units "
                    f"({100 * s['dead_fraction']:.0f}%) are dead ({what} on the {n} extracted inputs)")
        total = sum(int(metrics[m]["n_units"]) for m in act_layers)
        dead = sum(int(metrics[m]["n_dead"]) for m in act_layers)
        metrics["summary"] = {
            "dead_fraction": dead / total if total else float("nan"),
            "n_dead": dead, "n_units": total,
            "layers_mostly_dead": sum(metrics[m]["dead_fraction"] > cfg.warn_dead_fraction for m in act_layers),
        }
        artifacts.save_json(paths.DIAGNOSTICS_METRICS, metrics)

        from pipeline.plots.diagnostics import activity_histograms, tightness_bars

        if unit_layers:
            fig = activity_histograms(unit_layers, activity, {m: metrics[m] for m in unit_layers},
                                      {m: str(kinds[m]) for m in unit_layers}, n_inputs=n)
            artifacts.save_figure(paths.DIAGNOSTICS_PLOTS / ACTIVITY_FIGURE, fig)
        else:
            log("note: no activation layers among the extracted ones; no unit-activity figure")
        tight_layers = [m for m in tight]
        if tight_layers:
            artifacts.save_figure(paths.DIAGNOSTICS_PLOTS / TIGHTNESS_FIGURE,
                                  tightness_bars(tight_layers, tight, classes))
    log(f"diagnosed {len(metrics) - 1} layers ({len(unit_layers)} with units, {activation} activation): "
        f"{dead} of {total} units dead -> {paths.DIAGNOSTICS_METRICS}")
    return metrics
