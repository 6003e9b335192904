"""Interruptions: SIGKILL a stage in the middle, rerun `dvc repro`, get the uninterrupted outputs.

A killed stage exits non-zero, so DVC caches nothing; the rerun clears the stage's outputs
(``artifacts.stage_outputs``) and every file is written atomically, so no half-written file
survives into the result. Train and extract are deterministic on the CPU, so "the same outputs"
means byte-identical weights and activations: those of the session's committed run
(conftest's ``dvc_repo``); and the rerun reruns only the killed stage (after an interrupted train,
extract's input data/model hashes the same, so extract does not rerun).

The moment of the kill is drawn from a fixed seed (the same every run; change ``SEED`` to try
others): right after the n-th intermediate file of the stage is on disk, so the stage has
started, and the test checks that the file the stage writes last is not there yet, so it had
not finished.
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

from pipeline import paths
from tests.dvc_repo import _env, dvc, stages_ran

pytestmark = pytest.mark.slow

SEED = 20251130

# stage -> (its output folder, intermediate files it writes while it runs, the file it writes last:
# its completion marker, paths.COMPLETE_WHEN)
STAGES = {
    "train": (str(paths.MODEL), "snapshots/step_*.safetensors", paths.COMPLETE_WHEN[paths.MODEL][0]),
    "extract": (str(paths.ACTIVATIONS), "snapshots/step_*", paths.COMPLETE_WHEN[paths.ACTIVATIONS][0]),
}


def _digest(folder: Path) -> dict[str, bytes]:
    """Every file's bytes under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _kill_when(root: Path, stage: str, folder: Path, pattern: str, last: str, n: int) -> tuple[int, int]:
    """Start `dvc repro --force -s <stage>`; once DVC has removed the committed outputs, SIGKILL its
    process group as soon as ``n`` files match ``folder/pattern``. Returns (files seen, exit code)."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force", "-s", stage], cwd=root, env=_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    seen, cleared, deadline = 0, False, time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen = len(list(folder.glob(pattern))) if folder.is_dir() else 0
            if not cleared:                       # the old run's files are still there (or being removed)
                cleared = seen == 0 and not (folder / last).exists()
            elif seen >= n:
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return seen, proc.wait()


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_then_repro_gives_uninterrupted_outputs(dvc_repo, stage):
    root = dvc_repo
    out, pattern, last = STAGES[stage]
    reference = {"model": _digest(root / "data/model"), "activations": _digest(root / "data/activations")}
    produced = len(list((root / out).glob(pattern)))             # in the committed, uninterrupted run
    assert produced >= 3 and (root / out / last).exists(), (produced, sorted(reference))
    n = random.Random(f"{SEED}-{stage}").randint(1, produced - 2)

    seen, code = _kill_when(root, stage, root / out, pattern, last, n)
    print(f"{stage}: SIGKILL after {seen} of {produced} {pattern} (seed {SEED}), exit {code}")
    assert seen >= n and code == -signal.SIGKILL, f"the stage ended before the kill ({seen} files, exit {code})"
    assert not (root / out / last).exists(), f"{stage} had already written {last}: the kill came too late"

    ran = stages_ran(dvc("repro", "extract", cwd=root).stdout)
    # nothing downstream reruns; the killed stage reruns, or DVC restores it from its run-cache
    # (extract, whose outputs are all cached), so it may not show as run
    assert ran <= {stage}, ran
    assert _digest(root / "data/model") == reference["model"]
    assert _digest(root / "data/activations") == reference["activations"]
    assert not list((root / "data").rglob("*.partial")) and not list((root / "data").rglob(".*.tmp"))
    status = dvc("status", "extract", cwd=root).stdout
    assert "up to date" in status or status.strip() == "", status
