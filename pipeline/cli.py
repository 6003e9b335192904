"""Command line: one thin Typer command per pipeline stage (what dvc.yaml calls).

Each command only parses its arguments and calls ``pipeline.stages.<stage>.run(params, ...)``.
Imports are lazy so ``python -m pipeline --help`` does not load torch. A :class:`UserError`
becomes one ``error: ...`` line on stderr and a non-zero exit code (2 for bad params), never a
traceback.
"""

from __future__ import annotations

import enum
import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="See, and measure, what the hidden layers of an image network learned.\n\n"
         "Stages (wired by dvc.yaml; run them all with `dvc repro`): fetch -> train -> extract -> "
         "reduce {pca,tsne,umap} / probe / projector -> render. Every knob is in params.yaml.",
)


# `-p FILE` is accepted before the command (`python -m pipeline -p p.yaml train`) and after it
# (`python -m pipeline train -p p.yaml`); after wins.
ParamsOption = Annotated[Optional[Path], typer.Option(
    "--params", "-p", metavar="PATH", show_default=False,
    help="params file to read (default: params.yaml; also accepted before the command)")]


class Method(str, enum.Enum):
    """The reduce methods (pipeline.config.METHODS; not imported here so --help stays light)."""

    pca = "pca"
    tsne = "tsne"
    umap = "umap"


def _print_version(value: bool) -> None:
    if value:
        from pipeline import __version__

        typer.echo(f"hidden-spaces {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    params: Annotated[Optional[Path], typer.Option("--params", "-p", metavar="PATH", show_default=False,
                                                   help="params file to read (default: params.yaml in the project "
                                                        "root; also accepted after the command)")] = None,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_print_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    ctx.obj = {"params": params}          # --params as given (None: the project's params.yaml), this invocation only


def _load_params(ctx: typer.Context, params: Optional[Path]) -> Any:
    """Validated params of this invocation (the command's own ``--params``, else the one given
    before the command, else the project's params.yaml), read from the project root, which becomes the working folder.

    Every path in dvc.yaml and pipeline/paths.py is relative to the root (the folder holding
    dvc.yaml or params.yaml, found from any subfolder), so a stage started in ``data/`` still reads
    params.yaml and writes data/prepared, not data/data/prepared. A missing params.yaml is an error,
    not "use the defaults"; ``--params FILE`` names another file (relative to where you are).
    """
    from pipeline import paths
    from pipeline.config import load_params
    from pipeline.errors import ConfigError
    from pipeline.runtime import log

    given = params if params is not None else (ctx.obj or {}).get("params")
    here = Path.cwd()
    chosen = None if given is None else (Path(given) if Path(given).is_absolute() else here / given)
    root = paths.find_root(here)
    if root is None and chosen is None:
        raise ConfigError(f"no params.yaml or dvc.yaml in {here} or any folder above it; run from the project "
                          f"folder, or pass --params FILE")
    if root is not None and root != here:
        os.chdir(root)
        log(f"note: running in the project root {root}")
    if chosen is None:
        if not paths.PARAMS.is_file():
            raise ConfigError(f"{root / paths.PARAMS}: not found (the project root has {paths.PIPELINE} but no "
                              f"params file); restore it (`git checkout {paths.PARAMS}`) or pass --params FILE")
        chosen = paths.PARAMS
    elif not chosen.exists():
        raise ConfigError(f"--params {given}: file not found; give an existing YAML file (or leave --params out)")
    elif not Path(given).is_absolute():
        chosen = Path(os.path.relpath(chosen))         # messages name the file as given (relative to the root now)
    return load_params(chosen)


class _Interrupted(Exception):
    """Ctrl-C / SIGTERM inside a stage (whose `stage_outputs` already removed its partial outputs).
    Not a KeyboardInterrupt: Typer would turn that into a silent exit status (130) returned by `app`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stage(ctx: typer.Context, params_path: Optional[Path], name: str, **kwargs: Any) -> Any:
    params = _load_params(ctx, params_path)
    module = importlib.import_module(f"pipeline.stages.{name}")
    try:
        return module.run(params, **kwargs)
    except KeyboardInterrupt as exc:
        raise _Interrupted(int(getattr(exc, "signum", signal.SIGINT))) from None


@app.command(short_help="Load the dataset into data/prepared.")
def fetch(ctx: typer.Context, params: ParamsOption = None) -> None:
    """Load data.dataset and write data/prepared (uint8 images, labels, class names, info.json)."""
    _stage(ctx, params, "fetch")


@app.command(short_help="Train the model; write data/model, metrics/train.")
def train(ctx: typer.Context, params: ParamsOption = None) -> None:
    """Train model.arch on data/prepared; write data/model and metrics/train (dvclive)."""
    _stage(ctx, params, "train")


@app.command(short_help="Record every layer's activations.")
def extract(ctx: typer.Context, params: ParamsOption = None) -> None:
    """Record every layer's activations on the test subset (and for each weight snapshot)."""
    _stage(ctx, params, "extract")


@app.command(short_help="Map every layer to 2-D/3-D with one method.")
def reduce(ctx: typer.Context, method: Annotated[Method, typer.Argument(help="the mapping method", show_default=False)],
           params: ParamsOption = None) -> None:
    """Fit METHOD (pca, tsne or umap) on every extracted layer; write embeddings and their metrics."""
    _stage(ctx, params, "reduce", method=method.value)


@app.command(short_help="Linear-probe accuracy per layer.")
def probe(ctx: typer.Context, params: ParamsOption = None) -> None:
    """Linear-probe accuracy per layer (logistic regression on the activations) -> metrics/probes.json."""
    _stage(ctx, params, "probe")


@app.command(short_help="Draw every figure into plots/.")
def render(ctx: typer.Context, params: ParamsOption = None) -> None:
    """Draw every figure (scatters, progression grids, filters, feature maps, ...) into plots/."""
    _stage(ctx, params, "render")


@app.command(short_help="Write the TensorBoard projector bundle.")
def projector(ctx: typer.Context, params: ParamsOption = None) -> None:
    """Write a TensorBoard Embedding Projector bundle of every extracted layer to data/projector."""
    _stage(ctx, params, "projector")


@app.command(short_help="Dead units and class tightness per layer.")
def diagnose(ctx: typer.Context, params: ParamsOption = None) -> None:
    """Dead / saturated units and class tightness per layer -> metrics/diagnostics.json, plots/diagnostics."""
    _stage(ctx, params, "diagnose")


@app.command(short_help="Export the model as ONNX and TorchScript.")
def export(ctx: typer.Context, params: ParamsOption = None) -> None:
    """Export the trained classifier as ONNX and TorchScript to data/export."""
    _stage(ctx, params, "export")


@app.command(short_help="Compare the representations of two runs.")
def compare(
    ctx: typer.Context,
    rev_a: str = typer.Argument(..., help="git revision or experiment name of the first run"),
    rev_b: str = typer.Argument(..., help="git revision or experiment name of the second run"),
    out: Path = typer.Option(Path("plots/compare"), "--out", "-o", help="folder for the report"),
    params: ParamsOption = None,
) -> None:
    """Compare the representations of two runs: CKA between all layers, maps and metrics side by side."""
    _stage(ctx, params, "compare", rev_a=rev_a, rev_b=rev_b, out=out)


@app.command("convert-weights", short_help="Convert a PyTorch checkpoint to safetensors.")
def convert_weights(
    checkpoint: Path = typer.Argument(..., help="PyTorch checkpoint (.pth / .pt): a state dict, or a dict holding one"),
    out: Path = typer.Argument(..., help="safetensors file to write (e.g. data/weights/resnet18.safetensors)"),
) -> None:
    """Convert a PyTorch checkpoint to safetensors for model.weights (read with weights_only=True, never unpickled)."""
    from pipeline.convert import convert_weights as convert

    notes = convert(checkpoint, out)
    extra = []
    if notes["found"] != "top level":
        extra.append(f"state dict found under {notes['found']}")
    if notes["stripped_prefix"]:
        extra.append(f"'{notes['stripped_prefix']}' prefix removed")
    if notes["skipped"]:
        extra.append(f"{notes['skipped']} entries that are not tensors left out")
    typer.echo(f"wrote {out}: {notes['tensors']} tensors" + (f" ({'; '.join(extra)})" if extra else ""))


@app.command(short_help="Write the interactive explorer page (one run, or two side by side).")
def explore(
    ctx: typer.Context,
    runs: Optional[list[str]] = typer.Argument(
        None, metavar="RUNS",
        help="runs to show: git revisions, branches, tags, `dvc exp` names, `workspace` or project folders; "
             "none: this workspace, as the DVC stage (plots/explorer.html)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="HTML file for A [B] (default plots/compare/explorer.html)"),
    params: ParamsOption = None,
) -> None:
    """One self-contained HTML page (no server, no network) of every layer's map, with linked selection,
    scores against depth and the weight snapshots; with runs A B, both side by side."""
    if not runs:
        if out is not None:
            from pipeline.errors import ConfigError

            raise ConfigError("--out is for `explore A [B]`; the stage always writes plots/explorer.html")
        _stage(ctx, params, "explore")
    else:
        from pipeline import paths

        _stage(ctx, params, "explore_runs", names=runs, out=out or paths.EXPLORER_COMPARE)


@app.command(short_help="List the model's layers and output shapes.")
def layers(ctx: typer.Context, params: ParamsOption = None) -> None:
    """List the layers extract.layers picks from the model params.yaml describes: type, output shape,
    values per image, values stored per image (extract.spatial) and parameters, with the totals."""
    import numpy as np

    from pipeline import paths
    from pipeline.datasets import load_info
    from pipeline.models import build_model, describe_layers, select_layers
    from pipeline.spatial import pooling_for, stored_shape

    params = _load_params(ctx, params)
    info_path = paths.PREPARED / "info.json"
    if info_path.exists():
        info = load_info(paths.PREPARED)
        shape, n_classes = tuple(info["shape"]), len(info["classes"])
    else:
        shape, n_classes = ((3, 32, 32) if params.data.dataset == "cifar10" else (1, 28, 28)), 10
    model = build_model(params.model, shape, n_classes)
    cfg = params.extract
    wanted = cfg.layers if isinstance(cfg.layers, str) or cfg.layers is None else [n for n in cfg.layers if n != "input"]
    rows = describe_layers(model, shape, select_layers(model, wanted))
    if cfg.layers in (None, "auto", "all") or "input" in cfg.layers:
        rows = [{"name": "input", "type": "-", "shape": list(shape), "params": 0}] + rows
    width = max(12, *(len(r["name"]) for r in rows)) + 1
    twidth = max(12, *(len(r["type"]) for r in rows)) + 1
    typer.echo(f"{'layer':<{width}} {'type':<{twidth}} {'output shape':<16} {'values/image':>12} {'stored':>10} "
               f"{'params':>11}")
    total_values = total_stored = 0
    for row in rows:
        values = int(np.prod(row["shape"]))
        pooling = pooling_for(row["shape"], cfg.spatial, cfg.pool_above) if row["name"] != "input" else "flatten"
        stored = int(np.prod(stored_shape(row["shape"], pooling)))
        total_values, total_stored = total_values + values, total_stored + stored
        note = "" if pooling == "flatten" else f"  ({pooling}-pooled)"
        typer.echo(f"{row['name']:<{width}} {row['type']:<{twidth}} {str(tuple(row['shape'])):<16} {values:>12,} "
                   f"{stored:>10,} {row['params']:>11,}{note}")
    n = cfg.n_samples or params.data.n_test or 1000
    size = total_stored * n * (2 if cfg.dtype == "float16" else 4) / 2**30
    which = cfg.layers if isinstance(cfg.layers, str) else ("auto" if cfg.layers is None else "a list")
    typer.echo(f"total: {len(rows)} layers (extract.layers: {which}), {total_values:,} values per image, "
               f"{total_stored:,} stored (extract.spatial: {cfg.spatial}), about {size:.2f} GiB for {n:,} images in "
               f"{cfg.dtype}; {sum(p.numel() for p in model.parameters()):,} parameters")


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: run the app, turning user errors into one line and an exit code."""
    os.environ.setdefault("DO_NOT_TRACK", "1")          # dvclive / dvc telemetry off
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import warnings

    # even kernels with padding="same" (e.g. model.kernel_size=28) are supported; the notice is noise
    warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
    from pipeline.errors import UserError

    # SIGTERM (`kill`, CI cancellation, `timeout`) unwinds like Ctrl-C, so `stage_outputs` removes the
    # partial outputs; the default action would end the process with them still on disk.
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    status = None
    try:
        status = app(args=argv, standalone_mode=False)
    except UserError as exc:
        _error(str(exc))
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, _Interrupted) as exc:
        if argv is None:              # the real command: a second Ctrl-C must not interrupt the exit (atexit)
            _ignore_signals()
        _error("interrupted; outputs of the interrupted stage were removed, rerun `dvc repro`")
        sys.exit(128 + int(getattr(exc, "signum", signal.SIGINT)))
    except OSError as exc:                                   # disk full, permissions, read-only file system
        _error(_os_error_line(exc, getattr(exc, "outputs_removed", False)))
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # usage errors: click's ClickException, or the copy Typer vendors (typer._click)
        if any(c.__name__ == "ClickException" and c.__module__.split(".")[0] in ("click", "typer")
               for c in type(exc).__mro__):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    finally:
        if previous is not None and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, previous)
    # Typer returns (not raises) the status of an Exit in non-standalone mode, e.g. 130 for a Ctrl-C
    # outside a stage; our commands themselves return None.
    sys.exit(status if isinstance(status, int) and not isinstance(status, bool) else 0)


def _error(message: str) -> None:
    """The one ``error:`` line, on a line of its own: a progress bar that was drawing (tqdm leaves
    its line open, ``\r...``) is closed first, so the line starts with ``error:``."""
    std = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(std, "tqdm", None), "_instances", None) or []):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot close must not hide the error
            pass
    print(f"error: {message}", file=sys.stderr, flush=True)


def _ignore_signals() -> None:
    """Ctrl-C / SIGTERM from now on are ignored: the error line is out, the process is exiting."""
    if _main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like KeyboardInterrupt (exit code 128 + 15)."""

    signum = signal.SIGTERM


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _os_error_line(exc: OSError, removed: bool = False) -> str:
    """One line for an environment failure: the file, the system's reason and what to do."""
    import errno

    what = f"{exc.filename}: " if exc.filename else ""
    reason = (exc.strerror or str(exc).strip() or type(exc).__name__).splitlines()[0]
    fix = {errno.ENOSPC: "free disk space (or move data/ to a larger disk) and rerun",
           errno.EDQUOT: "free disk space (quota exceeded) and rerun",
           errno.EACCES: "make it writable for you (or work in a folder you own) and rerun",
           errno.EPERM: "make it writable for you (or work in a folder you own) and rerun",
           errno.EROFS: "work in a writable folder and rerun"}.get(exc.errno, "fix the file system problem and rerun")
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        fix = "a file stands where a folder is needed: move or delete it and rerun"
    return f"{what}{reason}; {fix}" + (" (the stage's partial outputs were removed)" if removed else "")


if __name__ == "__main__":
    main()
