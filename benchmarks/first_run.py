"""The default ``dvc repro``: this code against an older commit, side by side, each a first run with
empty caches; then this code's second run.

    python benchmarks/first_run.py --old /path/to/old/checkout [--sequential [--rounds N]] [--keep DIR]

Each tree's committed files (``git archive HEAD``, what a fresh clone holds) go into a new git
repository with an empty DVC cache. Both run ``dvc repro`` at the same time (so both see the same
machine load; ``--sequential``: one after the other, each alone, as a user runs it), each with
empty caches of its own: ``NUMBA_CACHE_DIR`` (numba's compiled code, the project's and every
library's: numba otherwise keeps a library's next to its source in site-packages, where a fresh
virtualenv has none), ``XDG_CACHE_HOME``, ``MPLCONFIGDIR`` (matplotlib's font cache) and no
``__pycache__`` of the pipeline. Then the new copy runs ``dvc repro -f`` (every stage again,
caches now warm): the first run's extra cost is what a fresh machine pays once. The virtualenv
is the one running this script (installing torch and friends is download time, not the
pipeline's). Per-stage seconds come from the moments dvc prints its lines, as in
``end_to_end.py``.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, bench_env, cli, load_average, machine, run_checked, workspace, write_json  # noqa: E402
from end_to_end import _LOCK, _RUNNING  # noqa: E402


def clone(tree: Path, dest: Path) -> Path:
    """``tree``'s committed files in a new git repository (one commit), outputs empty."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(tree), "archive", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for stale in ("dvc.lock",):
        (dest / stale).unlink(missing_ok=True)
    env = bench_env(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
                    GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "bench"]):
        run_checked(cmd, cwd=dest, env=env)
    return dest


def _stages(lines: list[tuple[float, str]], total: float) -> dict[str, float]:
    out: dict[str, float] = {}
    current, start = None, 0.0
    for t, text in lines:
        match = _RUNNING.search(text)
        if match:
            if current:                       # no lock-file line (a forced rerun that changed nothing)
                out[current] = round(t - start, 1)
            current, start = match.group(1), t
        elif current and _LOCK.search(text):
            out[current] = round(t - start, 1)
            current = None
    if current:
        out[current] = round(max((t for t, _ in lines), default=total) - start, 1)
    return out


def repro(repos: dict[str, Path], caches: dict[str, Path], args: list[str]) -> dict[str, dict[str, Any]]:
    """``dvc repro ARGS`` in every repository at the same time; seconds in all and per stage."""
    procs, lines, started = {}, {}, time.perf_counter()
    import threading

    def read(name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines[name].append((time.perf_counter() - started, line.rstrip("\n")))

    threads = []
    for name, repo in repos.items():
        cache = caches[name]
        # NUMBA_CACHE_DIR too: without it numba caches a library's cache=True functions next to
        # their source (site-packages/pynndescent/__pycache__), warm from every earlier run here
        env = bench_env(PYTHONUNBUFFERED="1", XDG_CACHE_HOME=str(cache / "xdg"), MPLCONFIGDIR=str(cache / "mpl"),
                        NUMBA_CACHE_DIR=str(cache / "numba"))
        env.pop("PYTHONPATH")                       # the copy's own pipeline/ package, as a user has it
        lines[name] = []
        procs[name] = subprocess.Popen([sys.executable, "-m", "dvc", "repro", *args], cwd=repo, env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
        threads.append(threading.Thread(target=read, args=(name, procs[name])))
        threads[-1].start()
    out = {}
    for name, proc in procs.items():
        proc.wait()
        total = time.perf_counter() - started
        if proc.returncode != 0:
            tail = "\n".join(text for _, text in lines[name][-40:])
            raise SystemExit(f"dvc repro in {repos[name]} failed ({proc.returncode}):\n{tail}")
        out[name] = {"seconds": round(total, 1), "stages": None}
    for thread in threads:
        thread.join()
    for name in procs:
        out[name]["stages"] = _stages(lines[name], out[name]["seconds"])
        last = max((t for t, _ in lines[name]), default=out[name]["seconds"])
        out[name]["seconds"] = round(last, 1)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(p):
        p.add_argument("--old", type=Path, required=True, help="checkout of the code to compare against")
        p.add_argument("--keep", type=Path, help="folder for the two repositories and their caches (with --rounds, the last round's)")
        p.add_argument("--sequential", action="store_true",
                       help="the two first runs one after the other, each alone (default: at the same time)")
        p.add_argument("--rounds", type=int, default=1,
                       help="with --sequential: this many pairs of first runs, each in new repositories with "
                            "empty caches, the order alternating (old-new, new-old, ...); the ratio reported "
                            "is the median of the pairs' ratios (the machine's speed drifts between runs)")
    args = cli(__doc__, add, argv)
    with workspace(args.keep, "hs-first-") as tmp:     # two repositories, their caches and outputs: 0.6 GB
        return _compare(args, tmp)


def _fresh(args: Any, folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Both trees in new repositories under ``folder``, each with empty caches of its own."""
    repos = {"old": clone(args.old.resolve(), folder / "old"), "new": clone(REPO, folder / "new")}
    return repos, {name: folder / f"cache-{name}" for name in repos}


def _ratio(pair: dict[str, Any]) -> float:
    """old / new seconds of one pair of first runs."""
    return pair["old"]["seconds"] / pair["new"]["seconds"]


def _compare(args: Any, tmp: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine(), "load_start": load_average(), "old": str(args.old)}
    rounds = max(1, args.rounds) if args.sequential else 1
    pairs: list[dict[str, Any]] = []
    for r in range(rounds):
        folder = tmp if rounds == 1 else tmp / f"round{r + 1}"
        if r:                           # the previous round's repositories and caches: 0.6 GB
            shutil.rmtree(tmp / f"round{r}", ignore_errors=True)
        repos, caches = _fresh(args, folder)
        if args.sequential:             # each first run alone on the machine, as a user has it
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            first = {name: repro({name: repos[name]}, caches, [])[name] for name in order}
        else:
            first = repro(repos, caches, [])
        pairs.append(first)
        if rounds > 1:
            print(f"round {r + 1}/{rounds} ({' then '.join(order)}): old {first['old']['seconds']:.1f} s, "
                  f"new {first['new']['seconds']:.1f} s, {_ratio(first):.2f}x",
                  flush=True)
    ratios = sorted(map(_ratio, pairs))
    median = statistics.median(ratios)
    # the table shows the pair whose ratio is nearest the median
    first = min(pairs, key=lambda p: abs(_ratio(p) - median))
    result["first"] = first
    result["rounds"] = [{name: p[name]["seconds"] for name in ("old", "new")} for p in pairs]
    result["load_mid"] = load_average()
    second = repro({"new": repos["new"]}, caches, ["-f"])
    result["second"] = second
    result["load_end"] = load_average()
    o, n, n2 = first["old"], first["new"], second["new"]
    print(f"default dvc repro, old = {args.old}, new = {REPO}; load {result['load_start'][0]:.1f} -> "
          f"{result['load_end'][0]:.1f}")
    print(f"{'stage':<14}{'old first':>10}{'new first':>10}{'new second':>11}")
    for stage in sorted(set(o["stages"]) | set(n["stages"]), key=lambda s: list(n["stages"]).index(s)
                        if s in n["stages"] else 99):
        print(f"{stage:<14}{o['stages'].get(stage, float('nan')):>10.1f}{n['stages'].get(stage, float('nan')):>10.1f}"
              f"{n2['stages'].get(stage, float('nan')):>11.1f}")
    print(f"{'total':<14}{o['seconds']:>10.1f}{n['seconds']:>10.1f}{n2['seconds']:>11.1f}")
    how = "side by side" if not args.sequential else (
        "one after the other" if rounds == 1 else f"median of {rounds} pairs, "
        + ", ".join(f"{x:.2f}x" for x in ratios))
    print(f"old / new (first runs, {how}): {median:.2f}x (target >= 1.5x); "
          f"new first / second: {n['seconds'] / n2['seconds']:.2f}x (target <= 1.3x)")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
