"""fetch stage through the CLI: torchvision datasets end to end on tiny raw files, and every failure
as one line, a non-zero exit and no data/prepared left behind.

Subprocess runs (``python -m pipeline fetch``) get a test-only ``sitecustomize`` on PYTHONPATH
that refuses every network connection and, for the files a test wrote, makes torchvision's
classes expect those files' MD5s (the production path keeps the official ones). The error cases
run the same CLI entry point in process (``pipeline.cli.main``) to share one torchvision import.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.datasets import load_prepared
from tests.conftest import REPO, run_cli, write_params
from tests.test_datasets import (  # noqa: F401  (no_network is a fixture)
    CIFAR_NAMES, assert_paired, idx_bytes, no_network, override_md5, write_cifar, write_mnist_like,
)

SITECUSTOMIZE = '''\
"""Test-only startup hook (tests/test_fetch.py): no network; MD5s of the test's raw files."""
import json
import os
import socket


def _refuse(*args, **kwargs):
    raise OSError("network disabled by the test suite")


socket.getaddrinfo = _refuse
socket.create_connection = _refuse
socket.socket.connect = _refuse

_TABLE = json.loads(os.environ.get("HIDDEN_SPACES_TEST_MD5", "{}"))
if _TABLE:
    import torchvision.datasets as _tvd

    for _name, _md5 in _TABLE.items():
        _cls = getattr(_tvd, _name)
        if hasattr(_cls, "resources"):
            _cls.resources = [(f, _md5.get(f, m)) for f, m in _cls.resources]
        else:
            _cls.train_list = [[f, _md5.get(f, m)] for f, m in _cls.train_list]
            _cls.test_list = [[f, _md5.get(f, m)] for f, m in _cls.test_list]
            _cls.meta = {**_cls.meta, "md5": _md5.get(_cls.meta["filename"], _cls.meta["md5"])}
'''

# dataset -> (torchvision class, raw layout written by the test, expected class names (first, last))
TORCHVISION_CASES = {
    "mnist": ("MNIST", "gz", ("0 - zero", "9 - nine")),
    "fashion-mnist": ("FashionMNIST", "unpacked", ("T-shirt/top", "Ankle boot")),
    "kmnist": ("KMNIST", "gz", ("o", "wo")),
    "cifar10": ("CIFAR10", "batches", (CIFAR_NAMES[0], CIFAR_NAMES[-1])),
}


@pytest.fixture(scope="module")
def guard_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("netguard")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return f"{folder}{os.pathsep}{REPO}"


def fetch_subprocess(ws: Path, guard_path: str, md5: dict | None = None):
    env = {"PYTHONPATH": guard_path, "HIDDEN_SPACES_TEST_MD5": json.dumps(md5 or {})}
    return run_cli("fetch", cwd=ws, check=False, env=env, timeout=300)


def assert_one_line_failure(proc, ws: Path) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not (ws / "data" / "prepared").exists()
    return lines[0].removeprefix("error: ")


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(TORCHVISION_CASES))
def test_torchvision_dataset_end_to_end(dataset, tmp_path, guard_path):
    class_name, layout, (first, last) = TORCHVISION_CASES[dataset]
    root = tmp_path / "raw"
    if layout == "batches":
        md5 = {class_name: write_cifar(root)}
        folder = root / "cifar-10-batches-py"
    else:
        written = write_mnist_like(root, class_name, gz=layout == "gz")
        md5 = {class_name: written} if layout == "gz" else None     # unpacked files have no MD5 in torchvision
        folder = root / class_name / "raw"
    write_params(tmp_path, {"data": {"dataset": dataset, "root": "raw", "download": False,
                                     "n_train": 30, "n_test": 20, "seed": 4}})
    proc = fetch_subprocess(tmp_path, guard_path, md5)
    assert proc.returncode == 0, proc.stderr

    data = load_prepared(tmp_path / "data" / "prepared")          # also checks dtypes and label range
    shape = (3, 32, 32) if dataset == "cifar10" else (1, 28, 28)
    assert data.train_images.shape == (30, *shape) and data.test_images.shape == (20, *shape)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert len(data.classes) == 10 and (data.classes[0], data.classes[-1]) == (first, last)
    assert Counter(data.train_labels.tolist()) == {c: 3 for c in range(10)}   # 60 -> 30: 6 -> 3 per class
    assert Counter(data.test_labels.tolist()) == {c: 2 for c in range(10)}
    if dataset == "cifar10":
        np.testing.assert_array_equal(data.train_images[:, 0, 0, 0], data.train_labels * 10)
        assert (data.train_images[:, 1, 0, 0] == 1).all() and (data.train_images[:, 2, 0, 0] == 2).all()
    else:
        assert_paired(data.train_images, data.train_labels)
        assert_paired(data.test_images, data.test_labels)

    info = data.info
    assert info["dataset"] == dataset and info["shape"] == list(shape) and info["seed"] == 4
    assert info["n_train"] == 30 and info["n_test"] == 20
    assert info["source"].startswith(f"torchvision.datasets.{class_name} in {folder.relative_to(tmp_path)} ")
    x = data.train_images / 255.0
    assert info["mean"] == pytest.approx(x.mean(axis=(0, 2, 3)).tolist())
    assert info["std"] == pytest.approx(x.std(axis=(0, 2, 3)).tolist())


@pytest.mark.slow
def test_offline_download_fails_fast_with_one_line(tmp_path, guard_path):
    write_params(tmp_path, {"data": {"dataset": "mnist", "root": "data/raw", "download": True}})
    msg = assert_one_line_failure(fetch_subprocess(tmp_path, guard_path), tmp_path)
    assert msg.startswith("mnist: download failed (network disabled by the test suite); tried "
                          "https://ossci-datasets.s3.amazonaws.com/mnist/, http://yann.lecun.com/exdb/mnist/.")
    assert "train-images-idx3-ubyte.gz" in msg and "in data/raw/MNIST/raw/" in msg
    assert msg.endswith("or use an embedded dataset (data.dataset: mnist-5k or digits)")


# --------------------------------------------------------------------------------------------
# Failures through the CLI entry point, in process


@pytest.fixture
def fetch_fails(workspace: Path, capsys: pytest.CaptureFixture, no_network):
    """Run ``fetch`` over a stale data/prepared; return the one error line (checked)."""

    def run(data: dict, expected_exit: int = 1) -> str:
        write_params(workspace, {"data": data})
        stale = workspace / "data" / "prepared"
        stale.mkdir(parents=True, exist_ok=True)
        (stale / "info.json").write_text("{}")
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["fetch"])
        err = capsys.readouterr().err
        assert exit_info.value.code == expected_exit
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert not stale.exists()
        return lines[0].removeprefix("error: ")

    return run


def test_missing_root_without_download(fetch_fails):
    msg = fetch_fails({"dataset": "fashion-mnist", "root": "nowhere", "download": False})
    assert msg.startswith("data.root = nowhere does not exist and data.download is false; place ")
    assert "in nowhere/FashionMNIST/raw/" in msg and "set data.download: true" in msg and "mnist-5k or digits" in msg


def test_root_that_is_a_file(fetch_fails, workspace):
    (workspace / "raw").write_text("not a folder")
    msg = fetch_fails({"dataset": "mnist", "root": "raw", "download": True})
    assert msg == "data.root = raw is a file, not a folder; point data.root at a folder"


def test_no_raw_files_without_download(fetch_fails, workspace):
    (workspace / "raw").mkdir()
    msg = fetch_fails({"dataset": "kmnist", "root": "raw", "download": False})
    assert msg.startswith("kmnist: no raw files in raw/KMNIST/raw/ and data.download is false; place "
                          "train-images-idx3-ubyte.gz, ")


def test_one_missing_file_is_named(fetch_fails, workspace):
    write_mnist_like(workspace / "raw", "MNIST", gz=False)
    (workspace / "raw" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    msg = fetch_fails({"dataset": "mnist", "root": "raw", "download": False})
    assert msg.startswith("mnist: t10k-labels-idx1-ubyte.gz not found in raw/MNIST/raw/")


@pytest.mark.parametrize("download", [False, True])
def test_truncated_idx_file(fetch_fails, workspace, download):
    write_mnist_like(workspace / "raw", "MNIST", gz=False)
    images = workspace / "raw" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    msg = fetch_fails({"dataset": "mnist", "root": "raw", "download": download})
    assert msg == ("raw/MNIST/raw/train-images-idx3-ubyte: truncated IDX file (5000 bytes, its header [60, 28, 28] "
                   "needs 47056); delete the damaged file and re-download (data.download: true), or place a good "
                   "copy there")


def test_labels_not_matching_images(fetch_fails, workspace):
    write_mnist_like(workspace / "raw", "MNIST", gz=False)
    labels = workspace / "raw" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(50, np.uint8)))        # a valid file, 50 labels for 60 images
    msg = fetch_fails({"dataset": "mnist", "root": "raw", "download": False})
    assert msg.startswith("raw/MNIST/raw: the test files hold 60 images of shape (1, 28, 28) but 50 labels; ")


def test_md5_mismatch_of_placed_archive(fetch_fails, workspace):
    write_mnist_like(workspace / "raw", "KMNIST", gz=True)
    msg = fetch_fails({"dataset": "kmnist", "root": "raw", "download": False})
    assert msg.startswith("raw/KMNIST/raw/train-images-idx3-ubyte.gz: MD5 ")
    assert "does not match torchvision's bdb82020997e1d708af4cf47b453dcf7 for kmnist" in msg


def test_damaged_gzip_with_matching_md5(fetch_fails, workspace, monkeypatch):
    written = write_mnist_like(workspace / "raw", "MNIST", gz=True)
    gz = workspace / "raw" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:300])
    import hashlib

    override_md5(monkeypatch, "MNIST", {**written, gz.name: hashlib.md5(gz.read_bytes()).hexdigest()})
    msg = fetch_fails({"dataset": "mnist", "root": "raw", "download": False})
    assert msg.startswith("raw/MNIST/raw/t10k-images-idx3-ubyte.gz: damaged gzip file (")


def test_cifar_md5_mismatch(fetch_fails, workspace, monkeypatch):
    written = write_cifar(workspace / "raw")
    override_md5(monkeypatch, "CIFAR10", written)
    batch = workspace / "raw" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-10])                   # truncated after the MD5 was taken
    msg = fetch_fails({"dataset": "cifar10", "root": "raw", "download": False})
    assert msg.startswith(f"raw/cifar-10-batches-py/data_batch_3: MD5 ")
    assert f"does not match torchvision's {written['data_batch_3']} for cifar10" in msg
    assert msg.endswith("delete the damaged file and re-download (data.download: true), or place a good copy there")


def test_cifar_offline_download(fetch_fails):
    msg = fetch_fails({"dataset": "cifar10", "root": "data/raw", "download": True})
    assert msg == ("cifar10: download failed (network disabled by the test suite); tried "
                   "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz. Either place cifar-10-python.tar.gz in "
                   "data/raw/, or its unpacked folder data/raw/cifar-10-batches-py/ (data_batch_1, data_batch_2, "
                   "data_batch_3, data_batch_4, data_batch_5, test_batch, batches.meta), or use an embedded dataset "
                   "(data.dataset: mnist-5k or digits)")


def test_test_split_too_large_for_digits(fetch_fails):
    msg = fetch_fails({"dataset": "digits", "n_test": 1795, "n_train": None}, expected_exit=2)
    assert msg == "data.n_test = 1795 leaves too few training images out of 1797; use at most 1787"
