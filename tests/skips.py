"""Environment guards that skip a test where this machine cannot run it (no root for a tmpfs, no
browser, a project folder above the temporary folder), and fail it instead under
``HIDDEN_SPACES_NO_SKIPS=1``. CI sets it (.ci/run installs the browser and runs as root), so there
every guarded test runs and can fail; a developer's laptop without them still gets a skip that
says why."""

from __future__ import annotations

import os

import pytest

NO_SKIPS_VARIABLE = "HIDDEN_SPACES_NO_SKIPS"


def skip_or_fail(reason: str) -> None:
    """``pytest.skip(reason)``, or ``pytest.fail`` when this run must not skip."""
    if os.environ.get(NO_SKIPS_VARIABLE) == "1":
        pytest.fail(f"{NO_SKIPS_VARIABLE}=1 and this test cannot run here: {reason}", pytrace=False)
    pytest.skip(reason)
