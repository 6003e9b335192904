"""Every path the stages read or write, relative to the repository root (where dvc runs).

dvc.yaml lists the same paths as deps/outs; ``tests/test_dvc_deps.py`` checks that each stage
declares exactly the code it imports.
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
PIPELINE = Path("dvc.yaml")
ROOT_MARKERS = (PIPELINE, PARAMS)      # a folder holding either is a project root

DATA = Path("data")
RAW = DATA / "raw"                    # default data.root for torchvision datasets
WEIGHTS = DATA / "weights"            # your own model.weights files (a train dep: replacing one reruns train)
PREPARED = DATA / "prepared"          # fetch: uint8 images, labels, info.json
MODEL = DATA / "model"                # train: weights, config, snapshots
ACTIVATIONS = DATA / "activations"    # extract: one .npy per layer (+ snapshots/)
EMBEDDINGS = DATA / "embeddings"      # reduce: data/embeddings/<method>/<layer>.npy
PROJECTOR = DATA / "projector"        # projector: TensorBoard Embedding Projector bundle
EXPORT = DATA / "export"              # export: ONNX / TorchScript

# Logs: what differs on every run (timings, TensorBoard event files named after the time and PID).
# Never a DVC output (DVC hashes every declared output, cached or not, so a timing there would
# rerun everything downstream); git-ignored; each stage clears its own folder when it starts.
LOGS = Path("logs")
TRAIN_LOGS = LOGS / "train"           # train: tensorboard/ (scalars, filters per epoch), timings.json
REDUCE_LOGS = LOGS / "reduce"         # reduce: <method>.json, seconds per layer

METRICS = Path("metrics")
TRAIN_METRICS = METRICS / "train"                 # dvclive: metrics.json + plots/metrics/*.tsv
EMBEDDING_METRICS = METRICS / "embeddings"        # metrics/embeddings/<method>.json
PROBE_METRICS = METRICS / "probes.json"
RENDER_METRICS = METRICS / "render.json"
DIAGNOSTICS_METRICS = METRICS / "diagnostics.json"
EXPORT_METRICS = METRICS / "export.json"          # export: agreement of the exported models

PLOTS = Path("plots")
POINTS = PLOTS / "points"                         # plots/points/<method>/<NN>_<layer>.csv (DVC scatter)
FIGURES = PLOTS / "figures"                       # render: PNG figures
CONFUSION = PLOTS / "confusion.csv"               # DVC confusion template
COMPARE = PLOTS / "compare"                       # compare command output (not a DVC stage)
EXPLORER = PLOTS / "explorer.html"                # explore: the interactive page of every map
EXPLORER_COMPARE = COMPARE / "explorer.html"      # `explore A B`: two runs side by side (not a DVC stage)
DIAGNOSTICS_PLOTS = PLOTS / "diagnostics"         # diagnose: unit-activity and class-tightness figures


# Output folders that later stages read: the file their stage writes last (its completion marker)
# and the stage. A folder without its marker was left by an interrupted stage; readers refuse it.
COMPLETE_WHEN: dict[Path, tuple[str, str]] = {
    PREPARED: ("info.json", "fetch"),
    MODEL: ("model.json", "train"),
    ACTIVATIONS: ("layers.json", "extract"),
}
EMBEDDING_MARKER = "info.json"        # data/embeddings/<method>/, written last by reduce@<method>


def output_folder(path: Path) -> tuple[Path, str, str] | None:
    """(folder, marker, stage) of the marked output folder holding ``path`` (relative to the
    working folder, i.e. the project root), or None for any other path."""
    try:
        rel = Path(path).absolute().relative_to(Path.cwd().absolute())
    except ValueError:
        return None
    for folder, (marker, stage) in COMPLETE_WHEN.items():
        if rel.parts[:len(folder.parts)] == folder.parts and len(rel.parts) > len(folder.parts):
            return folder, marker, stage
    n = len(EMBEDDINGS.parts)
    if rel.parts[:n] == EMBEDDINGS.parts and len(rel.parts) > n + 1:
        return EMBEDDINGS / rel.parts[n], EMBEDDING_MARKER, f"reduce@{rel.parts[n]}"
    return None


def find_root(start: Path) -> Path | None:
    """The project root: ``start`` or the nearest folder above it holding dvc.yaml or params.yaml."""
    start = start.absolute()
    for folder in (start, *start.parents):
        if any((folder / marker).is_file() for marker in ROOT_MARKERS):
            return folder
    return None


def embedding_dir(method: str) -> Path:
    return EMBEDDINGS / method


def embedding_metrics(method: str) -> Path:
    return EMBEDDING_METRICS / f"{method}.json"


def reduce_log(method: str) -> Path:
    return REDUCE_LOGS / f"{method}.json"


def points_dir(method: str) -> Path:
    return POINTS / method


def layer_stem(position: int, n_layers: int, layer: str) -> str:
    """``12_act4``: a layer's name after its 1-based place among the extracted layers (the input
    is 1), zero-padded so that files and projector tensors sort from the input to the output."""
    if not 1 <= position <= n_layers:
        raise ValueError(f"position {position} outside 1..{n_layers}")
    return f"{position:0{max(2, len(str(n_layers)))}d}_{layer}"


def points_file(method: str, position: int, n_layers: int, layer: str) -> Path:
    """plots/points/<method>/<NN>_<layer>.csv: one map's points for DVC's plots (network order)."""
    return points_dir(method) / f"{layer_stem(position, n_layers, layer)}.csv"


# --- file-name patterns of the weight snapshots and what is computed from them (one home) --------
# data/model/snapshots/step_NNNNNN.safetensors + index.json (train), data/activations/snapshots/step_NNNNNN/
# (extract: one .npy per snapshot layer), data/embeddings/<method>/snapshots/<layer>/step_NNNNNN.npy (reduce).

SNAPSHOTS = "snapshots"                            # folder name of the snapshots and of their per-step outputs
MODEL_SNAPSHOTS = MODEL / SNAPSHOTS                # train: one safetensors file per snapshot step
SNAPSHOT_INDEX_NAME = "index.json"
SNAPSHOT_INDEX = MODEL_SNAPSHOTS / SNAPSHOT_INDEX_NAME   # {"snapshots": [{"step", "epoch", "file"}, ...]}
STEP_DIGITS = 6                                    # step_000200: sorted by name is sorted by step


def step_name(step: int) -> str:
    """``step_000200`` for step 200 (more digits past 999,999 steps)."""
    return f"step_{int(step):0{STEP_DIGITS}d}"


def step_of(name: str) -> int | None:
    """The step of a ``step_NNNNNN`` name (a file stem or folder name), or None for other names."""
    digits = name.removeprefix("step_")
    return int(digits) if name.startswith("step_") and digits.isdigit() and len(digits) >= STEP_DIGITS else None


def snapshot_weights_name(step: int) -> str:
    """File name of one weight snapshot in :data:`MODEL_SNAPSHOTS` (as index.json records it)."""
    return f"{step_name(step)}.safetensors"


def activation_snapshot(step: int) -> str:
    """Folder of one snapshot's activations, relative to :data:`ACTIVATIONS` (layers.json ``dir``)."""
    return f"{SNAPSHOTS}/{step_name(step)}"


def embedding_snapshots(method: str) -> Path:
    """Folder of the snapshot maps of ``method``: one subfolder per layer."""
    return embedding_dir(method) / SNAPSHOTS


def embedding_snapshot(layer: str, step: int, folder: Path | None = None) -> Path:
    """One snapshot map, ``<layer>/step_NNNNNN.npy`` under ``folder`` (default: none; give
    :func:`embedding_snapshots` of a method, or another run's copy of it)."""
    return (Path() if folder is None else folder) / layer / f"{step_name(step)}.npy"
