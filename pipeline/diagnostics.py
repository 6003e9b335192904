"""Health checks of a trained network's hidden layers: dead / saturated units and class tightness.

Pure functions (arrays in, arrays and numbers out); :mod:`pipeline.stages.diagnose` reads the
activations and writes the results.

**When is a unit active?** It depends on the layer's activation function (its *kind*):

- rectifiers (``relu``, ``leaky_relu``, ``elu``, ``gelu``, ``silu``): the output is above
  ``eps`` (default 1e-6), i.e. the unit is in its positive, linear regime. A ReLU unit that
  is never active outputs exactly 0 everywhere and gets no gradient: it is *dead*. For the leaky
  and smooth variants "never active" means stuck in the small negative regime.
- saturating (``tanh``, ``sigmoid``): the output is *not* saturated, i.e. ``|y| <= saturation``
  for tanh and ``1 - saturation <= y <= saturation`` for sigmoid (default 0.99). A unit that is
  saturated on every input has (almost) no gradient: it counts as dead too.

A conv layer's unit is a channel: it is active on an image when it is active at *any* position
of its feature map, and dead when it is active at no position of any image.

Pooling (and flatten / dropout) after an activation inherits its kind and is measured on its
own values with the same rule: max / average pooling of an all-zero ReLU channel stays zero,
so a dead channel stays dead. Raw pre-activations (conv, linear, batch norm, logits, the input)
have no "inactive" value, so they get no dead-unit numbers: their units' deadness shows in the
activation that follows. Class tightness is measured on every layer.

**Class tightness** of class k in a layer: the mean Euclidean distance of its points to the class
centroid, divided by the mean distance between two class centroids (over all pairs). Unit-free,
so layers of any width compare: 0.3 means the class's points lie, on average, 0.3 centroid gaps
from their centre; a class with a lower value is clustered more tightly than the others.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "RECTIFIERS", "SATURATING", "ACTIVATION_TYPES", "PASSTHROUGH_TYPES", "resolved_activation",
    "layer_kinds", "active_mask", "saturated_mask", "unit_activity", "dead_summary", "class_tightness",
    "tightness_summary",
]

RECTIFIERS = ("relu", "leaky_relu", "elu", "gelu", "silu")
SATURATING = ("tanh", "sigmoid")

# torch module class name -> activation kind
ACTIVATION_TYPES = {
    "ReLU": "relu", "ReLU6": "relu", "LeakyReLU": "leaky_relu", "ELU": "elu", "GELU": "gelu", "SiLU": "silu",
    "Tanh": "tanh", "Sigmoid": "sigmoid",
}
# Layers that keep the "inactive" value of the activation before them (pooling, reshapes, identity).
PASSTHROUGH_TYPES = ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "MaxPool1d",
                     "AvgPool1d", "Flatten", "Unflatten", "Dropout", "Identity")

_ACT_NAME = re.compile(r"^(enc_|dec_)?act\d+$")   # how the model families name activation layers
_ROWS = 256                          # rows per chunk: bounds memory for wide conv layers


def resolved_activation(meta: Mapping[str, Any]) -> str:
    """The activation a model.json describes: ``model.activation``, or the arch default when null
    (tanh for LeNet, relu otherwise)."""
    model = meta.get("model") or {}
    act = model.get("activation")
    if act:
        return str(act)
    return "tanh" if (model.get("arch") or meta.get("arch")) == "lenet" else "relu"


def layer_kinds(layers: Sequence[Mapping[str, Any]], default: str | None = None) -> dict[str, str | None]:
    """Activation kind of each layer of ``layers`` (``[{name, type}, ...]`` in forward order, as in
    model.json): activation layers by their type; pooling / reshapes inherit the kind of the layer
    before them; everything else (conv, linear, batch norm, input) is None. ``default`` (the model's
    activation, :func:`resolved_activation`) is used for a layer named like an activation
    (``act3``, ``enc_act1``) whose module type is not in :data:`ACTIVATION_TYPES`."""
    kinds: dict[str, str | None] = {}
    previous: str | None = None
    for row in layers:
        kind_name = str(row.get("type", ""))
        if kind_name in ACTIVATION_TYPES:
            kind: str | None = ACTIVATION_TYPES[kind_name]
        elif kind_name in PASSTHROUGH_TYPES:
            kind = previous
        elif default and _ACT_NAME.match(str(row["name"])):
            kind = default                      # an activation module of a type not in the table
        else:
            kind = None
        kinds[str(row["name"])] = kind
        previous = kind
    return kinds


def _check_kind(kind: str) -> None:
    if kind not in RECTIFIERS + SATURATING:
        raise ValueError(f"unknown activation kind {kind!r}; expected one of {', '.join(RECTIFIERS + SATURATING)}")


def saturated_mask(values: np.ndarray, kind: str, saturation: float = 0.99) -> np.ndarray:
    """Elementwise: the value sits in the flat tail of a saturating activation (tanh, sigmoid).
    Rectifiers never saturate (all False)."""
    _check_kind(kind)
    v = np.asarray(values)
    if kind == "tanh":
        return np.abs(v) > saturation
    if kind == "sigmoid":
        return (v > saturation) | (v < 1.0 - saturation)
    return np.zeros(v.shape, dtype=bool)


def active_mask(values: np.ndarray, kind: str, *, eps: float = 1e-6, saturation: float = 0.99) -> np.ndarray:
    """Elementwise: the unit responds here (rectifiers: value > eps; tanh / sigmoid: not saturated)."""
    _check_kind(kind)
    if kind in SATURATING:
        return ~saturated_mask(values, kind, saturation)
    return np.asarray(values) > eps


def unit_activity(acts: np.ndarray, shape: Sequence[int], kind: str, *, eps: float = 1e-6,
                  saturation: float = 0.99) -> dict[str, np.ndarray | float]:
    """How often each unit of one layer is active.

    ``acts`` is (n, prod(shape)) as extract stores it (conv maps flattened C*H*W); ``shape`` the
    layer's output shape without batch: (C, H, W) for a conv layer (unit = channel), (D,) for a
    dense one (and for a flatten layer: each feature is a unit). Returns

    - ``activity`` (U,): fraction of the n inputs on which the unit is active (a channel: at any
      position); 0 means dead;
    - ``density`` (U,): fraction of all its values (inputs x positions) that are active (equal to
      ``activity`` for dense units; for channels it shows how sparse the map is);
    - ``saturated``: fraction of all the layer's values in saturation (NaN for rectifiers).

    Reads ``acts`` in row chunks (it may be a memory map)."""
    _check_kind(kind)
    shape = tuple(int(s) for s in shape)
    n, dim = acts.shape
    if int(np.prod(shape)) != dim:
        raise ValueError(f"activations have {dim} columns, shape {shape} needs {int(np.prod(shape))}")
    units = shape[0] if len(shape) > 1 else dim
    per_unit = dim // units                      # positions per unit (H*W for conv, 1 for dense)
    any_count = np.zeros(units, dtype=np.int64)
    value_count = np.zeros(units, dtype=np.int64)
    saturated_values = 0
    for start in range(0, n, _ROWS):
        block = np.asarray(acts[start:start + _ROWS], dtype=np.float32).reshape(-1, units, per_unit)
        active = active_mask(block, kind, eps=eps, saturation=saturation)      # (b, U, positions)
        any_count += active.any(axis=2).sum(axis=0)
        value_count += active.sum(axis=(0, 2))
        if kind in SATURATING:
            saturated_values += int(saturated_mask(block, kind, saturation).sum())
    saturated = saturated_values / max(n * dim, 1) if kind in SATURATING else float("nan")
    return {"activity": any_count / max(n, 1), "density": value_count / max(n * per_unit, 1),
            "saturated": float(saturated)}


def dead_summary(activity: np.ndarray, kind: str, saturated: float = float("nan"),
                 density: np.ndarray | None = None) -> dict[str, float]:
    """Per-layer numbers from :func:`unit_activity`: ``dead_fraction`` (units never active),
    ``n_dead``, ``n_units``, ``mean_activity`` (mean over units of the fraction of values where
    they are active: ``density`` if given, else ``activity``) and, for tanh / sigmoid,
    ``saturated_fraction`` (fraction of all values, units x positions x inputs, in saturation)."""
    activity = np.asarray(activity, dtype=np.float64)
    dens = activity if density is None else np.asarray(density, dtype=np.float64)
    dead = int((activity == 0).sum())
    out: dict[str, float] = {
        "dead_fraction": dead / max(len(activity), 1),
        "n_dead": dead,
        "n_units": int(len(activity)),
        "mean_activity": float(dens.mean()) if len(dens) else float("nan"),
    }
    if kind in SATURATING:
        out["saturated_fraction"] = float(saturated)
    return out


def class_tightness(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(K,) per class: mean distance of its points to its centroid / mean distance between two class
    centroids (all pairs of classes present). NaN for absent classes, and for every class when
    all centroids coincide (e.g. a layer of dead units). ``features`` (n, d) may be a memory map."""
    labels = np.asarray(labels)
    n, d = features.shape
    sums = np.zeros((n_classes, d))
    counts = np.bincount(labels, minlength=n_classes)[:n_classes].astype(np.float64)
    for start in range(0, n, _ROWS):
        block = np.asarray(features[start:start + _ROWS], dtype=np.float64)
        np.add.at(sums, labels[start:start + _ROWS], block)
    present = counts > 0
    centres = np.full((n_classes, d), np.nan)
    centres[present] = sums[present] / counts[present, None]
    within = np.zeros(n_classes)
    for start in range(0, n, _ROWS):
        block = np.asarray(features[start:start + _ROWS], dtype=np.float64)
        lab = labels[start:start + _ROWS]
        np.add.at(within, lab, np.linalg.norm(block - centres[lab], axis=1))
    within = np.where(present, within / np.maximum(counts, 1), np.nan)
    c = centres[present]
    if len(c) < 2:
        return np.full(n_classes, np.nan)
    iu = np.triu_indices(len(c), k=1)
    gaps = np.linalg.norm(c[:, None, :] - c[None, :, :], axis=-1)[iu]
    between = float(gaps.mean())
    if not np.isfinite(between) or between <= 1e-12 * max(1.0, float(np.abs(c).max())):
        return np.full(n_classes, np.nan)
    return within / between


def tightness_summary(tightness: np.ndarray, classes: Iterable[str]) -> dict[str, float]:
    """``{class name: tightness, ..., "mean": mean over classes present}`` for the metrics file."""
    t = np.asarray(tightness, dtype=np.float64)
    out = {str(name): float(v) for name, v in zip(classes, t)}
    out["mean"] = float(np.nanmean(t)) if np.isfinite(t).any() else float("nan")
    return out
