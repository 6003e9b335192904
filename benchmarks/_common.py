"""Shared plumbing of the benchmark scripts: the machine, the load, results as JSON.

Every benchmark is a script with ``main(argv) -> dict``: it prints its table and returns the
figures; ``--json PATH`` also writes them, which is how ``run_all.py`` collects them into
RESULTS.md. Nothing here asserts a speed: scripts print ratios measured side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

__all__ = ["REPO", "load_average", "machine", "versions", "bench_env", "timed", "fit_exponent",
           "cli", "python_bin"]


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python (from /proc where it exists)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = round(int(line.split()[1]) / 1024 ** 2, 1)
                break
    except OSError:
        pass
    from pipeline.runtime import usable_cpus

    return {"cpu": cpu, "cores": usable_cpus(), "ram_gib": ram, "os": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict[str, str]:
    """Versions of the libraries whose speed is measured (read from metadata, nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torch", "numpy", "scikit-learn", "openTSNE", "umap-learn", "numba", "pynndescent",
                 "dvc", "matplotlib"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def python_bin() -> str:
    """The interpreter running the benchmarks (its venv's bin holds dvc too)."""
    return sys.executable


@contextlib.contextmanager
def workspace(keep: Path | None, prefix: str) -> Iterator[Path]:
    """``keep`` when given (left in place for a later look or run), else a new temporary folder
    named ``prefix...``, deleted afterwards: benchmark workspaces hold up to several GB."""
    if keep:
        yield Path(keep)
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: quiet progress bars, this interpreter first on PATH."""
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO), "HIDDEN_SPACES_QUIET": "1", "DVC_NO_ANALYTICS": "1",
            "DO_NOT_TRACK": "1", "MPLBACKEND": "Agg", **extra}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def fit_exponent(ns: list[float], seconds: list[float]) -> float:
    """k of ``seconds ~ c * N^k``: least squares on log-log."""
    import numpy as np

    slope, _ = np.polyfit(np.log(ns), np.log(seconds), 1)
    return float(slope)


def run_checked(cmd: list[str], cwd: Path | None = None, timeout: float = 3600,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env or bench_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def cli(doc: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None,
        argv: list[str] | None = None) -> argparse.Namespace:
    """An argparse parser with the common ``--json PATH`` option."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    if add_args:
        add_args(parser)
    return parser.parse_args(argv)


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=float))
