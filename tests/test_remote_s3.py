"""A DVC remote on a real S3-compatible server: moto's standalone server on 127.0.0.1, run by the test.

From the session's tiny DVC repository (tests/dvc_repo.py) through a bare git repository: one
clone adds the remote as the README says and pushes; a fresh clone pulls and finds `dvc repro`
has nothing to do; an experiment run there goes out with `dvc exp push` and comes back into a
third clone with `dvc exp pull`. Needs the ``s3`` extra (dvc-s3) and moto's server (both in the
``test`` extra); skipped, with that reason, only where they are missing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.dvc_repo import _env, git, stages_ran
from tests.servers import free_port, serve

BUCKET = "hidden-spaces-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing",
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def _missing() -> str | None:
    need = {"dvc_s3": "dvc-s3", "moto": "moto[server]", "flask": "moto[server]", "boto3": "boto3"}
    lacking = sorted({pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None})
    if lacking:
        return (f"needs {', '.join(lacking)}: pip install -e '.[test]' (or '.[s3]' and moto[server])")
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3 server on 127.0.0.1 (own process group), with an empty bucket."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port, "/moto-api/",
               log_path, name="moto server", wait=60, poll=0.2, env={**os.environ, **CREDENTIALS}) as url:
        _s3(url).create_bucket(Bucket=BUCKET)
        yield url


def _s3(url: str):
    import boto3

    return boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")


def _objects(url: str, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in _s3(url).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


def _dvc(*args: str, cwd: Path) -> str:
    """A real `dvc` command with the test credentials; its stdout (stderr too on failure)."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                          env={**_env(), **CREDENTIALS}, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc.stdout


def _clone(bare: Path, dest: Path) -> Path:
    git("clone", "-q", str(bare), str(dest), cwd=bare.parent)
    return dest


def test_push_pull_repro_and_experiments_through_s3(dvc_repo: Path, s3_endpoint: str, tmp_path: Path) -> None:
    bare = tmp_path / "origin.git"
    git("clone", "-q", "--bare", str(dvc_repo), str(bare), cwd=tmp_path)

    # 1. one clone sets up the remote (README: dvc remote add -d ..., commit .dvc/config) and pushes;
    #    it shares the cache of the run that produced the outputs, as a user's own checkout would
    first = _clone(bare, tmp_path / "first")
    _dvc("cache", "dir", "--local", str(dvc_repo / ".dvc" / "cache"), cwd=first)
    _dvc("remote", "add", "-d", "storage", f"s3://{BUCKET}/hidden-spaces", cwd=first)
    _dvc("remote", "modify", "storage", "endpointurl", s3_endpoint, cwd=first)
    git("commit", "-q", "-am", "DVC remote", cwd=first)
    git("push", "-q", "origin", "HEAD", cwd=first)
    assert _objects(s3_endpoint, "hidden-spaces/") == set()
    out = _dvc("push", cwd=first)
    pushed = _objects(s3_endpoint, "hidden-spaces/")
    assert pushed and "pushed" in out, out

    # 2. a fresh clone pulls every output; then `dvc repro` has nothing to run
    second = _clone(bare, tmp_path / "second")
    assert not (second / "data" / "model").exists()
    _dvc("pull", cwd=second)
    for rel in ("data/model/model.safetensors", "data/activations/layers.json", "data/projector/metadata.tsv",
                "data/embeddings/tsne/info.json", "data/export/model.onnx"):
        assert (second / rel).read_bytes() == (dvc_repo / rel).read_bytes(), rel
    out = _dvc("repro", cwd=second)
    assert stages_ran(out) == set(), out
    assert "up to date" in _dvc("status", cwd=second)

    # 3. an experiment (only the projector reruns) goes out with `dvc exp push`: git refs to the
    #    bare repository, its outputs to S3 ...
    out = _dvc("exp", "run", "--name", "s3-exp", "-S", "projector.max_points=50", cwd=second)
    assert stages_ran(out) == {"projector"}, out
    _dvc("exp", "push", "origin", "s3-exp", cwd=second)
    assert len(_objects(s3_endpoint, "hidden-spaces/")) > len(pushed)      # the new projector files
    assert "s3-exp" in _dvc("exp", "list", "--name-only", "origin", cwd=second)

    # ... and comes back into a third clone with `dvc exp pull`, outputs included
    third = _clone(bare, tmp_path / "third")
    _dvc("exp", "pull", "origin", "s3-exp", cwd=third)
    assert "s3-exp" in _dvc("exp", "list", "--name-only", cwd=third)
    _dvc("exp", "apply", "s3-exp", cwd=third)
    rows = (third / "data" / "projector" / "metadata.tsv").read_text().splitlines()
    assert len(rows) == 1 + 50                                               # header + the capped points
    assert "up to date" in _dvc("status", cwd=third)
