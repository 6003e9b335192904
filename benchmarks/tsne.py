"""Our t-SNE (``reduce.tsne`` defaults) against scikit-learn's ``TSNE`` defaults, side by side.

    python benchmarks/tsne.py                        # 5,000 mnist-5k digits, quick LeNet in-process
    python benchmarks/tsne.py --activations data/activations   # a provided extract output instead
    python benchmarks/tsne.py --n 2000 --epochs 3    # smaller / quicker

Two inputs: the normalised pixels, and the layer before the output of a default LeNet. With
no ``--activations`` the LeNet is trained here for ``--epochs`` epochs on the 4,000-digit
training split of mnist-5k and applied to all 5,000 digits (so most points were seen in
training: tighter clusters than on held-out digits; the comparison is the same for both).

Both sides get the same points and both timings include the PCA to 50 dimensions that comes
first (ours: ``reducers.embed``'s preparation; scikit-learn: ``PCA(50)`` then ``TSNE()`` with
its defaults and ``random_state``). Quality: 2-D kNN accuracy (k=10, 5-fold stratified) and
trustworthiness (k=10, against the PCA-50 space). Target: ours at least 2x faster with kNN
accuracy within 0.01. A script, not a test: it prints, it asserts nothing.

Threads: ours uses every core from 2,000 points (``reducers._n_jobs``); scikit-learn's
defaults (``n_jobs=None``) use one thread for the neighbour search and its Barnes-Hut
gradient uses OpenMP on every core. Each side runs as its defaults choose.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, load_average, write_json  # noqa: E402

from pipeline.config import DataConfig, ModelConfig, ReduceConfig, TrainConfig  # noqa: E402
from pipeline.quality import knn_accuracy, trustworthiness  # noqa: E402
from pipeline.reducers import embed, prepare  # noqa: E402


def mnist_inputs(n: int, epochs: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pixels and the penultimate layer of a quickly trained default LeNet, for ``n`` digits."""
    import torch

    from pipeline.datasets import fetch, stratified_subset
    from pipeline.models import build_model, describe_layers
    from pipeline.runtime import normalizer, seed_everything
    from pipeline.activations import penultimate_layer, record_activations
    from pipeline.training import fit

    data = fetch(DataConfig(dataset="mnist-5k"))
    images = np.concatenate([data.train_images, data.test_images])      # (5000, 1, 28, 28) uint8
    labels = np.concatenate([data.train_labels, data.test_labels])
    keep = stratified_subset(labels, n, seed)
    images, labels = images[keep], labels[keep]
    seed_everything(seed)
    model = build_model(ModelConfig(), tuple(data.info["shape"]), len(data.classes))
    print(f"training a default LeNet for {epochs} epochs on {len(data.train_labels)} digits ...", flush=True)
    started = time.perf_counter()
    os.environ.setdefault("HIDDEN_SPACES_QUIET", "1")
    t = TrainConfig(epochs=epochs, seed=seed)
    fit(model, data.train_images, data.train_labels, data.test_images, data.test_labels, mean=data.info["mean"],
        std=data.info["std"], epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, seed=t.seed, device="cpu")
    print(f"  {time.perf_counter() - started:.1f} s", flush=True)
    layer = penultimate_layer(model)
    width = {row["name"]: int(np.prod(row["shape"])) for row in describe_layers(model, tuple(data.info["shape"]))}
    sinks = {"input": np.zeros((len(labels), int(np.prod(images.shape[1:]))), np.float32),
             layer: np.zeros((len(labels), width[layer]), np.float32)}
    normalize = normalizer(data.info["mean"], data.info["std"], torch.device("cpu"))
    record_activations(model, torch.from_numpy(np.ascontiguousarray(images)), normalize, ["input", layer], sinks)
    return {"input (pixels)": sinks["input"], f"{layer} (before output)": sinks[layer]}, labels


def provided_inputs(directory: Path, n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    import json

    from pipeline.datasets import stratified_subset

    index = json.loads((directory / "layers.json").read_text())
    labels = np.load(directory / "labels.npy")
    keep = stratified_subset(labels, n, seed)
    layer = index["penultimate"]
    return {"input (pixels)": np.load(directory / "input.npy")[keep],
            f"{layer} (before output)": np.load(directory / f"{layer}.npy")[keep]}, labels[keep]


def sklearn_default(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    pcs = PCA(n_components=min(50, *x.shape), random_state=seed).fit_transform(x - x.mean(axis=0))
    return TSNE(random_state=seed).fit_transform(pcs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(parser):
        parser.add_argument("--n", type=int, default=5000, help="points (a stratified subset of the 5,000 digits)")
        parser.add_argument("--activations", type=Path, default=None,
                            help="an extract output folder (layers.json, input.npy, <penultimate>.npy, labels.npy)")
        parser.add_argument("--epochs", type=int, default=5, help="LeNet training epochs when no --activations")
        parser.add_argument("--seed", type=int, default=0)
    args = cli(__doc__, add, argv)
    warnings.simplefilter("ignore")
    load_start = load_average()

    if args.activations:
        inputs, labels = provided_inputs(args.activations, args.n, args.seed)
    else:
        inputs, labels = mnist_inputs(args.n, args.epochs, args.seed)
    cfg = ReduceConfig()
    t = cfg.tsne
    print(f"\nours: {t.backend} {t.method} ({'BH' if len(labels) < 10_000 else 'FFT'} at this size), "
          f"{t.early_exaggeration_iter} + {t.n_iter} iterations, perplexity {t.perplexity:g}, PCA-{cfg.pca_dims} first")
    print("sklearn: PCA-50 then TSNE() defaults (barnes_hut, 250 + 750 iterations, perplexity 30)")
    print(f"{len(labels)} points, {os.cpu_count()} cores\n")
    header = f"{'input':<24}{'ours s':>8}{'sklearn s':>11}{'speed-up':>10}{'kNN ours':>10}{'kNN skl':>9}" \
             f"{'trust ours':>12}{'trust skl':>11}  verdict"
    print(header)
    print("-" * len(header))
    rows = []
    for name, x in inputs.items():
        reference = prepare(x, cfg.pca_dims, args.seed).pcs
        started = time.perf_counter()
        ours = embed(x, "tsne", seed=args.seed, pca_dims=cfg.pca_dims, **t.model_dump()).coords
        t_ours = time.perf_counter() - started
        started = time.perf_counter()
        theirs = sklearn_default(x.astype(np.float64), args.seed)
        t_theirs = time.perf_counter() - started
        k_ours, k_theirs = knn_accuracy(ours, labels, 10, seed=args.seed), knn_accuracy(theirs, labels, 10, seed=args.seed)
        tr_ours, tr_theirs = trustworthiness(reference, ours, 10), trustworthiness(reference, theirs, 10)
        ratio = t_theirs / t_ours
        ok = ratio >= 2.0 and k_ours >= k_theirs - 0.01
        print(f"{name:<24}{t_ours:>8.1f}{t_theirs:>11.1f}{ratio:>9.1f}x{k_ours:>10.3f}{k_theirs:>9.3f}"
              f"{tr_ours:>12.3f}{tr_theirs:>11.3f}  {'meets' if ok else 'MISSES'} target (>= 2x, kNN within 0.01)",
              flush=True)
        rows.append({"input": name, "ours_s": t_ours, "sklearn_s": t_theirs, "ratio": ratio, "knn_ours": k_ours,
                     "knn_sklearn": k_theirs, "trust_ours": tr_ours, "trust_sklearn": tr_theirs, "meets": ok})
    result = {"n": int(len(labels)), "rows": rows, "load_start": load_start, "load_end": load_average()}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
