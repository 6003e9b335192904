"""A temporary git + DVC copy of this repository, for integration tests that run real DVC commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, TINY_PARAMS, deep_update

# Files the pipeline needs; data/, metrics/ and plots/ are outputs and start empty.
_COPY = ["pipeline", "models", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvc/plots", ".dvcignore",
         ".gitignore", "data/.gitignore", "data/weights/README.md", "data/raw/README.md"]


def _env() -> dict[str, str]:
    # dvc runs `python -m pipeline ...`: make `python` the interpreter running the tests
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "HIDDEN_SPACES_QUIET": "1", "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1",
            "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
            # the user's ~/.gitconfig (commit.gpgsign, hooks, init templates) must not change the tests
            "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=check)


def git(*args: str, cwd: Path) -> str:
    return run(["git", *args], cwd=cwd).stdout


def make_repo(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the pipeline into ``dest``, write tiny params (all sections kept), git init and commit."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in _COPY:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    full = yaml.safe_load((REPO / "params.yaml").read_text())
    params = deep_update(deep_update(full, TINY_PARAMS), overrides or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for folder in ("metrics", "plots"):
        (dest / folder).mkdir(exist_ok=True)
    git("init", "-q", "-b", "main", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", "tiny pipeline", cwd=dest)
    return dest


def stages_ran(output: str) -> set[str]:
    """Stage names that `dvc repro` / `dvc exp run` actually executed, from its output."""
    ran = set()
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("Running stage '"):
            ran.add(line.split("'")[1])
    return ran


def dvc_stage_names(root: Path = REPO) -> set[str]:
    """Every stage of ``root``'s dvc.yaml, foreach stages expanded (reduce@pca, ...)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {f"{name}@{item}" for name, body in stages.items() for item in body.get("foreach", [])} | \
        {name for name, body in stages.items() if "foreach" not in body}


# The shared repository draws two figure families (render.figures; every number of render.json is
# still computed): a PNG and a GIF kind, enough for DVC's side of the figures (outputs, plots,
# determinism of a forced rerun). Drawing all 72 took 20 s of each of its three renders; every
# family is drawn and checked by test_render_stage.py, test_render_colour.py and the ResNet run.
SHARED_REPO_PARAMS = {"render": {"figures": ["classifier", "evolution"]}}


def build_pipeline_repo(dest: Path) -> Path:
    """``make_repo`` + `dvc repro` of the whole pipeline, committed ("tiny run"): the session's
    shared repository (conftest's ``dvc_repo_session``); checks that every stage ran."""
    root = make_repo(dest, SHARED_REPO_PARAMS)
    out = dvc("repro", cwd=root).stdout
    assert stages_ran(out) == dvc_stage_names(root), out
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "tiny run", cwd=root)
    return root


def reset(root: Path) -> None:
    """Back to the committed run: params, dvc.lock, metrics and plots from git, files a test added
    removed (data/weights included), DVC outputs checked out from the cache."""
    git("reset", "-q", "--hard", "HEAD", cwd=root)
    git("clean", "-fdq", cwd=root)
    run(["git", "clean", "-fdxq", "--", "data/weights"], cwd=root)
    dvc("checkout", "--force", cwd=root)


def exp_run(root: Path, name: str, *sets: str, targets: tuple[str, ...] = ()) -> set[str]:
    """`dvc exp run [targets] --name NAME -S ...`; returns the stages that ran."""
    args = [a for s in sets for a in ("-S", s)]
    return stages_ran(dvc("exp", "run", *targets, "--name", name, *args, cwd=root).stdout)
