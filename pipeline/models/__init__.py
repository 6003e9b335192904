"""Model families and their registry.

``build_model(cfg, input_shape, n_classes)`` returns a :class:`~pipeline.models.common.Network`
whose ``named_layers()`` lists the readable layer names (``conv1``, ``pool1``, ``fc1``, ...,
``logits``) that extract hooks. ``describe_layers`` is the discovery helper behind
``python -m pipeline layers``. ``save_model`` / ``load_model`` store weights as safetensors
and the architecture as JSON; nothing is pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from pipeline import artifacts
from pipeline.config import TORCHVISION_PREFIX, ModelConfig
from pipeline.errors import ConfigError, UserError
from pipeline.model_meta import CONFIG_FILE, load_meta
from pipeline.models.common import Classifier, Network, eval_mode

__all__ = ["build_model", "ignored_knobs", "describe_layers", "select_layers", "model_meta", "save_model", "load_model",
           "load_meta", "load_weights_into",
           "check_weights_config", "Network", "Classifier", "WEIGHTS_FILE", "CONFIG_FILE"]

WEIGHTS_FILE = "model.safetensors"


def _builders() -> dict[str, Callable[..., Network]]:
    from pipeline.models.cnn import build_cnn
    from pipeline.models.lenet import build_lenet
    from pipeline.models.mlp import build_linear, build_mlp

    builders: dict[str, Callable[..., Network]] = {
        "lenet": build_lenet, "cnn": build_cnn, "mlp": build_mlp, "linear": build_linear,
    }
    from pipeline.models.autoencoders import build_ae, build_conv_ae, build_vae

    builders.update({"ae": build_ae, "conv_ae": build_conv_ae, "vae": build_vae})
    return builders


def build_model(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> Network:
    """Build ``cfg.arch`` for images of ``input_shape`` (C, H, W) and ``n_classes`` classes:
    one of ours, ``torchvision:<name>`` or ``custom`` (``cfg.factory``), see :mod:`pipeline.models.foreign`."""
    if cfg.arch.startswith(TORCHVISION_PREFIX) or cfg.arch == "custom":
        from pipeline.models.foreign import build_custom, build_torchvision

        build = build_custom if cfg.arch == "custom" else build_torchvision
        return build(cfg, tuple(int(s) for s in input_shape), int(n_classes))
    builders = _builders()
    if cfg.arch not in builders:
        raise ConfigError(f"model.arch = {cfg.arch} is not available in this build; "
                        f"choose one of {', '.join(builders)}")
    return builders[cfg.arch](cfg, tuple(int(s) for s in input_shape), int(n_classes))


# model.* keys that are not architecture knobs (where the weights or the factory come from)
_NOT_KNOBS = {"arch", "weights", "factory"}


def ignored_knobs(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> list[str]:
    """``model.<key> = <value>`` for every knob set away from its default that building ``cfg.arch``
    never reads (``model.filters`` for an MLP, ``model.pool`` for LeNet): found by building the
    model once with a config that records what the builder reads, so the list cannot go stale."""
    read: set[str] = set()

    class _Recording:
        def __getattr__(self, name: str) -> Any:
            read.add(name)
            return getattr(cfg, name)

    with torch.random.fork_rng(devices=[]):                  # the real build's initial weights stay as they were
        build_model(_Recording(), input_shape, n_classes)    # type: ignore[arg-type]
    if "model_dump" in read:                                 # a builder that reads everything at once
        return []
    defaults = type(cfg)()
    return [f"model.{key} = {getattr(cfg, key)}" for key in type(cfg).model_fields
            if key not in _NOT_KNOBS and key not in read and getattr(cfg, key) != getattr(defaults, key)]


def select_layers(model: Network, which: str | Sequence[str] | None = "auto",
                  key: str = "extract.layers") -> list[tuple[str, torch.nn.Module]]:
    """The (name, module) pairs ``extract.layers`` means, forward order, without ``input``.

    ``auto`` (or None): ``model.named_layers()`` (ours: every layer; others: the block-level outputs).
    ``all``: every leaf module (ours: the same as auto). A list: those names, in the order given,
    each a name of ``auto`` or ``all`` or any module path of a model that is not ours (``layer1.0``);
    an unknown name is a ConfigError listing the valid ones."""
    auto = list(model.named_layers())
    if which in (None, "auto"):
        return auto
    leaves = list(model.all_layers()) if hasattr(model, "all_layers") else auto
    if which == "all":
        return leaves
    known = dict(auto) | dict(leaves)
    net = getattr(model, "net", None)
    out = []
    for name in which:
        if name in known:
            out.append((name, known[name]))
            continue
        try:
            module = net.get_submodule(name) if net is not None and name else None
        except AttributeError:
            module = None
        if module is None:
            from pipeline.errors import ConfigError

            names = ["input", *dict.fromkeys([*dict(auto), *dict(leaves)])]
            shown = ", ".join(names[:40]) + (f", ... ({len(names) - 40} more)" if len(names) > 40 else "")
            raise ConfigError(f"{key}: unknown layer '{name}'; valid names: {shown} "
                              f"(`python -m pipeline layers` lists them)")
        out.append((name, module))
    return out


@torch.no_grad()
def describe_layers(model: Network, input_shape: tuple[int, int, int],
                    layers: Sequence[tuple[str, torch.nn.Module]] | None = None) -> list[dict[str, Any]]:
    """Name, type, output shape (without batch) and parameter count of every hookable layer
    (``layers``: these (name, module) pairs instead of ``model.named_layers()``)."""
    layers = list(model.named_layers()) if layers is None else list(layers)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in layers:
        def hook(_m, _inp, out, name=name):
            out = out[0] if isinstance(out, (tuple, list)) else out
            shapes[name] = tuple(out.shape[1:])
        handles.append(module.register_forward_hook(hook))
    device = next(model.parameters(), torch.empty(0)).device    # the model may sit on cuda / mps
    try:
        with eval_mode(model):
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
    about = getattr(model, "layer_about", None)     # models that are not ours: block type, params, ends_with
    return [
        {"name": name, **(about(name) if about else {"type": type(module).__name__}), "shape": list(shapes.get(name, ())),
         **({} if about else {"params": sum(p.numel() for p in module.parameters(recurse=False))})}
        for name, module in layers
    ]


def model_meta(model: Network, model_config: dict[str, Any], data_info: dict[str, Any]) -> dict[str, Any]:
    """The ``model.json`` record of a built ``model``: its ``model.*`` section ``model_config`` (a
    dict), the dataset's ``info.json`` fields it depends on, and the layers (ARTIFACTS.md)."""
    shape = tuple(data_info["shape"])
    return {
        "arch": model_config["arch"],
        "task": model.task,
        "model": dict(model_config),
        "input_shape": list(shape),
        "n_classes": len(data_info["classes"]),
        "classes": list(data_info["classes"]),
        "dataset": data_info.get("dataset"),
        "mean": data_info["mean"],
        "std": data_info["std"],
        "output_layer": model.output_layer,
        "layers": describe_layers(model, shape),
        "params": sum(p.numel() for p in model.parameters()),
    }


def save_model(directory: str | Path, model: Network, meta: dict[str, Any], *,
               filename: str = WEIGHTS_FILE, write_config: bool = True) -> None:
    """Weights as safetensors; ``meta`` (model config, input shape, classes, ...) as JSON."""
    directory = Path(directory)
    artifacts.save_safetensors(directory / filename, model.state_dict())
    if write_config:
        artifacts.save_json(directory / CONFIG_FILE, meta)


def load_weights_into(model: Network, weights_path: str | Path) -> Network:
    """Load a safetensors file into ``model``; mismatches give a one-line error naming the first."""
    state = artifacts.load_safetensors(weights_path)
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise UserError(f"{weights_path}: tensor '{key}' {tuple(tensor.shape)} is missing; the weights "
                            f"were saved from another architecture (check model.* in params.yaml)")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(f"{weights_path}: tensor '{key}' has shape {tuple(state[key].shape)}, the model "
                            f"expects {tuple(tensor.shape)}; make model.* match the weights")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise UserError(f"{weights_path}: unexpected tensor '{extra[0]}' (and {len(extra) - 1} more); "
                        f"the weights belong to another architecture (check model.* in params.yaml)")
    model.load_state_dict(state)
    return model


def _yaml(value: Any) -> str:
    """A value as it would be written in params.yaml (null, true, [120, 84], relu)."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("...").strip()


def check_weights_config(weights_path: str | Path, cfg: ModelConfig) -> Path | None:
    """If a JSON file with the weights' stem sits beside them (``my.safetensors`` -> ``my.json``, the
    model.json format of the train stage), its ``model`` section must agree with ``cfg``
    (params.yaml) on every architecture key (``weights`` itself is ignored). The architecture always
    comes from params.yaml; a disagreement is a one-line error naming the first differing key.
    Returns the JSON path it checked, or None when there is none."""
    sibling = Path(weights_path).with_suffix(".json")
    if not sibling.is_file():
        return None
    saved = artifacts.load_json(sibling, "model config beside the weights")
    section = saved.get("model") if isinstance(saved, dict) else None
    if not isinstance(section, dict):
        raise UserError(f"{sibling}: no `model` section (expected the model.json format of the train stage); "
                        f"fix or remove that file")
    ours = cfg.model_dump()
    for key, value in ours.items():
        if key == "weights" or key not in section:
            continue
        theirs = section[key]
        if isinstance(value, float) and isinstance(theirs, (int, float)) and float(theirs) == value:
            continue
        if theirs != value:
            raise UserError(f"{sibling} (beside model.weights) says model.{key} = {_yaml(theirs)} but params.yaml "
                            f"has {_yaml(value)}; set model.{key}: {_yaml(theirs)} in params.yaml "
                            f"(or remove {sibling.name})")
    return sibling


def load_model(directory: str | Path, weights: str | Path | None = None) -> tuple[Network, dict[str, Any]]:
    """Rebuild the model described by ``model.json`` in ``directory`` and load its weights."""
    directory = Path(directory)
    meta = load_meta(directory, full=False)
    cfg = ModelConfig.model_validate(meta["model"])
    input_shape = tuple(meta["input_shape"])
    n_classes = int(meta["n_classes"])
    model = build_model(cfg, input_shape, n_classes)
    names = [name for name, _ in model.named_layers()]
    if "layers" in meta and [row["name"] for row in meta["layers"]] != names:
        raise UserError(f"{directory / CONFIG_FILE}: malformed model config (`layers` do not list the layers of the "
                        f"model its `model` section describes: {', '.join(names)}); rerun `dvc repro train`")
    load_weights_into(model, weights or directory / WEIGHTS_FILE)
    model.eval()
    return model, meta


