"""Models that are not ours: any image classifier of ``torchvision.models`` and your own factory.

``model.arch: torchvision:<name>`` builds ``torchvision.models.get_model(name, weights=None,
num_classes=K)`` (nothing is downloaded), gives its first convolution the data's input channels and,
with ``model.stem: small`` (the default), a stem for 28-32 px images (:func:`small_stem`).
``model.arch: custom`` calls ``model.factory`` (``"package.module:function"``, imported with the
repository root first on ``sys.path``; keep the file under ``models/``, a dvc.yaml dependency of
the stages that rebuild the model) with ``(input_shape, n_classes)``.

Both are wrapped in :class:`ForeignClassifier`, a :class:`~pipeline.models.common.Network` whose
state dict is the wrapped module's own (torchvision's key names, so converted checkpoints load
as they are) and whose ``named_layers()`` are the block-level outputs (:func:`auto_layers`).

**Layers are found with forward hooks on named modules, not with torch.fx.** torchvision's
``create_feature_extractor`` traces the model symbolically, which fails on a user's module with
data-dependent control flow, and it rebuilds the graph, so the recorded model would no longer be
the trained one. Hooks work on any ``nn.Module`` in eager mode and record every chosen layer in the
one forward pass that also gives the predictions. What they cannot see (a functional ``F.relu`` or a
residual ``+``) is inside a block whose output they do see. A module that runs more than once per
forward pass (ResNet's block-internal ``relu``) has no single output and is left out of ``all``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config import TORCHVISION_PREFIX, ModelConfig
from pipeline.errors import ConfigError, UserError
from pipeline.models.common import Network, eval_mode

__all__ = ["ForeignClassifier", "build_torchvision", "build_custom", "torchvision_names", "small_stem",
           "auto_layers", "leaf_layers", "STEM"]

STEM = "stem"                         # the block-level name of a ResNet's conv-bn-relu[-maxpool] output

# Modules that are the identity at inference or only reshape: never a layer of their own in `auto`.
_SKIP = (nn.Dropout, nn.Dropout2d, nn.Identity)
_PASSTHROUGH = ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Flatten", "Dropout",
                "Dropout2d", "Identity", "StochasticDepth")


def torchvision_names() -> list[str]:
    """Every image classifier ``torchvision.models`` builds (detection, video, ... live elsewhere)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _conv_like(conv: nn.Conv2d, in_channels: int | None = None, kernel: int | None = None,
               stride: int | None = None, padding: int | None = None) -> nn.Conv2d:
    """A fresh Conv2d like ``conv`` with some settings changed."""
    k = conv.kernel_size if kernel is None else (kernel, kernel)
    return nn.Conv2d(conv.in_channels if in_channels is None else in_channels, conv.out_channels, k,
                     stride=conv.stride if stride is None else (stride, stride),
                     padding=conv.padding if padding is None else (padding, padding),
                     dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _first_conv(net: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), None)


def small_stem(net: nn.Module, name: str) -> None:
    """Shrink the downsampling at the start of ``net`` for 28-32 px inputs, in place.

    ResNet / ResNeXt / Wide ResNet: a 3x3 stride-1 first conv and no max-pool (the usual CIFAR stem).
    DenseNet, ShuffleNet: the same (3x3 stride 1, the max-pool after it removed). MobileNet v2/v3,
    EfficientNet, MNASNet, RegNet: the first conv (already 3x3) gets stride 1. ConvNeXt: a 2x2
    stride-2 patchify stem instead of 4x4 stride 4. VGG: no strided stem to shrink; the last
    max-pool goes (five halvings leave nothing of 28 px), and the classifier reads the 512 channels
    globally pooled instead of a 7x7 grid. Other families (AlexNet, SqueezeNet, GoogLeNet,
    Inception, ViT, Swin, MaxViT) have no small stem here: a ConfigError naming ``model.stem``.
    """
    import torchvision.models as tvm

    first = _first_conv(net)
    if isinstance(net, tvm.ResNet):
        net.conv1 = _conv_like(net.conv1, kernel=3, stride=1, padding=1)
        net.maxpool = nn.Identity()
    elif isinstance(net, tvm.DenseNet):
        net.features.conv0 = _conv_like(net.features.conv0, kernel=3, stride=1, padding=1)
        net.features.pool0 = nn.Identity()
    elif isinstance(net, tvm.ShuffleNetV2):
        net.conv1[0] = _conv_like(net.conv1[0], stride=1)
        net.maxpool = nn.Identity()
    elif isinstance(net, (tvm.MobileNetV2, tvm.MobileNetV3, tvm.EfficientNet, tvm.MNASNet, tvm.RegNet)):
        path, conv = first
        _set(net, path, _conv_like(conv, stride=1))
    elif isinstance(net, tvm.ConvNeXt):
        path, conv = first
        _set(net, path, _conv_like(conv, kernel=2, stride=2, padding=0))
    elif isinstance(net, tvm.VGG):
        pools = [i for i, m in enumerate(net.features) if isinstance(m, nn.MaxPool2d)]
        net.features[pools[-1]] = nn.Identity()
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        fc = net.classifier[0]
        net.classifier[0] = nn.Linear(fc.in_features // 49, fc.out_features)
    else:
        raise ConfigError(f"model.stem = small: torchvision:{name} ({type(net).__name__}) has no small-image stem "
                          f"here; set model.stem: imagenet (its inputs must then be large enough) or use a ResNet, "
                          f"MobileNet, EfficientNet, ConvNeXt, DenseNet, RegNet, ShuffleNet, MNASNet or VGG")


def build_torchvision(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> "ForeignClassifier":
    """``torchvision:<name>`` adapted to ``input_shape`` (C, H, W) and ``n_classes``, randomly initialised."""
    import torchvision.models as tvm

    name = cfg.arch[len(TORCHVISION_PREFIX):]
    names = torchvision_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "`python -c \"import torchvision.models as m; " \
                                                            "print(m.list_models(module=m))\"` lists them"
        raise ConfigError(f"model.arch = torchvision:{name}: not an image classifier of torchvision "
                          f"{_tv_version()}; {hint}")
    kwargs: dict[str, Any] = {"weights": None, "num_classes": int(n_classes)}
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False               # one output, logits, in training too
        kwargs["init_weights"] = True
    net = tvm.get_model(name, **kwargs)
    if cfg.stem == "small":
        small_stem(net, name)
    first = _first_conv(net)
    channels = int(input_shape[0])
    if first is not None and first[1].in_channels != channels:
        _set(net, first[0], _conv_like(first[1], in_channels=channels))
    what = f"torchvision:{name} with model.stem = {cfg.stem}"
    return ForeignClassifier(net, input_shape, n_classes, what=what,
                             fix="set model.stem: small" if cfg.stem == "imagenet" else
                             "use another model.arch (or model.stem: imagenet with larger images)")


def _tv_version() -> str:
    import torchvision

    return torchvision.__version__.split("+")[0]


def _forget_stale(module: str, root: Path) -> None:
    """Drop cached imports of ``module`` and its parents that do not come from ``root`` (a previous
    workspace in the same process), so the factory is imported from this repository."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        cached = sys.modules.get(name)
        if cached is None:
            continue
        files = [getattr(cached, "__file__", None) or "", *list(getattr(cached, "__path__", []) or [])]
        if not any(f and Path(f).resolve().is_relative_to(root) for f in files):
            del sys.modules[name]


def build_custom(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> "ForeignClassifier":
    """Call ``model.factory`` with ``(input_shape, n_classes)``; every way it can fail is one line."""
    spec = str(cfg.factory)
    module_name, _, func_name = spec.partition(":")
    root = Path.cwd().resolve()
    if str(root) not in sys.path[:1]:
        sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    _forget_stale(module_name, root)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's import is reported as one line
        where = Path(*module_name.split("."))
        raise ConfigError(f"model.factory = {spec}: cannot import {module_name} ({_one_line(exc)}); put the file "
                          f"at {where}.py (or {where}/__init__.py) under the repository root, e.g. in models/") from None
    func = getattr(module, func_name, None)
    if func is None or not callable(func):
        found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
        close = difflib.get_close_matches(func_name, found, n=1)
        hint = f"did you mean {close[0]}? " if close else (f"it defines {', '.join(found[:5])}; " if found else "")
        what = "is not a function" if func is not None else "is missing"
        raise ConfigError(f"model.factory = {spec}: `{func_name}` {what} in {_file_of(module)}; {hint}"
                          f"define `def {func_name}(input_shape, n_classes)` there or fix the name")
    shape = tuple(int(s) for s in input_shape)
    call = f"{func_name}({shape}, {int(n_classes)})"
    try:
        net = func(shape, int(n_classes))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"model.factory = {spec}: {call} raised {_one_line(exc)}; fix the function in "
                        f"{_file_of(module)}") from None
    if not isinstance(net, nn.Module):
        raise UserError(f"model.factory = {spec}: {call} returned a {type(net).__name__}, not a torch.nn.Module; "
                        f"return the network (an nn.Module that maps (batch, {shape[0]}, {shape[1]}, {shape[2]}) "
                        f"images to (batch, {n_classes}) logits)")
    if _file_of(module) and not Path(_file_of(module)).resolve().is_relative_to(root / "models"):
        from pipeline.runtime import log

        log(f"note: {_file_of(module)} is not under models/, the folder dvc.yaml lists as a dependency: "
            f"DVC will not rerun train when it changes; keep model factories in models/")
    return ForeignClassifier(net, shape, n_classes, what=f"model.factory = {spec}: the network from {call}",
                             fix=f"fix the function in {_file_of(module)}", shape_errors_are_config=False)


def _file_of(module: Any) -> str:
    file = getattr(module, "__file__", None)
    if not file:
        return module.__name__
    try:
        return os.path.relpath(file)
    except ValueError:  # pragma: no cover - another drive on Windows
        return file


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _typename(module: nn.Module) -> str:
    return type(module).__name__


class ForeignClassifier(Network):
    """A classifier that is not ours, with block-level layer names for extract (see the module doc).

    ``state_dict`` / ``load_state_dict`` are the wrapped module's, so weights files hold its own key
    names (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...).
    """

    task = "classify"

    def __init__(self, net: nn.Module, input_shape: tuple[int, int, int], n_classes: int, *, what: str, fix: str,
                 shape_errors_are_config: bool = True):
        super().__init__()
        self.net = net
        self.input_shape = tuple(int(s) for s in input_shape)
        trace = _probe(net, self.input_shape, n_classes, what=what, fix=fix, config=shape_errors_are_config)
        self._calls: dict[str, int] = trace["calls"]
        self._events: list[str] = trace["events"]      # leaf module paths, one per call, execution order
        self._auto: list[tuple[str, str]] = auto_layers(net, self._calls)
        self.output_layer = self._auto[-1][0] if self._auto else "output"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def named_layers(self) -> list[tuple[str, nn.Module]]:
        """The block-level layers (``extract.layers: auto``), forward order."""
        return [(name, self.net.get_submodule(path)) for name, path in self._auto]

    def module_path(self, name: str) -> str:
        """The module path inside the wrapped network of a layer name (``stem`` -> ``maxpool``)."""
        return dict(self._auto).get(name, name)

    def all_layers(self) -> list[tuple[str, nn.Module]]:
        """Every leaf module that runs exactly once per forward pass (``extract.layers: all``), forward order."""
        return [(path, self.net.get_submodule(path)) for path in self._events
                if self._calls.get(path) == 1 and not isinstance(self.net.get_submodule(path), _SKIP)]

    def forward_position(self, name: str) -> int:
        """When the layer's output is ready in the forward pass (its last leaf call), to sort layers."""
        path = self.module_path(name)
        inside = [i for i, p in enumerate(self._events) if p == path or p.startswith(path + ".")]
        return max(inside) if inside else len(self._events)

    def layer_about(self, name: str) -> dict[str, Any]:
        """``type`` (the module's class, ``stem`` for a ResNet stem), ``params`` (its parameters, every
        module inside included; a stem's are those of its conv and norm) and ``ends_with``."""
        path = self.module_path(name)
        if name == STEM:
            stem_leaves = self._events[:max(i for i, p in enumerate(self._events) if p == path) + 1]
            params = sum(p.numel() for leaf in dict.fromkeys(stem_leaves)
                         for p in self.net.get_submodule(leaf).parameters())
            return {"type": STEM, "params": params, "ends_with": self.ends_with(name)}
        module = self.net.get_submodule(path)
        return {"type": _typename(module), "params": sum(p.numel() for p in module.parameters()),
                "ends_with": self.ends_with(name)}

    def ends_with(self, name: str) -> str:
        """Type of the last module that is not pooling / reshaping in the computation up to this layer's
        output: what decides whether it has dead ReLU units (``ReLU`` for a ResNet block)."""
        path = self.module_path(name)
        own = _typename(self.net.get_submodule(path))
        if name != STEM and own in _PASSTHROUGH:
            return own                                  # pooling keeps the kind of what came before it
        order = self._events
        inside = [i for i, p in enumerate(order) if p == path or p.startswith(path + ".")]
        if not inside:
            return _typename(self.net.get_submodule(path))
        for p in reversed(order[:max(inside) + 1]):
            t = _typename(self.net.get_submodule(p))
            if t not in _PASSTHROUGH:
                return t
        return _typename(self.net.get_submodule(path))

    # the weights are the wrapped module's own
    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.net.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        return self.net.load_state_dict(state_dict, strict=strict, assign=assign)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, *, noise: float = 0.0, noise_kind: str = "masking",
                   kl_weight: float = 1.0, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        return {"loss": loss, "accuracy": (logits.argmax(dim=1) == y).double().mean()}


@torch.no_grad()
def _probe(net: nn.Module, input_shape: tuple[int, ...], n_classes: int, *, what: str, fix: str,
           config: bool) -> dict[str, Any]:
    """One forward pass of two zero images in eval mode: checks the output is (2, n_classes) logits and
    records how often each leaf module runs and in which order."""
    calls: dict[str, int] = {}
    order: list[str] = []
    handles = []
    leaves = [(n, m) for n, m in net.named_modules() if n and not any(True for _ in m.children())]
    for name, module in leaves:
        def hook(_m: nn.Module, _i: Any, _o: Any, name: str = name) -> None:
            order.append(name)                       # every call, in execution order
            calls[name] = calls.get(name, 0) + 1
        handles.append(module.register_forward_hook(hook))
    error = ConfigError if config else UserError
    shape = "x".join(str(s) for s in input_shape)
    try:
        device = next(net.parameters(), torch.empty(0)).device
        with eval_mode(net):
            out = net(torch.zeros((2, *input_shape), device=device))
    except Exception as exc:  # noqa: BLE001 - the model does not fit these inputs
        raise error(f"{what} does not run on {shape} images ({_one_line(exc)}); {fix}") from None
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, int(n_classes)):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise error(f"{what} returns {got} for a batch of 2 {shape} images; a classifier must return "
                    f"(batch, n_classes) = (2, {n_classes}) logits; {fix}")
    return {"calls": calls, "events": order}


def _ran_once(calls: dict[str, int], path: str) -> bool:
    """Whether the module at ``path`` has one output per forward pass: a leaf that ran exactly once, or
    a container any of whose leaves ran (its output is what its forward returns)."""
    if path in calls:
        return calls[path] == 1
    return any(p.startswith(path + ".") for p in calls)


def auto_layers(net: nn.Module, calls: dict[str, int]) -> list[tuple[str, str]]:
    """Block-level layers as (name, module path), forward order.

    ResNet family: ``stem`` (the output of conv-bn-relu[-maxpool]), ``layer1`` .. ``layer4``,
    ``avgpool``, ``fc``. VGG: the max-pool that ends each conv block, ``avgpool`` and the classifier's
    layers. Anything else (MobileNet, EfficientNet, ConvNeXt, DenseNet, RegNet, your own module): the
    top-level children, with a top-level ``nn.Sequential`` / ``nn.ModuleList`` opened one level (the
    stages of ``features``, the layers of ``classifier``) unless the model itself is an
    ``nn.Sequential`` (then its children are the blocks); dropout and identity layers, modules that
    never ran and leaves that ran more than once are left out.
    """
    import torchvision.models as tvm

    if isinstance(net, tvm.ResNet):
        names = [(STEM, "maxpool"), *[(f"layer{i}", f"layer{i}") for i in range(1, 5)], ("avgpool", "avgpool"),
                 ("fc", "fc")]
        return [(n, p) for n, p in names if _ran_once(calls, p)]
    out: list[tuple[str, str]] = []
    for child_name, child in net.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and not isinstance(net, nn.Sequential):
            items = [(f"{child_name}.{n}", m) for n, m in child.named_children()]
            if isinstance(net, tvm.VGG) and child_name == "features":
                items = [(p, m) for p, m in items if isinstance(m, nn.MaxPool2d)]
        else:
            items = [(child_name, child)]
        for path, module in items:
            if isinstance(module, _SKIP) or not _ran_once(calls, path):
                continue
            out.append((path, path))
    return out


def leaf_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``extract.layers: all`` for any model: ForeignClassifier's leaves; our own models' named layers."""
    if isinstance(model, ForeignClassifier):
        return model.all_layers()
    return list(model.named_layers())  # type: ignore[operator]
