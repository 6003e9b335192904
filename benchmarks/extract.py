"""Extraction: one hooked pass for all layers against one pass per layer, and peak memory.

1. Speed: our single hooked pass over every layer of LeNet against running the network once
   per layer (what a per-layer tool does), on the same images. Prints seconds and the ratio.
2. Memory: the real extract stage on 10,000 synthetic 28x28 images (the full MNIST test split
   size) with all layers in float16, run as a subprocess; prints its peak RSS (target < 2 GiB).

    python benchmarks/extract.py [--n 10000]
"""

from __future__ import annotations

import argparse
import os
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HIDDEN_SPACES_QUIET", "1")
import torch

REPO = Path(__file__).resolve().parents[1]


def _speed(n: int) -> None:
    from pipeline.config import ModelConfig
    from pipeline.models import build_model, describe_layers
    from pipeline.stages.extract import choose_layers, record_activations

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="lenet"), (1, 28, 28), 10).eval()
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    normalize = lambda x: x.float() / 255.0 - 0.13                          # noqa: E731
    layers = choose_layers(model, None)
    dims = {r["name"]: int(np.prod(r["shape"])) for r in describe_layers(model, (1, 28, 28))} | {"input": 784}

    def sinks():
        return {name: np.empty((n, dims[name]), np.float16) for name in layers}

    start = time.perf_counter()
    record_activations(model, images, normalize, layers, sinks(), batch_size=256)
    one_pass = time.perf_counter() - start

    start = time.perf_counter()
    for name in layers:                       # a full forward pass for each layer's activations
        record_activations(model, images, normalize, [name], {name: np.empty((n, dims[name]), np.float16)},
                           batch_size=256)
    per_layer = time.perf_counter() - start
    print(f"extract {len(layers)} layers x {n} images: one hooked pass {one_pass:.2f} s, "
          f"one pass per layer {per_layer:.2f} s -> {per_layer / one_pass:.1f}x")


def _memory(n: int) -> None:
    """The real stage in a subprocess on synthetic data of MNIST's test-split size."""
    from pipeline import artifacts
    from pipeline.config import ModelConfig, TrainConfig
    from pipeline.models import build_model, save_model

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
        from pipeline.stages.train import model_meta
        from pipeline.config import Params

        meta = model_meta(Params(model=cfg, train=TrainConfig()), info, model)
        save_model(ws / "data" / "model", model, meta)
        (ws / "params.yaml").write_text("extract: {dtype: float16}\ntrain: {device: cpu}\n")
        code = ("import resource, runpy, sys; sys.argv=['pipeline','extract']\n"
                "try:\n    runpy.run_module('pipeline', run_name='__main__')\n"
                "except SystemExit: pass\n"
                "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], cwd=ws, capture_output=True, text=True,
                              env={"PYTHONPATH": str(REPO), "HIDDEN_SPACES_QUIET": "1", "PATH": "/usr/bin:/bin"})
        seconds = time.perf_counter() - start
        if proc.returncode != 0 or "PEAK_KB" not in proc.stdout:
            raise SystemExit(proc.stderr[-2000:])
        peak = int(proc.stdout.split("PEAK_KB")[1].split()[0]) / 1024 ** 2
        layers = json.loads((ws / "data" / "activations" / "layers.json").read_text())["layers"]
        size = sum((ws / "data" / "activations" / f"{r['name']}.npy").stat().st_size for r in layers) / 1024 ** 3
        print(f"extract stage, {n} images, {len(layers)} layers, float16: {seconds:.1f} s, "
              f"{size:.2f} GiB written, peak RSS {peak:.2f} GiB (target < 2 GiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    _speed(args.n)
    _memory(args.n)


if __name__ == "__main__":
    main()
