"""Stale caches: an input changed, so DVC must not say "up to date".

The code deps of every stage are checked by tests/test_dvc_deps.py (and, through real DVC, by
tests/test_dvc_pipeline.py); here the raw data: the files fetch reads under ``data.root`` are a
dependency of fetch, so swapping in other (valid) label files reruns fetch, and the new labels
reach data/prepared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.dvc_repo import dvc, make_repo, stages_ran
from tests.test_datasets import idx_bytes, write_mnist_like

pytestmark = pytest.mark.slow


def test_swapping_raw_label_files_reruns_fetch(tmp_path: Path):
    root = make_repo(tmp_path / "repo", {"data": {"dataset": "mnist", "download": False, "root": "data/raw",
                                                  "n_train": None, "n_test": None}})
    write_mnist_like(root / "data/raw", "MNIST", n_train=60, n_test=40, gz=False)
    assert stages_ran(dvc("repro", "fetch", cwd=root).stdout) == {"fetch"}
    before = np.load(root / "data/prepared/test_labels.npy")
    assert "up to date" in dvc("status", "fetch", cwd=root).stdout       # nothing fetch wrote counts as a change

    # other valid labels for the same images: a different permutation of the same classes
    label_file = root / "data/raw/MNIST/raw/t10k-labels-idx1-ubyte"
    swapped = np.roll(before, 1).astype(np.uint8)
    assert (swapped != before).any()
    label_file.write_bytes(idx_bytes(swapped))

    status = json.loads(dvc("status", "--json", "fetch", cwd=root).stdout)
    assert "fetch" in status and any("data/raw" in (entry.get("changed deps") or {})
                                     for entry in status["fetch"] if isinstance(entry, dict)), status
    assert stages_ran(dvc("repro", "fetch", cwd=root).stdout) == {"fetch"}
    np.testing.assert_array_equal(np.load(root / "data/prepared/test_labels.npy"), swapped)
    assert stages_ran(dvc("repro", "fetch", cwd=root).stdout) == set()
