"""Interruptions: SIGKILL a stage at a random moment, rerun `dvc repro`, get the uninterrupted outputs.

A killed stage exits non-zero, so DVC caches nothing; the rerun clears the stage's outputs
(``artifacts.stage_outputs``) and every file is written atomically, so no half-written file
survives into the result. Train and extract are deterministic on the CPU, so "the same outputs"
means byte-identical weights and activations, and a rerun after an interrupted train does not
rerun extract (its input, data/model, hashes the same).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.dvc_repo import _env, dvc, make_repo, stages_ran

pytestmark = pytest.mark.slow


def _digest(folder: Path) -> dict[str, bytes]:
    """Every file's bytes under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict[str, dict[str, bytes]]]:
    # more epochs than the other tests, so the kill lands inside training, not only in start-up
    root = make_repo(tmp_path_factory.mktemp("faults"), {"train": {"epochs": 4}})
    dvc("repro", "extract", cwd=root)
    reference = {"model": _digest(root / "data/model"), "activations": _digest(root / "data/activations")}
    return root, reference


def _kill_during(root: Path, stage: str, delay: float) -> int:
    """Start `dvc repro --force -s <stage>`, SIGKILL its whole process group after ``delay`` s."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force", "-s", stage], cwd=root, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


@pytest.mark.parametrize("stage, output", [("train", "model"), ("extract", "activations")])
def test_sigkill_then_repro_gives_uninterrupted_outputs(repo, stage, output):
    root, reference = repo
    seed = random.randrange(10**6)
    delay = random.Random(seed).uniform(1.0, 6.0)
    code = _kill_during(root, stage, delay)
    print(f"{stage}: killed after {delay:.2f} s (seed {seed}), exit {code}")
    ran = stages_ran(dvc("repro", "extract", cwd=root).stdout)
    assert _digest(root / f"data/{output}") == reference[output], f"seed {seed}, delay {delay:.2f}"
    # the rerun gives the same bytes, so DVC sees nothing new downstream: train reruns, extract does not
    assert ran <= {stage}, (ran, f"seed {seed}, delay {delay:.2f}")
    assert not list((root / "data").rglob("*.partial")) and not list((root / "data").rglob(".*.tmp"))
    status = dvc("status", "extract", cwd=root).stdout
    assert "up to date" in status or status.strip() == "", status
