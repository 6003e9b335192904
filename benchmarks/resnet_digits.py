"""ResNet-18 (small stem) on the 5,000 bundled digits, on this machine: the whole pipeline.

    nice python benchmarks/resnet_digits.py [--epochs 3] [--threads N] [--keep DIR]

The pipeline is copied into a temporary git repository (as benchmarks/end_to_end.py does) with the
default params.yaml except ``model.arch: torchvision:resnet18`` (``model.stem: small``: a 3x3
stride-1 first conv, no max-pool) and ``train.epochs``, and run with ``dvc repro``. Prints the
seconds per epoch (logs/train/timings.json), the test accuracy after the last epoch
(metrics/train/metrics.json), the linear-probe accuracy of the block outputs, and the seconds of
every stage and of the whole run. Nothing is asserted: it is a measurement. The CPU may be shared;
the load average before and after is printed beside the figures.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, load_average, machine, write_json  # noqa: E402
from end_to_end import repro_timed, repo_copy  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = cli(__doc__, lambda p: (p.add_argument("--epochs", type=int, default=3),
                                   p.add_argument("--threads", type=int, default=None,
                                                  help="OMP_NUM_THREADS for the stages (default: as set)"),
                                   p.add_argument("--keep", type=Path, default=None,
                                                  help="build the repo here and keep it (default: a temp dir)")), argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    load_start = load_average()
    with repo_copy(args.keep, "hs-resnet-") as repo:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["model"]["arch"] = "torchvision:resnet18"
        params["model"]["stem"] = "small"
        params["train"]["epochs"] = args.epochs
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        print(f"ResNet-18 (small stem), {args.epochs} epochs on mnist-5k (4,000 train / 1,000 test), default "
              f"params otherwise; repo {repo}; {machine()['cpu']}, {machine()['cores']} cores; "
              f"load {load_start[0]:.2f}", flush=True)
        total, stages, _ = repro_timed(repo)
        timings = json.loads((repo / "logs/train/timings.json").read_text())
        metrics = json.loads((repo / "metrics/train/metrics.json").read_text())
        probes = json.loads((repo / "metrics/probes.json").read_text())
        layers = json.loads((repo / "data/activations/layers.json").read_text())["layers"]
    load_end = load_average()
    accuracy = metrics["test"]["accuracy"]
    print(f"\nseconds per epoch: {', '.join(f'{s:.0f}' for s in timings['epoch_seconds'])} "
          f"(mean {timings['seconds_per_epoch']:.0f})")
    print(f"test accuracy after {args.epochs} epochs: {accuracy:.4f}")
    print("linear probe per layer: " + ", ".join(
        f"{row['name']} {probes[row['name']]['accuracy']:.3f}" + (f" ({row['spatial']})" if row.get("spatial")
                                                                   not in (None, "flatten") else "")
        for row in layers if row["name"] in probes and "accuracy" in probes[row["name"]]))
    print(f"\n{'stage':<14}{'command s':>10}{'dvc s':>8}")
    for s in stages:
        print(f"{s['stage']:<14}{s['seconds']:>10.1f}{s['dvc_seconds']:>8.1f}")
    print(f"{'total':<14}{total:>10.1f}")
    print(f"load average: {load_start[0]:.2f} before, {load_end[0]:.2f} after")
    result = {"epochs": args.epochs, "epoch_seconds": timings["epoch_seconds"],
              "seconds_per_epoch": timings["seconds_per_epoch"], "test_accuracy": accuracy,
              "probe": {k: v.get("accuracy") for k, v in probes.items() if isinstance(v, dict)},
              "total_seconds": round(total, 1),
              "stages": [{k: s[k] for k in ("stage", "seconds", "dvc_seconds")} for s in stages],
              "load_start": load_start, "load_end": load_end}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
