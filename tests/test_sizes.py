"""Real sizes: numba's on-disk cache for UMAP, so a new process does not compile umap-learn again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

def _python(script: str, numba_cache: str) -> str:
    """The output of ``script`` in a new interpreter with this checkout's pipeline and numba's
    on-disk cache in ``numba_cache``; the test fails with its stderr if it fails."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_CACHE_DIR": numba_cache}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return run.stdout


_FIT = """
import numpy as np
from pipeline.reducers import embed
x = np.random.default_rng(0).normal(size=(80, 6))
print(embed(x, "umap", seed=0, n_neighbors=5, n_epochs=20).coords[:2].tolist())
"""


@pytest.mark.slow
def test_umap_compiles_into_the_on_disk_cache(tmp_path) -> None:
    """The first process writes umap-learn's compiled functions (which umap-learn itself does not
    mark cache=True, e.g. its layout optimiser) into NUMBA_CACHE_DIR; a second gets the same map."""
    cache = tmp_path / "numba"
    first = _python(_FIT, str(cache))
    files = [p.name for p in cache.rglob("*.nbi")]
    assert any(name.startswith("layouts.") for name in files), files[:20]    # umap/layouts.py: not cache=True upstream
    assert _python(_FIT, str(cache)) == first


_DISPATCHERS = """
import json, sys, numba
from numba.core.dispatcher import Dispatcher

def state():
    return {f"{obj.py_func.__module__}.{obj.py_func.__name__}": [sorted(str(s) for s in obj.signatures),
                                                                 obj._can_compile]
            for name, module in sorted(sys.modules.items()) if name.startswith("pynndescent.")
            for obj in vars(module).values() if isinstance(obj, Dispatcher)}
"""

_EAGER = _DISPATCHERS + """
import umap                                                  # numba compiles as pynndescent declares
print(json.dumps(state()))
"""

_DEFERRED = _DISPATCHERS + """
import numpy as np
from pipeline import reducers
x = np.random.default_rng(0).normal(size=(300, 8))
reducers.embed(x, "umap", seed=0, n_neighbors=5, n_epochs=20)              # exact neighbours
deferred = {f"{d.py_func.__module__}.{d.py_func.__name__}" for d, _ in reducers._DEFERRED}
untouched = all(not d.signatures for d, _ in reducers._DEFERRED)
reducers._compile_deferred()                                 # what a fit with NN-descent does first
print(json.dumps({"deferred": sorted(deferred), "untouched": untouched, "state": state()}))
"""


_TSNE = _DISPATCHERS + """
import numpy as np
from pipeline import reducers
x = np.random.default_rng(0).normal(size=(300, 8))
reducers.embed(x, "tsne", seed=0, early_exaggeration_iter=10, n_iter=20)    # openTSNE, exact neighbours
# numba compiles a function with declared signatures and closes it to others (_can_compile False)
print(json.dumps({"imported": "pynndescent" in sys.modules,
                  "declared_compiled": sorted(name for name, (_, can_compile) in state().items() if not can_compile)}))
"""


def test_tsne_compiles_none_of_pynndescent() -> None:
    """openTSNE imports pynndescent during every fit (to see whether it is installed), which
    compiled pynndescent's declared-signature functions: 12 s per worker process on a fresh
    machine. Under reducers.numba_disk_cache they are imported and left uncompiled."""
    from pipeline.reducers import numba_cache_dir

    got = json.loads(_python(_TSNE, numba_cache_dir()))                   # the suite's cache, shared
    assert got == {"imported": True, "declared_compiled": []}


@pytest.mark.slow
def test_pynndescent_is_compiled_only_for_nn_descent_and_then_as_at_import() -> None:
    """umap-learn's import compiles pynndescent's declared-signature functions (12 of 16 s on a
    fresh machine) that exact neighbours never call: they are deferred, a fit with exact
    neighbours compiles none of them, and before NN-descent each is compiled with exactly the
    signatures an ordinary import gives it, closed to others (so the same overloads run)."""
    from pipeline.reducers import numba_cache_dir

    cache = numba_cache_dir()                                    # the suite's, shared
    expected, got = json.loads(_python(_EAGER, cache)), json.loads(_python(_DEFERRED, cache))
    declared = {name for name, (signatures, can_compile) in expected.items() if not can_compile}
    assert len(declared) >= 20 and set(got["deferred"]) == declared          # every one, and only those
    assert got["untouched"]
    assert got["state"] == expected


def test_numba_cache_dir_defaults_to_the_user_cache(monkeypatch, tmp_path) -> None:
    from pipeline.reducers import numba_cache_dir

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert numba_cache_dir() == str(tmp_path / "hidden-spaces" / "numba")
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/elsewhere")
    assert numba_cache_dir() == "/elsewhere"


def test_marker_size_and_alpha_follow_the_number_of_points() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    from pipeline.plots.common import class_colors, draw_classes, marker_alpha, marker_size

    assert marker_alpha(1000) == 0.75 and marker_alpha(2000) == 0.75
    assert 0.2 < marker_alpha(10_000) < marker_alpha(5000) < 0.75
    assert marker_alpha(70_000) == 0.2
    assert marker_size(70_000) < marker_size(10_000) < marker_size(1000)
    ax = Figure().add_subplot()
    coords = np.random.default_rng(0).normal(size=(70_000, 2))
    artist = draw_classes(ax, coords, np.arange(70_000) % 10, class_colors(10))
    assert artist.get_alpha() == 0.2 and artist.get_sizes()[0] == marker_size(70_000)
