"""A full disk during extract: one line, exit 1, nothing left behind, never a SIGBUS.

Extract streams every layer into memory-mapped files. A write through a memory map into a sparse
file on a full disk is a SIGBUS (exit 135, partial files left to fill the disk), so extract checks
the free space against the size it will write before it starts, and allocates each file's blocks
before writing through the map (a full disk is then an ordinary error, and the stage's outputs are
removed as after any other). Tried on a real, small tmpfs mounted under the workspace's data/;
skipped, with the reason, where mounting is not allowed (not root, no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import paths
from tests.conftest import run_cli
from tests.skips import skip_or_fail

pytestmark = pytest.mark.slow

TMPFS_SIZE = "4m"      # the tiny workspace's prepared data and model fit (~2.5 MiB), its activations (~8 MiB) do not

# Test-only startup hook for the second case: report a huge free space, so extract gets past its
# check and meets the full disk when it allocates the files.
SITECUSTOMIZE = '''\
import collections
import shutil

_usage = collections.namedtuple("usage", "total used free")
shutil.disk_usage = lambda path: _usage(2**50, 0, 2**50)
'''


@pytest.fixture
def small_disk(staged_ws: Path):
    """The staged workspace with data/ on a 4 MiB tmpfs (prepared data and model copied onto it)."""
    data, saved = staged_ws / "data", staged_ws / "data_on_disk"
    data.rename(saved)
    data.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(data)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        data.rmdir()
        saved.rename(data)
        skip_or_fail(f"cannot mount a tmpfs here ({(proc.stderr or proc.stdout).strip() or proc.returncode}); "
                    f"the full-disk case needs root or CAP_SYS_ADMIN")
    try:
        for name in ("prepared", "model"):
            shutil.copytree(saved / name, data / name)
        yield staged_ws
    finally:
        subprocess.run(["umount", str(data)], check=False)


def _one_line_failure(proc: subprocess.CompletedProcess, ws: Path) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1, proc.stderr
    assert not (ws / paths.ACTIVATIONS).exists()
    assert not list((ws / "data").rglob("*.partial")) and not list((ws / "data").rglob(".*.tmp"))
    return lines[-1].removeprefix("error: ")


def test_extract_checks_free_space_before_it_starts(small_disk: Path):
    free_before = shutil.disk_usage(small_disk / "data").free
    message = _one_line_failure(run_cli("extract", cwd=small_disk, check=False), small_disk)
    assert re.fullmatch(r"data/activations: the activations of \d+ layers and 5 snapshots need [\d.]+ MiB, but only "
                        r"[\d.]+ MiB are free there; free disk space, or lower extract.n_samples, set "
                        r"extract.dtype: float16 or list fewer extract.layers", message), message
    assert shutil.disk_usage(small_disk / "data").free == free_before


def test_a_full_disk_while_allocating_is_an_error_not_a_sigbus(small_disk: Path, tmp_path: Path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    free_before = shutil.disk_usage(small_disk / "data").free
    from tests.conftest import REPO

    proc = run_cli("extract", cwd=small_disk, check=False, env={"PYTHONPATH": f"{hook}:{REPO}"})
    message = _one_line_failure(proc, small_disk)
    assert message.startswith("data/activations: disk full while reserving "), message
    assert shutil.disk_usage(small_disk / "data").free == free_before
