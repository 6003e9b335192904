"""Shared fixtures: temporary workspaces with tiny params, and a CLI runner.

``workspace`` gives an empty folder (cwd) with a params.yaml of tiny sizes; ``pipeline_ws``
is a session-wide workspace where fetch -> train -> extract already ran on tiny data, copied
fresh for each test that asks for it (``staged_ws``) so tests can write into it freely.
"""

from __future__ import annotations

import os
import shutil
import signal
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
    "train": {"epochs": 2, "batch_size": 64, "snapshot_every": 5, "snapshot_schedule": "linear"},
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


# Signals a test sends to a child process. How pytest was started must not change how the child
# reacts: a background job of a non-interactive shell (`pytest &` in a script, some CI runners)
# ignores SIGINT, nohup ignores SIGHUP, and a launcher may block signals; children inherit both the
# ignored dispositions and the blocked mask across exec.
CHILD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def default_signals() -> None:
    """``preexec_fn`` for a child that must react to signals as if started from a terminal."""
    for signum in CHILD_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_SIGNALS)


def run_cli(*args: str, cwd: Path, check: bool = True, env: dict | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline ARGS`` in ``cwd`` as a user would; returns the finished process."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True,
                          text=True, env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def run_in_process(ws: Path, monkeypatch: pytest.MonkeyPatch, *stages: tuple[str, ...]) -> None:
    """The stages before render, in this process (no interpreter + torch start-up per stage)."""
    import importlib

    from pipeline.config import load_params

    monkeypatch.chdir(ws)
    params = load_params(ws / "params.yaml")
    for name, *args in stages:
        importlib.import_module(f"pipeline.stages.{name}").run(params, *args)


@pytest.fixture(autouse=True)
def _thread_limits_undone():
    """A stage run in this process keeps its thread limit for the rest of the process
    (``runtime.limit_threads`` sets ``OMP_NUM_THREADS=1`` and friends). Undone after every test, so
    a later child (:func:`run_cli`) gets the threads a fresh process gets: a training run with one
    thread rounds differently from one with two, and the same-seed tests compare bytes."""
    from pipeline.runtime import THREAD_VARIABLES

    saved = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    yield
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder with tiny params.yaml; cwd is set to it."""
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder for this run that every pytest-xdist worker sees (pytest's own otherwise)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def pipeline_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fetch -> train -> extract on tiny data, once per run, shared by the xdist workers under a
    file lock (do not modify; use staged_ws)."""
    from filelock import FileLock

    root = shared_tmp(tmp_path_factory)
    ws, done = root / "pipeline_ws", root / "pipeline_ws.done"
    with FileLock(str(root / "pipeline_ws.lock")):
        if not done.exists():
            shutil.rmtree(ws, ignore_errors=True)            # a worker that failed half-way
            ws.mkdir()
            write_params(ws)
            for stage in ("fetch", "train", "extract"):
                run_cli(stage, cwd=ws)
            done.touch()
    return ws


@pytest.fixture
def staged_ws(pipeline_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of ``pipeline_ws`` (cwd set to it) that a test may change."""
    ws = tmp_path / "ws"
    shutil.copytree(pipeline_ws, ws)
    monkeypatch.chdir(ws)
    return ws


# --------------------------------------------------------------------------------------------
# One real git + DVC repository per session for the integration tests that run DVC commands
# (tests/dvc_repo.py): the whole tiny pipeline reproduced and committed once. A test asks for
# ``dvc_repo``: the shared repository, reset to the committed run before the test. Under
# pytest-xdist every test using it runs on one worker (``pytest_collection_modifyitems``), so it
# is built once per run.

DVC_REPO_FIXTURES = {"dvc_repo", "dvc_repo_session", "filters8_exp"}
# session fixtures a test may only share with the tests on its own xdist worker: fixture -> group
XDIST_GROUPS = {**dict.fromkeys(DVC_REPO_FIXTURES, "dvc_repo"), "chromium": "browser", "browser": "browser"}


@pytest.fixture(scope="session")
def dvc_repo_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared repository as built (do not use directly in a test; use ``dvc_repo``)."""
    from tests.dvc_repo import build_pipeline_repo

    return build_pipeline_repo(tmp_path_factory.mktemp("dvc_repo"))


@pytest.fixture
def dvc_repo(dvc_repo_session: Path) -> Path:
    """The shared tiny DVC repository, reset to its committed run (a test may change anything)."""
    from tests.dvc_repo import reset

    reset(dvc_repo_session)
    return dvc_repo_session


@pytest.fixture(scope="session")
def filters8_exp(dvc_repo_session: Path) -> dict[str, Any]:
    """`dvc exp run --name filters8 -S model.filters=8` in the shared repository, once: its name,
    the stages it ran and `dvc metrics diff` against the committed run."""
    import json

    from tests.dvc_repo import dvc, exp_run, reset

    reset(dvc_repo_session)
    ran = exp_run(dvc_repo_session, "filters8", "model.filters=8")
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=dvc_repo_session).stdout)
    reset(dvc_repo_session)
    return {"name": "filters8", "ran": ran, "diff": diff}


@pytest.hookimpl(tryfirst=True)                 # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `pytest -n 2 --dist loadgroup`, keep a shared fixture on one worker: the tests of the
    shared DVC repository together, those of the browser together, and the tests of a module-scoped
    fixture together (otherwise each worker would build it)."""
    loadgroup = bool(getattr(config.option, "loadgroup", False))       # set in the xdist workers
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        # the DVC repository's group first: a test that also wants the browser starts a second
        # Chromium on that worker (seconds), rather than a second DVC repository (minutes)
        group = next((XDIST_GROUPS[n] for n in sorted(names, key=lambda n: (XDIST_GROUPS.get(n) != "dvc_repo", n))
                      if n in XDIST_GROUPS), None)
        if group is None:
            info = getattr(item, "_fixtureinfo", None)
            defs = info.name2fixturedefs if info is not None else {}
            if any(d[-1].scope == "module" for name, d in defs.items() if d and name in names):
                group = item.module.__name__ if getattr(item, "module", None) else item.nodeid.split("::")[0]
        if group is None:
            continue
        item.add_marker(pytest.mark.xdist_group(group))
        if loadgroup and "@" not in item.nodeid and hasattr(item, "_id"):
            # pytest-xdist 3.8 puts the group into `item._nodeid`, which pytest 9 no longer reads
            # (it keeps `item._id`): without this every group is silently spread over the workers
            from _pytest.nodeid import coerce_node_id

            item._id = coerce_node_id(f"{item.nodeid}@{group}")


# --------------------------------------------------------------------------------------------
# The `slow` marker follows cost: after a run, list the tests not marked slow whose own run (the
# call, not shared fixtures) took longer than SLOW_SECONDS. A report, never a failure: timings
# on a busy machine are noise; mark a test that shows up here on a quiet one.

SLOW_SECONDS = 5.0
_unmarked_slow: list[tuple[float, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > SLOW_SECONDS and "slow" not in report.keywords:
        _unmarked_slow.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter) -> None:
    if _BROWSER_ARTIFACTS:                          # the screenshots the browser tests saved (test artefacts)
        terminalreporter.write_sep("-", "browser screenshots")
        for path in _BROWSER_ARTIFACTS:
            terminalreporter.write_line(str(path))
    if _unmarked_slow:
        terminalreporter.write_sep("-", f"not marked slow, over {SLOW_SECONDS:.0f} s (call only)")
        for seconds, nodeid in sorted(_unmarked_slow, reverse=True):
            terminalreporter.write_line(f"{seconds:6.1f}s {nodeid}")
