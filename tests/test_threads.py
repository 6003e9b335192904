"""runtime.limit_threads: one thread for small analysis inputs, the user's own setting always wins.

Each case runs in a fresh interpreter: the limit is process-wide by design.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

_PROBE = r"""
import json, os, sys
import numpy as np                                   # OpenBLAS loaded before the call, as in a stage
from threadpoolctl import threadpool_info
from pipeline.runtime import THREAD_VARIABLES, limit_threads
done = limit_threads(int(sys.argv[1]))
import numba                                         # imported after the call (umap does this later)
print(json.dumps({"done": bool(done), "env": {v: os.environ.get(v) for v in THREAD_VARIABLES},
                  "blas": sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}),
                  "numba": numba.get_num_threads()}))
"""


def _run(n: int, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(n)], cwd=REPO, capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(REPO), **env}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to see a difference")
def test_small_inputs_run_on_one_thread() -> None:
    out = _run(1_000)
    assert out["done"] is True
    assert set(out["env"].values()) == {"1"}
    assert out["blas"] == [1] and out["numba"] == 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to see a difference")
def test_large_inputs_keep_the_library_defaults() -> None:
    out = _run(10_000)
    assert out["done"] is False and set(out["env"].values()) == {None}
    assert max(out["blas"]) > 1 and out["numba"] > 1


def test_a_thread_count_set_by_the_user_is_kept() -> None:
    out = _run(1_000, OMP_NUM_THREADS="2")
    assert out["done"] is False
    assert out["env"]["OMP_NUM_THREADS"] == "2" and out["env"]["OPENBLAS_NUM_THREADS"] is None


_NUMBA_FIRST = r"""
import json, numba, numpy as np                      # numba imported before the call (umap imported early)
from pipeline.runtime import limit_threads
done = limit_threads(500)

@numba.njit(parallel=True)
def total(x):
    s = 0.0
    for i in numba.prange(len(x)):
        s += x[i]
    return s

print(json.dumps({"done": bool(done), "numba": numba.get_num_threads(), "sum": total(np.ones(1000))}))
"""


def _run_without_thread_settings(code: str, timeout: float) -> dict:
    """Run ``code`` in a fresh Python with no thread variables in its environment (as a user
    starts it); the JSON object it prints last."""
    from pipeline.runtime import THREAD_VARIABLES

    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(REPO)}, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_numba_imported_before_the_limit_still_runs() -> None:
    """Setting NUMBA_NUM_THREADS after numba's import makes its next parallel call fail."""
    out = _run_without_thread_settings(_NUMBA_FIRST, timeout=300)
    assert out == {"done": True, "numba": 1, "sum": 1000.0}


_UNDO = r"""
import json, os
import numpy as np                                   # OpenBLAS loaded before the limit
from threadpoolctl import threadpool_info
from pipeline.runtime import THREAD_VARIABLES, limit_threads

def blas():
    return sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})

before = blas()
with limit_threads(1_000) as limit:
    inside = {"applied": bool(limit), "env": sorted({str(os.environ.get(v)) for v in THREAD_VARIABLES}), "blas": blas()}
print(json.dumps({"before": before, "inside": inside, "after": blas(), "applied_after": bool(limit),
                  "env_after": sorted({str(os.environ.get(v)) for v in THREAD_VARIABLES})}))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to see a difference")
def test_the_limit_is_undone_when_the_block_ends() -> None:
    """In a notebook or a test session the limit is a `with` block: afterwards the BLAS pool and the
    environment are as they were."""
    out = _run_without_thread_settings(_UNDO, timeout=120)
    assert out["inside"] == {"applied": True, "env": ["1"], "blas": [1]}
    assert max(out["before"]) > 1 and out["after"] == out["before"]
    assert out["applied_after"] is False and out["env_after"] == ["None"]


def test_seed_everything_turns_on_deterministic_kernels_without_importing_the_compiler() -> None:
    snippet = ("import sys, torch\n"
               "from pipeline.runtime import seed_everything\n"
               "seed_everything(0)\n"
               "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
               " 'torch._inductor.config' in sys.modules)\n"
               "seed_everything(0, graph_mode=True)\n"
               "import torch._inductor.config as c\n"
               "print(c.deterministic)\n")
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False", "True"]
