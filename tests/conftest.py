"""Shared fixtures: temporary workspaces with tiny params, and a CLI runner.

``workspace`` gives an empty folder (cwd) with a params.yaml of tiny sizes; ``pipeline_ws``
is a session-wide workspace where fetch -> train -> extract already ran on tiny data, copied
fresh for each test that asks for it (``staged_ws``) so tests can write into it freely.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.browser import SAVED as _BROWSER_ARTIFACTS
from tests.browser import browser, chromium  # noqa: F401  (fixtures: a real headless Chromium)

os.environ.setdefault("HIDDEN_SPACES_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]

# Small enough for seconds, big enough that every class appears in every split.
TINY_PARAMS: dict[str, Any] = {
    "data": {"dataset": "mnist-5k", "n_train": 600, "n_test": 200},
    "model": {"arch": "lenet"},
    "train": {"epochs": 2, "batch_size": 64, "snapshot_every": 5},
    "extract": {"n_samples": 120},
    "reduce": {"pca_dims": 20, "tsne": {"perplexity": 10, "n_iter": 100, "early_exaggeration_iter": 50},
               "umap": {"n_neighbors": 8, "n_epochs": 50}},
}


def deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def write_params(directory: Path, overrides: dict | None = None, base: dict | None = None) -> Path:
    params = deep_update(TINY_PARAMS if base is None else base, overrides or {})
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_cli(*args: str, cwd: Path, check: bool = True, env: dict | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline ARGS`` in ``cwd`` as a user would; returns the finished process."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True,
                          text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder with tiny params.yaml; cwd is set to it."""
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def pipeline_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fetch -> train -> extract on tiny data, once per session (do not modify; use staged_ws)."""
    ws = tmp_path_factory.mktemp("pipeline_ws")
    write_params(ws)
    for stage in ("fetch", "train", "extract"):
        run_cli(stage, cwd=ws)
    return ws


@pytest.fixture
def staged_ws(pipeline_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of ``pipeline_ws`` (cwd set to it) that a test may change."""
    ws = tmp_path / "ws"
    shutil.copytree(pipeline_ws, ws)
    monkeypatch.chdir(ws)
    return ws


def pytest_terminal_summary(terminalreporter) -> None:
    """List the screenshots the browser tests saved (test artefacts)."""
    if _BROWSER_ARTIFACTS:
        terminalreporter.write_sep("-", "browser screenshots")
        for path in _BROWSER_ARTIFACTS:
            terminalreporter.write_line(str(path))
