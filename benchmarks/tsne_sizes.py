"""t-SNE at 5,000-10,000 points: Barnes-Hut against FFT gradients, the iteration budget, and
snapshot frames started from the previous frame's map with fewer iterations.

    python benchmarks/tsne_sizes.py --activations DIR [--sizes 5000 10000] [--layer act4]

``DIR`` is an extract output (``data/activations``) with at least max(sizes) points and weight
snapshots (``benchmarks/real_sizes.py --keep`` makes one: 10,000 tiled digits). Every fit uses
the pipeline's own reducer (``pipeline.reducers.embed``: PCA to 50, exact neighbours, openTSNE)
on the same points, one after the other in one process, so ratios compare like with like; CPU
seconds (process time, both threads) are printed beside wall seconds because the machine is
shared. Quality: 2-D kNN accuracy (k = 10, 5-fold) and trustworthiness (k = 10) against the
PCA-50 features, as the reduce stage measures them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, load_average, machine, write_json  # noqa: E402


def _fit(x, cfg, labels, init=None, features=None):
    from pipeline.quality import knn_accuracy, trustworthiness
    from pipeline.reducers import embed

    wall, cpu = time.perf_counter(), time.process_time()
    emb = embed(x, "tsne", seed=0, pca_dims=cfg.pca_dims, layout=init, features=features, **cfg.tsne.model_dump())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall": wall, "cpu": cpu, "knn": knn_accuracy(emb.coords, labels, 10),
            "trust": trustworthiness(emb.features.pcs, emb.coords, 10), "coords": emb.coords,
            "features": emb.features}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(p):
        p.add_argument("--activations", type=Path, required=True)
        p.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000])
        p.add_argument("--budgets", default="250+500,75+150", help="budgets tried beside the default 125+250")
        p.add_argument("--layer", default="act4")
        p.add_argument("--frame-budgets", default="0+250,0+100,0+50")
        p.add_argument("--methods-only", action="store_true", help="only Barnes-Hut against FFT at each size")
    args = cli(__doc__, add, argv)
    from pipeline.config import ReduceConfig
    from pipeline.datasets import stratified_subset

    act = args.activations
    labels_all = np.load(act / "labels.npy")
    x_all = np.load(act / f"{args.layer}.npy").astype(np.float32)
    print(f"machine: {machine()}; load {load_average()}", flush=True)
    out: dict[str, Any] = {"methods": [], "budgets": [], "frames": []}

    def cfg(method="auto", ee=125, it=250):
        return ReduceConfig.model_validate({"tsne": {"method": method, "early_exaggeration_iter": ee, "n_iter": it}})

    print(f"\n{'n':>6} {'method':>6} {'wall s':>7} {'cpu s':>7} {'kNN':>6} {'trust':>6}  load", flush=True)
    fits = {}
    for n in args.sizes:
        rows = stratified_subset(labels_all, n, 0)
        x, labels = x_all[rows], labels_all[rows]
        for method in ("bh", "fft"):
            r = fits[n, method] = _fit(x, cfg(method), labels)
            print(f"{n:>6} {method:>6} {r['wall']:>7.1f} {r['cpu']:>7.1f} {r['knn']:>6.3f} {r['trust']:>6.3f}  "
                  f"{load_average()[0]:.1f}", flush=True)
            out["methods"].append({"n": n, "method": method, **{k: r[k] for k in ("wall", "cpu", "knn", "trust")}})

    if args.methods_only:
        write_json(args.json, out)
        return out
    n = max(args.sizes)
    rows = stratified_subset(labels_all, n, 0)
    x, labels = x_all[rows], labels_all[rows]
    print(f"\niteration budget at {n} points (FFT), early exaggeration + normal iterations", flush=True)
    for budget in ["125+250", *args.budgets.split(",")]:
        ee, it = (int(v) for v in budget.split("+"))
        r = fits[n, "fft"] if (ee, it) == (125, 250) else _fit(x, cfg("fft", ee, it), labels)
        print(f"{ee:>4}+{it:<4} wall {r['wall']:6.1f} s  cpu {r['cpu']:6.1f} s  kNN {r['knn']:.3f}  trust {r['trust']:.3f}",
              flush=True)
        out["budgets"].append({"ee": ee, "n_iter": it, **{k: r[k] for k in ("wall", "cpu", "knn", "trust")}})

    index = json.loads((act / "layers.json").read_text())
    snaps = sorted(index.get("snapshots") or [], key=lambda e: int(e["step"]))
    if len(snaps) >= 2:
        final = fits[n, "fft"]
        prev = np.load(act / snaps[-2]["dir"] / f"{args.layer}.npy").astype(np.float32)[rows]
        print(f"\nsnapshot frame (step {snaps[-2]['step']}) started from the final map, {n} points", flush=True)
        for budget in args.frame_budgets.split(","):
            ee, it = (int(v) for v in budget.split("+"))
            r = _fit(prev, cfg("fft", ee, it), labels, init=final["coords"])
            print(f"{ee:>4}+{it:<4} wall {r['wall']:6.1f} s  cpu {r['cpu']:6.1f} s  kNN {r['knn']:.3f}  "
                  f"trust {r['trust']:.3f}", flush=True)
            out["frames"].append({"ee": ee, "n_iter": it, **{k: r[k] for k in ("wall", "cpu", "knn", "trust")}})
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
