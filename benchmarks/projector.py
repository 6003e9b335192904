"""Projector tensor writing: a 10,000 x 4,000 float32 layer (half zeros, like a ReLU layer) as raw
bytes, as our vectorised TSV, and with np.savetxt, side by side.

    python benchmarks/projector.py [--rows 10000] [--cols 4000]

CPU seconds are the fair comparison (writing to disk adds wall time that depends on the disk).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, load_average, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(p):
        p.add_argument("--rows", type=int, default=10_000)
        p.add_argument("--cols", type=int, default=4_000)
    args = cli(__doc__, add, argv)
    from pipeline.projector import write_tensor

    load_start = load_average()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.cols), dtype=np.float32)
    x[rng.random(x.shape) < 0.5] = 0
    out = Path(tempfile.mkdtemp(prefix="hs-projector-"))
    res: dict[str, dict[str, float]] = {}

    def timed(name: str, fn: Callable[[], Path]) -> None:
        w0, c0 = time.perf_counter(), time.process_time()
        path = fn()
        res[name] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
                     "mb": os.path.getsize(path) / 1e6}
        print(f"{name:8s} wall {res[name]['wall_s']:6.2f} s  cpu {res[name]['cpu_s']:6.2f} s  "
              f"{res[name]['mb']:7.1f} MB", flush=True)
        os.remove(path)

    def savetxt() -> Path:
        np.savetxt(out / "s.tsv", x, fmt="%.7g", delimiter="\t")
        return out / "s.tsv"

    try:
        print(f"{args.rows} x {args.cols} float32, half zeros")
        timed("bytes", lambda: write_tensor(out / "a", x, "bytes"))
        timed("tsv", lambda: write_tensor(out / "a", x, "tsv"))
        timed("savetxt", savetxt)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    r_tsv = res["savetxt"]["cpu_s"] / res["tsv"]["cpu_s"]
    r_bytes = res["tsv"]["cpu_s"] / res["bytes"]["cpu_s"]
    print(f"savetxt / tsv: {r_tsv:.1f}x cpu; tsv / bytes: {r_bytes:.0f}x cpu")
    result = {"rows": args.rows, "cols": args.cols, "results": res, "savetxt_over_tsv": r_tsv,
              "tsv_over_bytes": r_bytes, "load_start": load_start, "load_end": load_average()}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
