"""Record what the layers of a network compute, for any ``nn.Module``.

:func:`record_activations` runs images through a model once, in chunks, with a forward hook on
every chosen module, and writes each layer's flattened output into an (N, dim) array you hand it
(a NumPy array, or a memory map so that memory stays bounded by one chunk). The model is left
as found (``model.train(was_training)``, hooks removed), also when a forward pass raises::

    sinks = {name: np.zeros((len(images), dim), np.float32) for name, dim in dims.items()}
    logits = record_activations(model, images, normalize, ["input", "conv1", "fc1"], sinks)

Layers are named modules: a :class:`~pipeline.models.common.Network` lists its readable names
(``conv1``, ``act4``, ...) in ``named_layers()``; any other module is addressed by its
``named_modules()`` names (``layer1.0.conv2``), or by ``(name, module)`` pairs. ``input`` is
the normalised pixels. :func:`layer_names` is the discovery helper, :func:`choose_layers`
checks a wanted list against it.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from pipeline.artifacts import SAFE_NAME
from pipeline.errors import ConfigError, UserError
from pipeline.models.common import eval_mode
from pipeline.runtime import normalized_batches, progress
from pipeline.spatial import pool_rows

__all__ = ["INPUT", "record_activations", "named_layers", "layer_names", "choose_layers", "layer_modules",
           "penultimate_layer", "layer_shapes", "layer_rows"]

INPUT = "input"                      # pseudo-layer: the normalised pixels

Layer = Union[str, tuple[str, nn.Module]]


def named_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The hookable layers of ``model``, forward order: its ``named_layers()`` when it has them
    (our networks), else every named submodule (``named_modules()`` without the root)."""
    if callable(getattr(model, "named_layers", None)):
        return list(model.named_layers())
    return [(name, module) for name, module in model.named_modules() if name]


def layer_names(model: nn.Module) -> list[str]:
    """``input`` plus the names of :func:`named_layers`: what ``record_activations`` accepts."""
    return [INPUT, *(name for name, _ in named_layers(model))]


def penultimate_layer(model: nn.Module) -> str:
    """The layer before the output (e.g. ``act4`` of LeNet, ``latent`` for autoencoders)."""
    names = [n for n, _ in named_layers(model)]
    if getattr(model, "task", "classify") != "classify" and "latent" in names:
        return "latent"
    return names[-2] if len(names) >= 2 else names[-1]


def choose_layers(model: nn.Module, wanted: str | Sequence[str] | None, key: str = "extract.layers") -> list[str]:
    """The layer names ``extract.layers`` means, in the order they are recorded: ``auto`` / None and
    ``all`` are ``input`` plus :func:`pipeline.models.select_layers` (for our networks both are every
    named layer; for a model that is not ours the block-level outputs, or every leaf module); a list
    is checked against the model (names of auto and all, or module paths of a model that is not
    ours), put in forward order without repeats. An unknown name is a ConfigError listing the valid
    ones; ``key`` names the setting in the message."""
    from pipeline.models import select_layers

    if not callable(getattr(model, "named_layers", None)):        # a bare nn.Module: its named modules
        valid = layer_names(model)
        if wanted is None or isinstance(wanted, str):
            names = valid
        else:
            unknown = [w for w in wanted if w not in valid]
            if unknown:
                raise ConfigError(f"{key}: unknown layer '{unknown[0]}'; valid names: {', '.join(valid)} "
                                  f"(`python -m pipeline layers` lists them)")
            names = [w for w in valid if w in wanted]
    elif wanted is None or isinstance(wanted, str):
        names = [INPUT, *(n for n, _ in select_layers(model, wanted, key))]
    else:
        chosen = [n for n, _ in select_layers(model, [w for w in wanted if w != INPUT], key)]
        if hasattr(model, "forward_position"):          # not ours: when each module's output is ready
            order = sorted(dict.fromkeys(chosen), key=model.forward_position)
        else:
            order = [n for n, _ in model.named_layers() if n in chosen]
        names = ([INPUT] if INPUT in wanted else []) + order
    for n in names:
        if not SAFE_NAME.match(n):
            raise UserError(f"layer name {n!r} cannot be a file name (letters, digits, _ . -); pick layers with "
                            f"plain names in {key}, or pass (name, module) pairs")
    return names


def layer_modules(model: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module | None]]:
    """(name, module) for each name :func:`choose_layers` returned (``input`` has no module)."""
    if not callable(getattr(model, "named_layers", None)):
        return _resolve(model, names)
    from pipeline.models import select_layers

    modules = dict(select_layers(model, [n for n in names if n != INPUT]))
    return [(name, None if name == INPUT else modules[name]) for name in names]


def layer_shapes(model: nn.Module, layers: Sequence[str], input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of each of ``layers`` for one input of ``input_shape`` (C, H, W)."""
    from pipeline.models import describe_layers

    shapes = {row["name"]: tuple(row["shape"]) for row in describe_layers(model, input_shape)}
    shapes[INPUT] = tuple(input_shape)
    return {name: shapes[name] for name in layers}


def layer_rows(model: nn.Module, pairs: Sequence[tuple[str, nn.Module | None]], input_shape: tuple[int, ...],
               spatial: str = "flatten", pool_above: int = 16384) -> dict[str, dict]:
    """layers.json rows of (name, module) pairs: ``name``, ``type``, the stored ``shape`` and ``dim``,
    ``spatial`` (flatten / mean / max, :func:`pipeline.spatial.pooling_for` of ``spatial`` and
    ``pool_above``), ``map_shape`` when pooled, ``ends_with`` for blocks of models that are not ours."""
    from pipeline.models import describe_layers
    from pipeline.spatial import pooling_for, stored_shape

    rows = {INPUT: {"name": INPUT, "type": "input", "shape": list(input_shape)}}
    for row in describe_layers(model, tuple(input_shape), [(n, m) for n, m in pairs if m is not None]):
        rows[row["name"]] = {k: row[k] for k in ("name", "type", "shape", "ends_with") if k in row}
    out = {}
    for name, _ in pairs:
        row = dict(rows[name])
        shape = tuple(row["shape"])
        how = "flatten" if name == INPUT else pooling_for(shape, spatial, pool_above)
        kept = stored_shape(shape, how)
        row.update({"shape": list(kept), "dim": int(np.prod(kept)), "spatial": how})
        if how != "flatten":
            row["map_shape"] = list(shape)
        out[name] = row
    return out


def _resolve(model: nn.Module, layers: Sequence[Layer]) -> list[tuple[str, nn.Module | None]]:
    """(name, module) for each wanted layer; ``input`` has no module."""
    modules: dict[str, nn.Module] | None = None
    out: list[tuple[str, nn.Module | None]] = []
    for layer in layers:
        if isinstance(layer, tuple):
            out.append((str(layer[0]), layer[1]))
            continue
        if layer == INPUT:
            out.append((INPUT, None))
            continue
        if modules is None:
            modules = dict(named_layers(model))
        if layer not in modules:
            raise ValueError(f"unknown layer {layer!r}; layer_names(model) lists the valid names")
        out.append((layer, modules[layer]))
    return out


@torch.inference_mode()
def record_activations(model: nn.Module, images: torch.Tensor | np.ndarray,
                       normalize: Callable[[torch.Tensor], torch.Tensor], layers: Sequence[Layer],
                       sinks: dict[str, np.ndarray], *, batch_size: int = 256, desc: str = "extract",
                       keep_output: bool | None = None,
                       pooling: Mapping[str, str] | None = None) -> torch.Tensor | None:
    """Run ``images`` (N, C, H, W uint8) through ``model`` once, in eval mode and chunks of
    ``batch_size``, writing each layer's output into ``sinks[name]`` (an (N, dim) array or memmap):
    flattened, or pooled per channel where ``pooling[name]`` is ``mean`` / ``max``
    (:func:`pipeline.spatial.pool_rows`, extract.spatial). ``layers``: names (see
    :func:`layer_names`; ``input`` is the normalised pixels) or ``(name, module)`` pairs. A module
    returning a tuple contributes its first element. Each output is copied into its sink inside
    the hook, so an in-place operation later in the forward pass (``ReLU(inplace=True)`` after a
    conv, as in torchvision models) cannot change what is recorded.

    Returns the model's outputs (N, ...) on the CPU when ``keep_output`` (default: for classifiers,
    i.e. a model whose ``task`` is "classify" or that has none -- the logits), else None.
    The model is left in the mode it was found in, without hooks.
    """
    resolved = _resolve(model, layers)
    if keep_output is None:
        keep_output = getattr(model, "task", "classify") == "classify"
    pooling = pooling or {}
    position = [0]                                        # first row of the current batch
    outputs: list[torch.Tensor] = []
    with ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        for name, module in resolved:
            if module is None:
                continue

            def hook(_m, _inp, out, name=name, how=pooling.get(name, "flatten")):
                out = out[0] if isinstance(out, (tuple, list)) else out
                rows = pool_rows(out.detach(), how).cpu().numpy()
                sinks[name][position[0]:position[0] + len(rows)] = rows
            stack.callback(module.register_forward_hook(hook).remove)
        bar = progress(normalized_batches(images, normalize, batch_size), total=-(-len(images) // batch_size),
                       desc=desc, unit="batch", leave=False)
        for start, x in bar:                                                # x: (B, C, H, W) float32
            position[0] = start
            out = model(x)
            stop = start + len(x)
            for name, module in resolved:
                if module is None:
                    sinks[name][start:stop] = x.reshape(len(x), -1).float().cpu().numpy()
            if keep_output:
                outputs.append(out.float().cpu())
    return torch.cat(outputs) if outputs else None
