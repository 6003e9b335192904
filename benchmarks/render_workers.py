"""render: every figure drawn in the stage's own process against drawn in worker processes.

    python benchmarks/render_workers.py [--workspace DIR] [--rounds 2]

The workspace is a project folder where everything before render already ran (default: this
repository after ``dvc repro``). It is copied once into a temporary folder (``data/``,
``params.yaml``, ``metrics/``); then ``python -m pipeline render`` runs there with
``HIDDEN_SPACES_WORKERS=1`` (one process) and without it (one process per usable core), one
after the other, ``--rounds`` times, alternating, so both see the same machine. Wall seconds and
CPU seconds of the process and its children per run, the best of the rounds compared; and the
figures of the two must be the same bytes.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, bench_env, cli, load_average, machine, write_json  # noqa: E402


def _render(ws: Path, workers: str | None) -> dict[str, Any]:
    env = bench_env()
    env.pop("HIDDEN_SPACES_WORKERS", None)
    if workers is not None:
        env["HIDDEN_SPACES_WORKERS"] = workers
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "render"], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=3600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"render failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    figures = ws / "plots" / "figures"
    digest = hashlib.sha256()
    for path in sorted(figures.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return {"wall_s": round(wall, 2), "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
            "figures": len(list(figures.iterdir())), "sha256": digest.hexdigest()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(p):
        p.add_argument("--workspace", type=Path, default=REPO, help="project folder where extract and reduce ran")
        p.add_argument("--rounds", type=int, default=2)
    args = cli(__doc__, add, argv)
    tmp = Path(tempfile.mkdtemp(prefix="hs-render-"))
    try:
        for name in ("data", "metrics", "plots"):
            if (args.workspace / name).exists():
                shutil.copytree(args.workspace / name, tmp / name, ignore=shutil.ignore_patterns("figures"))
        for name in ("params.yaml", "dvc.yaml"):
            shutil.copy2(args.workspace / name, tmp / name)
        if (args.workspace / "models").exists():
            shutil.copytree(args.workspace / "models", tmp / "models")
        runs: dict[str, list[dict[str, Any]]] = {"one process": [], "workers": []}
        load = [load_average()[0]]
        for _ in range(args.rounds):
            runs["one process"].append(_render(tmp, "1"))
            runs["workers"].append(_render(tmp, None))
            load.append(load_average()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = {k: min(v, key=lambda r: r["wall_s"]) for k, v in runs.items()}
    same = len({r["sha256"] for rs in runs.values() for r in rs}) == 1
    result = {"machine": machine(), "load": load, "runs": runs,
              "ratio": round(best["one process"]["wall_s"] / best["workers"]["wall_s"], 2), "same_bytes": same}
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; load {load[0]:.1f} -> {load[-1]:.1f}")
    print(f"{'render':<14}{'wall s':>8}{'cpu s':>8}{'figures':>9}")
    for name, rows in runs.items():
        for row in rows:
            print(f"{name:<14}{row['wall_s']:>8.1f}{row['cpu_s']:>8.1f}{row['figures']:>9}")
    print(f"one process / workers (best of {args.rounds}): {result['ratio']:.2f}x; figures byte-identical: {same}")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
