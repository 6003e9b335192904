"""UMAP: every layer fitted in one process against one process per layer.

    python benchmarks/umap.py [--activations data/activations] [--n 1000]

umap-learn compiles its numba kernels on first use in each process (15-40 s on 2 cores), so
a stage per layer pays that once per layer while ``python -m pipeline reduce umap`` pays it
once. Both arms run the real reduce code (``pipeline.reducers.embed(x, "umap", reduce
defaults)``) on the same arrays, as fresh ``python -c`` processes, and are timed from outside
(interpreter start, imports, loading, fitting):

- one process fitting every layer in turn;
- one process per layer, run one after the other (what one DVC stage per layer would do).

Input: the activations of an extract output (``--activations``; default
``data/activations`` when it exists: the 13 LeNet layers x 1,000 test digits of the default
params), else synthetic activations of the same 13 LeNet layer widths (10 Gaussian classes in
a 16-D latent, mapped through a random linear map and tanh per layer). One untimed process
first fits a small array, so numba's on-disk cache (pynndescent caches some kernels there)
is equally warm for both arms.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, bench_env, cli, load_average, write_json  # noqa: E402

# One process: fit the listed layers (all when none) with the reduce defaults, print JSON seconds.
_FIT = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from pipeline.config import ReduceConfig
from pipeline.reducers import embed
folder, names = Path(sys.argv[1]), sys.argv[2:]
cfg, out = ReduceConfig(), {}
for name in names:
    x = np.load(folder / f"{name}.npy")
    started = time.perf_counter()
    embed(x, "umap", seed=cfg.seed, pca_dims=cfg.pca_dims, **cfg.umap.model_dump())
    out[name] = time.perf_counter() - started
print("FIT_SECONDS", json.dumps(out))
"""


def synthetic_layers(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Activations shaped like the default LeNet's 13 layers for ``n`` points, with class structure."""
    from pipeline.config import ModelConfig
    from pipeline.models import build_model, describe_layers

    model = build_model(ModelConfig(arch="lenet"), (1, 28, 28), 10)
    widths = {"input": 784} | {r["name"]: int(np.prod(r["shape"])) for r in describe_layers(model, (1, 28, 28))}
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    latent = rng.normal(scale=3.0, size=(10, 16))[labels] + rng.normal(size=(n, 16))    # (n, 16)
    out = {"labels": labels.astype(np.int64)}
    for name, dim in widths.items():
        w = rng.normal(size=(16, dim)) / 4.0
        out[name] = np.tanh(latent @ w + 0.1 * rng.normal(size=(n, dim))).astype(np.float32)   # (n, dim)
    return out


def provided_layers(directory: Path, n: int) -> dict[str, np.ndarray]:
    index = json.loads((directory / "layers.json").read_text())
    out = {"labels": np.load(directory / "labels.npy")[:n]}
    for row in index["layers"]:
        out[row["name"]] = np.load(directory / f"{row['name']}.npy")[:n]
    return out


def _process(folder: Path, names: list[str]) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _FIT, str(folder), *names], cwd=REPO, env=bench_env(),
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0 or "FIT_SECONDS" not in proc.stdout:
        raise SystemExit(f"umap process failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout.split("FIT_SECONDS", 1)[1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(p):
        p.add_argument("--activations", type=Path, default=None,
                       help="an extract output folder (default: data/activations if present, else synthetic)")
        p.add_argument("--n", type=int, default=1000, help="points (first n rows)")
    args = cli(__doc__, add, argv)
    load_start = load_average()
    source = args.activations
    if source is None and (REPO / "data" / "activations" / "layers.json").exists():
        source = REPO / "data" / "activations"
    arrays = provided_layers(source, args.n) if source else synthetic_layers(args.n)
    arrays.pop("labels")
    names = list(arrays)
    n = len(next(iter(arrays.values())))
    what = f"activations from {source}" if source else "synthetic activations of the default LeNet's layer widths"
    tmp = Path(tempfile.mkdtemp(prefix="hs-umap-"))
    try:
        for name, x in arrays.items():
            np.save(tmp / f"{name}.npy", x)
        np.save(tmp / "warm.npy", np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32))
        _process(tmp, ["warm"])                                    # numba's on-disk cache, for both arms
        print(f"UMAP (reduce defaults) on {len(names)} layers x {n} points, {what}", flush=True)
        one_wall, one_fits = _process(tmp, names)
        print(f"one process, all layers:   {one_wall:6.1f} s  (fits: first {one_fits[names[0]]:.1f} s, "
              f"the other {len(names) - 1} {sum(one_fits.values()) - one_fits[names[0]]:.1f} s)", flush=True)
        per_wall, per_fits = 0.0, {}
        for name in names:
            wall, fits = _process(tmp, [name])
            per_wall += wall
            per_fits[name] = fits[name]
        print(f"one process per layer:     {per_wall:6.1f} s  ({len(names)} processes; fits {sum(per_fits.values()):.1f} s, "
              f"{min(per_fits.values()):.1f}-{max(per_fits.values()):.1f} s each)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = per_wall / one_wall
    print(f"one process for all layers is {ratio:.1f}x faster "
          f"(saves {per_wall - one_wall:.0f} s: the numba compile and imports, paid once)")
    result = {"n": n, "layers": names, "source": str(source) if source else "synthetic",
              "one_process_s": one_wall, "one_process_fits": one_fits, "per_layer_s": per_wall,
              "per_layer_fits": per_fits, "ratio": ratio, "load_start": load_start, "load_end": load_average()}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
