"""A real server for a test: started in its own process group on 127.0.0.1, polled until it
answers, stopped (SIGTERM, then SIGKILL) at the end. Used for TensorBoard (test_projector.py) and
moto's S3 server (test_remote_s3.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from tests.conftest import default_signals


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 30.0) -> tuple[int, bytes, str]:
    """Status, body and content type of ``url`` (an HTTP error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


@contextlib.contextmanager
def serve(cmd: list[str], port: int, ready_path: str, log_path: Path, *, name: str, wait: float = 120,
          poll: float = 0.5, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``cmd`` (which listens on ``port``) until ``ready_path`` answers 200; yields the base URL.
    A server that exits or does not answer within ``wait`` seconds fails the test with its log."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env, preexec_fn=default_signals)     # SIGTERM stops it, however pytest was started
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait
        while True:                                          # bounded: `wait` seconds of polls
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if get(f"{base}{ready_path}", timeout=5)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} did not answer in {wait:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(poll)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
