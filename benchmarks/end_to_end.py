"""End to end: `dvc repro` from scratch on the default params, a no-op `dvc repro`, and `--help`.

    python benchmarks/end_to_end.py [--keep DIR] [--noop-runs 3]

The pipeline (pipeline/, dvc.yaml, the real params.yaml, ...) is copied into a temporary git
repository with an empty DVC cache, committed, and run with `dvc repro`. Per-stage seconds come
from the moments dvc prints its lines (read as they arrive): a stage's command runs from
"Running stage 'X'" to dvc's next lock-file line; the rest until the next stage is DVC hashing
and caching that stage's outputs ("dvc" column). Then `dvc repro` again with everything cached
(no-op; dvc still hashes the workspace to see that nothing changed), and `python -m pipeline
--help` (must not import torch). Targets on a 2-core CPU: from scratch < 4 min, no-op < 5 s,
--help < 1 s.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, bench_env, cli, load_average, run_checked, write_json  # noqa: E402

# What a clone holds that the pipeline needs; outputs (data/, metrics/, plots/, dvc.lock) start empty.
COPY = ["pipeline", "models", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvcignore", ".gitignore",
        "data/.gitignore", "data/weights/README.md", "data/raw/README.md", "plots/.gitignore"]
_RUNNING = re.compile(r"Running stage '([^']+)'")
_LOCK = re.compile(r"(Generating|Updating) lock file")

TARGETS = {"scratch": 240.0, "noop": 5.0, "help": 1.0}


@contextlib.contextmanager
def repo_copy(keep: Path | None, prefix: str) -> Iterator[Path]:
    """:func:`make_copy` in ``keep`` (emptied first, kept afterwards) or in a temporary folder
    named ``prefix...`` (removed at the end)."""
    if keep:
        if keep.exists():
            shutil.rmtree(keep)
        yield make_copy(keep)
        return
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        yield make_copy(Path(tmp) / "repo")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_copy(dest: Path) -> Path:
    """A git repository holding the pipeline with the real default params, committed."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in COPY:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for folder in ("metrics", "plots"):
        (dest / folder).mkdir(exist_ok=True)
    env = bench_env(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
                    GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "bench"]):
        run_checked(cmd, cwd=dest, env=env)
    return dest


def repro_timed(repo: Path) -> tuple[float, list[dict[str, Any]], str]:
    """Run `dvc repro`, timestamping each output line; returns total seconds, stages, output."""
    env = bench_env(PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH")                       # the copy's own pipeline/ package, as a user has it
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    lines: list[tuple[float, str]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.perf_counter() - started, line.rstrip("\n")))
    proc.wait()
    total = time.perf_counter() - started
    output = "\n".join(text for _, text in lines)
    if proc.returncode != 0:
        raise SystemExit(f"dvc repro failed ({proc.returncode}):\n{output[-4000:]}")
    stages: list[dict[str, Any]] = []
    for t, text in lines:
        match = _RUNNING.search(text)
        if match:
            if stages:
                stages[-1]["next"] = t
            stages.append({"stage": match.group(1), "start": t, "cmd_end": None, "next": None})
        elif _LOCK.search(text) and stages and stages[-1]["cmd_end"] is None:
            stages[-1]["cmd_end"] = t
    for s in stages:
        s["next"] = s["next"] if s["next"] is not None else total
        s["cmd_end"] = s["cmd_end"] if s["cmd_end"] is not None else s["next"]
        s["seconds"] = round(s["cmd_end"] - s["start"], 2)
        s["dvc_seconds"] = round(s["next"] - s["cmd_end"], 2)
    return total, stages, output


def noop_repro(repo: Path, runs: int) -> list[float]:
    out = []
    env = bench_env()
    env.pop("PYTHONPATH")
    for _ in range(runs):
        started = time.perf_counter()
        proc = run_checked([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env)
        out.append(time.perf_counter() - started)
        if "Running stage" in proc.stdout:
            raise SystemExit(f"the second `dvc repro` reran stages:\n{proc.stdout[-3000:]}")
    return out


def help_seconds(runs: int) -> tuple[list[float], bool]:
    """Wall seconds of `python -m pipeline --help`, and whether it imported torch."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run_checked([sys.executable, "-m", "pipeline", "--help"], cwd=REPO)
        times.append(time.perf_counter() - started)
    code = ("import sys, runpy; sys.argv = ['pipeline', '--help']\n"
            "try:\n    runpy.run_module('pipeline', run_name='__main__')\nexcept SystemExit: pass\n"
            "print('TORCH', 'torch' in sys.modules)")
    proc = run_checked([sys.executable, "-c", code], cwd=REPO)
    return times, "TORCH True" in proc.stdout


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = cli(__doc__, lambda p: (p.add_argument("--keep", type=Path, default=None,
                                                  help="build the repo here and keep it (default: a temp dir)"),
                                   p.add_argument("--noop-runs", type=int, default=3)), argv)
    load_start = load_average()
    with repo_copy(args.keep, "hs-e2e-") as repo:
        print(f"repository copy: {repo} (default params.yaml, empty DVC cache); load {load_start[0]:.2f}", flush=True)
        total, stages, _ = repro_timed(repo)
        print(f"\n{'stage':<14}{'command s':>10}{'dvc s':>8}")
        for s in stages:
            print(f"{s['stage']:<14}{s['seconds']:>10.1f}{s['dvc_seconds']:>8.1f}")
        print(f"{'total':<14}{total:>10.1f}   (target < {TARGETS['scratch']:.0f} s: "
              f"{'meets' if total < TARGETS['scratch'] else 'MISSES'})", flush=True)
        noop = noop_repro(repo, args.noop_runs)
        noop_s = statistics.median(noop)
        print(f"no-op dvc repro: {', '.join(f'{t:.2f}' for t in noop)} s (median {noop_s:.2f}; "
              f"target < {TARGETS['noop']:.0f} s: {'meets' if noop_s < TARGETS['noop'] else 'MISSES'})")
        cache_mb = sum(f.stat().st_size for f in (repo / ".dvc" / "cache").rglob("*") if f.is_file()) / 1e6
        help_t, imported_torch = help_seconds(5)
        help_s = statistics.median(help_t)
        print(f"python -m pipeline --help: first {help_t[0]:.2f} s, median of 5 {help_s:.2f} s "
              f"(target < {TARGETS['help']:.0f} s: {'meets' if help_s < TARGETS['help'] else 'MISSES'}); "
              f"imports torch: {imported_torch}")
        print(f"DVC cache after the run: {cache_mb:.0f} MB")
    load_end = load_average()
    result = {"scratch_seconds": round(total, 1), "stages": [{k: s[k] for k in ("stage", "seconds", "dvc_seconds")}
                                                              for s in stages],
              "noop_seconds": [round(t, 2) for t in noop], "noop_median": round(noop_s, 2),
              "help_seconds": [round(t, 3) for t in help_t], "help_median": round(help_s, 3),
              "help_imports_torch": imported_torch, "cache_mb": round(cache_mb, 1),
              "load_start": load_start, "load_end": load_end, "targets": TARGETS}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
