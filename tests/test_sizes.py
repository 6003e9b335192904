"""Real sizes: numba's on-disk cache for UMAP, so a new process does not compile umap-learn again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

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
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_CACHE_DIR": str(cache)}
    first = subprocess.run([sys.executable, "-c", _FIT], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    files = [p.name for p in cache.rglob("*.nbi")]
    assert any(name.startswith("layouts.") for name in files), files[:20]    # umap/layouts.py: not cache=True upstream
    second = subprocess.run([sys.executable, "-c", _FIT], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and second.stdout == first.stdout


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
