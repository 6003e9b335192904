"""Extraction: one hooked pass for all layers against one pass per layer, and peak memory.

1. Speed: our single hooked pass over every layer of LeNet against running the network once
   per layer (what a per-layer tool does), on the same images. Prints seconds and the ratio.
2. Memory: the real extract stage on 10,000 synthetic 28x28 images (the full MNIST test split
   size) with all layers in float16, run as a subprocess; prints its peak RSS (target < 2 GiB).

    python benchmarks/extract.py [--n 10000]

The speed comparison runs both ways once untimed first (kernel warm-up), then alternates them
(hooked, per-layer, hooked, per-layer) and compares the best of each. Peak RSS is the
extract process's own ``ru_maxrss`` (it counts the pages of the memory-mapped outputs it
wrote, too); the snapshot activations are left out (no snapshots in this workspace).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env, cli, load_average, write_json  # noqa: E402

os.environ.setdefault("HIDDEN_SPACES_QUIET", "1")
import torch  # noqa: E402

TARGET_GIB = 2.0


def _speed(n: int, repeats: int = 2) -> dict[str, Any]:
    from pipeline.config import ModelConfig
    from pipeline.models import build_model, describe_layers
    from pipeline.activations import choose_layers, record_activations

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="lenet"), (1, 28, 28), 10).eval()
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    normalize = lambda x: x.float() / 255.0 - 0.13                          # noqa: E731
    layers = choose_layers(model, None)
    dims = {r["name"]: int(np.prod(r["shape"])) for r in describe_layers(model, (1, 28, 28))} | {"input": 784}

    def sinks():
        return {name: np.empty((n, dims[name]), np.float16) for name in layers}

    def hooked() -> float:
        out = sinks()
        start = time.perf_counter()
        record_activations(model, images, normalize, layers, out, batch_size=256)
        return time.perf_counter() - start

    def per_layer() -> float:
        out = sinks()
        start = time.perf_counter()
        for name in layers:                   # a full forward pass for each layer's activations
            record_activations(model, images, normalize, [name], {name: out[name]}, batch_size=256)
        return time.perf_counter() - start

    warm = min(n, 1024)
    record_activations(model, images[:warm], normalize, layers, {k: v[:warm] for k, v in sinks().items()})
    times: dict[str, list[float]] = {"hooked": [], "per_layer": []}
    for _ in range(repeats):
        times["hooked"].append(hooked())
        times["per_layer"].append(per_layer())
    one, per = min(times["hooked"]), min(times["per_layer"])
    print(f"extract {len(layers)} layers x {n} images (LeNet, float16 sinks, {torch.get_num_threads()} threads): "
          f"one hooked pass {one:.2f} s, one pass per layer {per:.2f} s -> {per / one:.1f}x")
    return {"layers": len(layers), "hooked_s": one, "per_layer_s": per, "ratio": per / one, "runs": times}


def _memory(n: int, dtype: str = "float16") -> dict[str, Any]:
    """The real stage in a subprocess on synthetic data of MNIST's test-split size."""
    from pipeline import artifacts
    from pipeline.config import ModelConfig
    from pipeline.models import build_model, model_meta, save_model

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        rng = np.random.default_rng(0)
        prepared = ws / "data" / "prepared"
        artifacts.save_npy(prepared / "train_images.npy", rng.integers(0, 256, (100, 1, 28, 28), dtype=np.uint8))
        artifacts.save_npy(prepared / "train_labels.npy", np.arange(100) % 10)
        artifacts.save_npy(prepared / "test_images.npy", rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8))
        artifacts.save_npy(prepared / "test_labels.npy", np.arange(n) % 10)
        info = {"dataset": "synthetic", "classes": [str(i) for i in range(10)], "shape": [1, 28, 28],
                "n_train": 100, "n_test": n, "mean": [0.5], "std": [0.29]}
        artifacts.save_json(prepared / "info.json", info)
        cfg = ModelConfig(arch="lenet")
        model = build_model(cfg, (1, 28, 28), 10)
        meta = model_meta(model, cfg.model_dump(), info)
        save_model(ws / "data" / "model", model, meta)
        (ws / "params.yaml").write_text(f"extract: {{dtype: {dtype}}}\ntrain: {{device: cpu}}\n")
        code = ("import resource, runpy, sys; sys.argv=['pipeline','extract']\n"
                "try:\n    runpy.run_module('pipeline', run_name='__main__')\n"
                "except SystemExit: pass\n"
                "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], cwd=ws, capture_output=True, text=True, env=bench_env())
        seconds = time.perf_counter() - start
        if proc.returncode != 0 or "PEAK_KB" not in proc.stdout:
            raise SystemExit(proc.stderr[-2000:])
        peak = int(proc.stdout.split("PEAK_KB")[1].split()[0]) / 1024 ** 2
        layers = json.loads((ws / "data" / "activations" / "layers.json").read_text())["layers"]
        size = sum((ws / "data" / "activations" / f"{r['name']}.npy").stat().st_size for r in layers) / 1024 ** 3
        verdict = f" (target < {TARGET_GIB:g} GiB: {'meets' if peak < TARGET_GIB else 'MISSES'})" \
            if dtype == "float16" else ""
        print(f"extract stage, {n} images, {len(layers)} layers, {dtype}: {seconds:.1f} s, "
              f"{size:.2f} GiB written, peak RSS {peak:.2f} GiB{verdict}")
        return {"dtype": dtype, "seconds": seconds, "written_gib": size, "peak_rss_gib": peak}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = cli(__doc__, lambda p: p.add_argument("--n", type=int, default=10_000), argv)
    load_start = load_average()
    result = {"n": args.n, "speed": _speed(args.n), "memory": [_memory(args.n, "float16"), _memory(args.n, "float32")],
              "target_gib": TARGET_GIB, "load_start": load_start, "load_end": load_average()}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
