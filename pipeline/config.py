"""params.yaml, validated: one pydantic model per section.

Every stage calls :func:`load_params` once and reads the sections it declares in dvc.yaml.
Unknown keys are refused, ranges and choices are checked, and any problem becomes one
:class:`~pipeline.errors.ConfigError` line that names the key, the value and what is allowed::

    params.yaml: model.kernel_size = -3: must be greater than or equal to 1

Sections missing from the file take their defaults, so a minimal params.yaml is ``{}``; a missing
params.yaml is an error.
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline import paths
from pipeline.errors import ConfigError

__all__ = [
    "DataConfig", "ModelConfig", "TrainConfig", "ExtractConfig", "ReduceConfig", "PCAConfig",
    "TSNEConfig", "UMAPConfig", "ProbeConfig", "RenderConfig", "ProjectorConfig", "ExportConfig",
    "DiagnoseConfig", "ExploreConfig", "Params", "load_params", "parse_params", "DATASETS", "ARCHS", "CLASSIFIER_ARCHS",
    "AUTOENCODER_ARCHS", "METHODS", "FIGURE_FAMILIES",
]

DATASETS = ("mnist-5k", "digits", "mnist", "fashion-mnist", "kmnist", "cifar10")
CLASSIFIER_ARCHS = ("lenet", "cnn", "mlp", "linear")
AUTOENCODER_ARCHS = ("ae", "conv_ae", "vae")
ARCHS = CLASSIFIER_ARCHS + AUTOENCODER_ARCHS
METHODS = ("pca", "tsne", "umap")
METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}    # display names (titles, axes)
# render.figures: the figure families render can draw, one planner each (pipeline/stages/render.py)
FIGURE_FAMILIES = ("maps", "weights", "feature_maps", "classifier", "evolution", "outliers", "class_distances",
                   "dataset", "autoencoder", "redundancy", "filters_evolution", "confident_unsure", "thumbnails")


def _refuse_empty(value: Any, fix: str) -> Any:
    """The rule of every list field: ``[]`` is an error whose message ends with ``fix`` (leave the
    field out, or what to list); anything else goes on to the field's own checks."""
    if isinstance(value, list) and len(value) == 0:
        raise ValueError(f"empty list; {fix}")
    return value


def _numeric(annotation: Any) -> bool:
    """Whether a field holds numbers: int or float, optional or in a list (``Optional[list[int]]``)."""
    if annotation in (int, float):
        return True
    return any(_numeric(arg) for arg in typing.get_args(annotation))


def _holds_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value))


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment too, and
    true/false is never read as a number (pydantic would take ``epochs: yes`` as 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name)
        if field is not None and _holds_bool(value) and _numeric(field.annotation):
            raise ValueError("true/false is not a number; give a number" +
                             (" (or a list of numbers)" if isinstance(value, list) else ""))
        return value


class DataConfig(_Section):
    dataset: Literal["mnist-5k", "digits", "mnist", "fashion-mnist", "kmnist", "cifar10"] = "mnist-5k"
    root: str = str(paths.RAW)            # torchvision datasets: folder of raw files (their layout)
    download: bool = True                 # torchvision datasets: try to download missing files
    n_train: Optional[int] = Field(None, ge=10)   # cap on training images (stratified, seeded)
    n_test: Optional[int] = Field(1000, ge=10)    # test images: split size (embedded) or cap
    seed: int = Field(0, ge=0)


TORCHVISION_PREFIX = "torchvision:"
_FACTORY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


class ModelConfig(_Section):
    # one of ARCHS, `torchvision:<name>` (any image classifier of torchvision.models) or `custom` (model.factory)
    arch: str = "lenet"
    filters: int = Field(6, ge=1, le=1024)          # first conv layer's filter count (every conv arch)
    kernel_size: int = Field(5, ge=1, le=256)       # conv kernel side, up to the whole image
    conv_blocks: int = Field(2, ge=1, le=8)         # cnn / conv_ae: number of conv blocks
    growth: float = Field(2.0, gt=0, le=8)          # filters of block i = filters * growth**i
    padding: Literal["same", "valid"] = "same"      # cnn: keep the map size, or shrink it
    pool: Literal["max", "avg", "none"] = "max"     # cnn: pooling after each conv block
    stride: int = Field(1, ge=1, le=8)              # cnn: conv stride (2 with pool: none: strided nets, no pooling)
    conv2_filters: int = Field(16, ge=1, le=1024)   # lenet: second conv layer's filter count
    activation: Optional[Literal["relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu"]] = None  # None: arch default
    batch_norm: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    hidden: Optional[list[int]] = None              # dense sizes; None: arch default
    latent_dim: int = Field(16, ge=1, le=4096)      # autoencoders: size of the code layer
    tied_weights: bool = False                      # autoencoders: decoder uses the encoder's transposed weights
    variant: Literal["fc", "conv"] = "fc"           # vae: fully connected or convolutional
    weights: Optional[str] = None                   # safetensors file to load instead of training
    stem: Literal["small", "imagenet"] = "small"    # torchvision archs: small-image stem (28-32 px) or torchvision's own
    factory: Optional[str] = None                   # arch custom: "package.module:function" (input_shape, n_classes)

    @field_validator("arch")
    @classmethod
    def _arch_known(cls, value: str) -> str:
        if value in ARCHS or value == "custom":
            return value
        if value.startswith(TORCHVISION_PREFIX):
            if not re.fullmatch(r"[a-z0-9_]+", value[len(TORCHVISION_PREFIX):]):
                raise ValueError("expected torchvision:<name> with a torchvision.models name, e.g. torchvision:resnet18")
            return value                           # the name itself is checked when the model is built
        close = difflib.get_close_matches(value, [*ARCHS, "custom"], n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"must be one of {', '.join(ARCHS)}, custom (with model.factory) or "
                         f"torchvision:<name> (e.g. torchvision:resnet18){hint}")

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _FACTORY.match(value):
            raise ValueError('expected "package.module:function", e.g. "models.my_net:build"')
        return value

    @model_validator(mode="after")
    def _factory_with_custom(self) -> "ModelConfig":
        if self.arch == "custom" and not self.factory:
            raise ValueError('model.arch = custom needs model.factory = "package.module:function", '
                             'e.g. "models.my_net:build"')
        return self

    @field_validator("hidden")
    @classmethod
    def _hidden_positive(cls, value: Optional[list[int]]) -> Optional[list[int]]:
        if value is not None and any(int(v) < 1 for v in value):
            raise ValueError("every hidden size must be a positive integer")
        return value


class AugmentConfig(_Section):
    crop: bool = False                              # random crop of the zero-padded image, per image
    padding: int = Field(4, ge=1, le=64)            # crop: pixels of padding on each side
    flip: bool = False                              # random horizontal flip, per image (not for digits)


class TrainConfig(_Section):
    epochs: int = Field(25, ge=0, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10)
    seed: int = Field(0, ge=0)
    l1: float = Field(0.0, ge=0)                    # L1 penalty on weights, added to the loss
    l2: float = Field(0.0, ge=0)                    # L2 penalty (Adam weight decay)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    compile: bool = False                           # torch.compile (graph) instead of eager
    snapshot_every: int = Field(200, ge=0)          # linear schedule: steps between weight snapshots; 0: none
    snapshot_schedule: Literal["linear", "log"] = "log"  # log: steps 0, 1, 2, 4, 8, ... and the end
    val_fraction: float = Field(0.1, ge=0.0, le=0.5)  # training images held out, evaluated every epoch
    kl_weight: float = Field(1.0, ge=0)             # vae: weight of the KL term
    noise: float = Field(0.0, ge=0.0, lt=1.0)       # denoising: masking fraction or gaussian std
    noise_kind: Literal["masking", "gaussian"] = "masking"
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)   # sgd
    nesterov: bool = False                          # sgd: Nesterov momentum (needs momentum > 0)
    schedule: Literal["none", "cosine", "step"] = "none"   # learning rate over epochs
    step_size: int = Field(10, ge=1)                # schedule step: epochs between decays
    gamma: float = Field(0.1, gt=0.0, le=1.0)       # schedule step: factor per decay
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "TrainConfig":
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("train.nesterov = true needs train.optimizer = sgd and train.momentum > 0")
        return self


class ExtractConfig(_Section):
    # auto: `input` + block-level outputs (ours: every named layer); all: `input` + every leaf module; or a list
    layers: Union[Literal["auto", "all"], list[str], None] = "auto"    # None: auto (older params files)
    spatial: Literal["auto", "flatten", "mean", "max"] = "auto"       # conv maps: kept whole or pooled per channel
    pool_above: int = Field(16384, ge=1)            # spatial auto: pool maps with more values per image than this
    split: Literal["test", "train", "all"] = "test"   # images to map; all: test then train (up to 70,000)
    n_samples: Optional[int] = Field(None, ge=10)   # stratified subset of the split; None: all
    dtype: Literal["float32", "float16"] = "float32"
    snapshot_layers: Optional[list[str]] = None     # None: the layer before the output
    batch_size: int = Field(256, ge=1, le=65_536)
    seed: int = Field(0, ge=0)

    @field_validator("layers", mode="before")
    @classmethod
    def _layers_form(cls, value: Any) -> Any:
        if value is None or value in ("auto", "all") or (isinstance(value, list)
                                                         and all(isinstance(v, str) for v in value)):
            return value
        raise ValueError("must be auto, all or a list of layer names (`python -m pipeline layers` lists them)")

    @field_validator("layers", "snapshot_layers")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        return _refuse_empty(value, "leave it out (null) to use the default layers")


class PCAConfig(_Section):
    n_components: int = Field(2, ge=2, le=3)
    whiten: bool = False                            # unit variance per component (not sphereize: reduce.sphereize)


class TSNEConfig(_Section):
    backend: Literal["opentsne", "sklearn", "cuml"] = "opentsne"   # cuml: RAPIDS on an NVIDIA GPU (optional)
    method: Literal["auto", "bh", "fft", "exact"] = "auto"  # gradient; auto: BH < 2,000 points or 3-D, else FFT
    n_components: int = Field(2, ge=2, le=3)
    perplexity: float = Field(30.0, gt=0, le=1000)
    early_exaggeration_iter: int = Field(125, ge=0, le=10_000)
    n_iter: int = Field(250, ge=1, le=100_000)      # iterations after early exaggeration
    learning_rate: Optional[float] = Field(None, gt=0)  # None: "auto" (openTSNE: N / exaggeration)
    init: Literal["pca", "random"] = "pca"


class UMAPConfig(_Section):
    backend: Literal["umap-learn", "cuml"] = "umap-learn"        # cuml: RAPIDS on an NVIDIA GPU (optional)
    n_neighbors: int = Field(15, ge=2, le=1000)
    min_dist: float = Field(0.1, ge=0.0, le=1.0)
    metric: Literal["euclidean", "cosine", "manhattan", "correlation", "chebyshev"] = "euclidean"
    n_components: int = Field(2, ge=2, le=3)
    n_epochs: Optional[int] = Field(None, ge=10, le=10_000)


class ReduceConfig(_Section):
    pca_dims: int = Field(50, ge=2, le=4096)        # PCA to this many dims before t-SNE / UMAP
    seed: int = Field(0, ge=0)
    knn_k: int = Field(10, ge=1, le=100)            # k of the kNN accuracy and trustworthiness
    sphereize: bool = False                         # centre every point and scale it to unit length first
    pca: PCAConfig = PCAConfig()
    tsne: TSNEConfig = TSNEConfig()
    umap: UMAPConfig = UMAPConfig()


class ProbeConfig(_Section):
    test_fraction: float = Field(0.3, gt=0.05, lt=0.95)
    C: float = Field(1.0, gt=0)                     # inverse L2 strength of the logistic regression
    max_iter: int = Field(300, ge=10, le=100_000)
    max_dims: int = Field(1024, ge=2)               # wider layers are PCA-reduced to this first
    knn_k: int = Field(10, ge=1, le=100)            # k of the kNN accuracy in the layer's own space
    seed: int = Field(0, ge=0)


class RenderConfig(_Section):
    sample_index: int = Field(0, ge=0)              # row of the extracted subset shown in the feature maps
    layer: Optional[str] = None                     # outliers / evolution / class-distance detail; None: before output
    n_outliers: int = Field(8, ge=1, le=64)         # farthest images per class in the outlier grid
    redundancy_threshold: float = Field(0.9, gt=0, le=1)  # |corr| of two filters that marks them redundant
    redundancy_shift: int = Field(1, ge=0, le=8)    # activation correlation: best over shifts up to this many px
    max_channels: int = Field(16, ge=1, le=256)     # feature-map figures: channels shown per layer
    montage_per_class: int = Field(10, ge=1, le=50) # dataset montage: training images per class
    atlas_grid: int = Field(20, ge=2, le=60)        # thumbnail maps: cells per side of the grid over the map
    dpi: int = Field(110, ge=50, le=600)            # PNG resolution (the GIFs use at most 80)
    figures: Optional[list[Literal[FIGURE_FAMILIES]]] = None  # families drawn; None: all (metrics: always all)

    @field_validator("figures")
    @classmethod
    def _figures_non_empty(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return _refuse_empty(value, "leave it out (null) for every figure, or name families such as [maps]")


class ProjectorConfig(_Section):
    layers: Optional[list[str]] = None              # None: every extracted layer
    tensor_format: Literal["tsv", "bytes"] = "bytes"  # bytes: raw float32 (fast); tsv: text, 7 digits
    max_points: Optional[int] = Field(None, ge=2)   # cap on points; None: all that fit the 8192 px sprite
    sprite: bool = True                             # thumbnails of the inputs (sprite.png)

    @field_validator("layers")
    @classmethod
    def _layers_non_empty(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return _refuse_empty(value, "leave it out (null) for every extracted layer")


class ExportConfig(_Section):
    formats: list[Literal["onnx", "torchscript"]] = ["onnx", "torchscript"]
    opset: int = Field(17, ge=9, le=20)             # ONNX opset (torch.onnx legacy exporter: 9..20)

    @field_validator("formats")
    @classmethod
    def _formats_non_empty(cls, value: list[str]) -> list[str]:
        return _refuse_empty(value, "use [onnx], [torchscript] or both")


class DiagnoseConfig(_Section):
    eps: float = Field(1e-6, ge=0.0, le=1.0)        # rectifiers: active when the output is above this
    saturation: float = Field(0.99, gt=0.5, lt=1.0)  # tanh: |y| > this; sigmoid: y > this or < 1 - this
    warn_dead_fraction: float = Field(0.5, ge=0.0, le=1.0)  # warn about layers with more dead units than this


class ExploreConfig(_Section):
    methods: Optional[list[Literal["pca", "tsne", "umap"]]] = None  # None: every method with maps
    max_points: Optional[int] = Field(10_000, ge=10)  # stratified, seeded subset above this; None: all
    max_snapshots: int = Field(12, ge=1, le=1000)   # weight snapshot frames shown (evenly spaced, last kept)
    thumbnails: bool = True                         # image thumbnails in tooltips and the selection list
    seed: int = Field(0, ge=0)

    @field_validator("methods")
    @classmethod
    def _methods_non_empty(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return _refuse_empty(value, "leave it out (null) for every method")


class Params(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    extract: ExtractConfig = ExtractConfig()
    reduce: ReduceConfig = ReduceConfig()
    probe: ProbeConfig = ProbeConfig()
    render: RenderConfig = RenderConfig()
    projector: ProjectorConfig = ProjectorConfig()
    export: ExportConfig = ExportConfig()
    diagnose: DiagnoseConfig = DiagnoseConfig()
    explore: ExploreConfig = ExploreConfig()


def _allowed_keys(model_cls: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at ``loc`` (the location of an unknown key)."""
    cls: Any = model_cls
    for part in loc[:-1]:
        field = cls.model_fields.get(part)
        if field is None:
            return []
        cls = field.annotation
    return list(getattr(cls, "model_fields", {}).keys())


def _get(raw: Any, loc: tuple) -> Any:
    for part in loc:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and isinstance(part, int) and part < len(raw):
            raw = raw[part]
        else:
            return None
    return raw


def _printable(text: str) -> str:
    """Keys and values as one printable line (escape newlines and control characters)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _describe(err: dict, raw: dict, source: str) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("literal[")))
    key = ".".join(_printable(str(p)) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(Params, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        if not allowed:                                   # a key inside a free-form value
            return f"{source}: {key}: unknown key"
        return f"{source}: {key}: unknown key; {hint}allowed: {', '.join(allowed)}"
    value = _get(raw, loc)
    msg = err["msg"]
    msg = _printable(" ".join(msg.replace("Input should be", "must be").replace("Value error, ", "").split()))
    if isinstance(value, dict) and msg.startswith(f"{key}."):     # a section-level rule: it names its keys
        return f"{source}: {msg}"
    shown = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("...").strip()
    shown = _printable(" ".join(shown.split()))          # one line, whatever the value holds
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{source}: {key} = {shown}: {msg}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed mapping; raise ConfigError with one line per problem, joined."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (data, model, train, ...), "
                          f"got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(e, raw, source) for e in exc.errors()]
        raise ConfigError("; ".join(problems)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently: a second ``model:`` section would replace the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":      # `<<: *base` then overriding a key is fine
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (the later value would silently replace the "
                        f"earlier one); keep one", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_params(path: str | Path = paths.PARAMS) -> Params:
    """Read and validate params.yaml. A missing file is an error: silently running on the defaults
    would cache results for params nobody chose (an empty file, ``{}``, means all defaults)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found; run from the project folder (the one with "
                          f"{paths.PARAMS}) or pass --params FILE")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a params file; pass a YAML file (e.g. params.yaml)")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc}); check its permissions") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}; fix the file "
                          f"(or `git checkout {path}` to start again)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    return parse_params(raw, str(path))
