"""The optional GPU backend (``reduce.tsne.backend`` / ``reduce.umap.backend: cuml``).

Without cuML: one ConfigError line naming the key and the fix, from the function and from the
CLI (exit 2, no traceback, nothing written). With a stand-in ``cuml`` module (no GPU here): the
parameters our config maps to cuML's constructors, and the notes when a layout cannot be given.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from pipeline import reducers
from pipeline.errors import ConfigError
from pipeline.reducers import check_config, cuml_available, embed, embed_frames
from tests.conftest import run_cli, write_params
from tests.test_reducers import blobs, make_cfg, opts

needs_no_cuml = pytest.mark.skipif(cuml_available(), reason="cuML is installed here")


@needs_no_cuml
@pytest.mark.parametrize("method, default", [("tsne", "opentsne"), ("umap", "umap-learn")])
def test_missing_cuml_is_one_config_error(method: str, default: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_config(method, backend="cuml")
    message = str(err.value)
    assert message.startswith(f"reduce.{method}.backend = cuml needs RAPIDS cuML")
    assert f"backend: {default}" in message and reducers.CUML_INSTALL in message and "\n" not in message
    with pytest.raises(ConfigError):                        # embed refuses before doing any work
        embed(blobs()[0], method, seed=0, backend="cuml")


@needs_no_cuml
def test_missing_cuml_from_the_cli(tmp_path: Path) -> None:
    write_params(tmp_path, {"reduce": {"umap": {"backend": "cuml"}}})
    proc = run_cli("reduce", "umap", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: reduce.umap.backend = cuml needs RAPIDS cuML (an NVIDIA GPU), which is not installed; "
                     f"install it ({reducers.CUML_INSTALL}) or use backend: umap-learn"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


def test_default_backends_do_not_need_cuml(monkeypatch: pytest.MonkeyPatch) -> None:
    """With cuML absent (even where it is installed), the defaults pass and only `cuml` is refused."""
    monkeypatch.setattr(reducers, "cuml_available", lambda: False)
    monkeypatch.setitem(sys.modules, "cuml", None)                 # any `import cuml` now fails
    defaults = make_cfg()
    assert (defaults.tsne.backend, defaults.umap.backend) == ("opentsne", "umap-learn")
    for method in ("tsne", "umap"):
        assert check_config(method) is None                                  # the defaults
        assert check_config(method, **getattr(defaults, method).model_dump()) is None
        with pytest.raises(ConfigError, match=f"reduce.{method}.backend = cuml needs RAPIDS cuML"):
            check_config(method, backend="cuml")


# --------------------------------------------------------------------------- a stand-in cuml module

class _Recorder:
    calls: list[dict] = []

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32                          # cuML works in float32
        d = self.kwargs["n_components"]
        return x[:, :d] + 0.0                                 # (n, d): a deterministic layout


class _FakeTSNE(_Recorder):
    def __init__(self, *, max_iter: int = 1000, **kwargs):
        self.kwargs = {"max_iter": max_iter, **kwargs}
        _Recorder.calls.append({"cls": "TSNE", **self.kwargs})


class _FakeUMAP(_Recorder):
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        _Recorder.calls.append({"cls": "UMAP", **kwargs})


@pytest.fixture
def fake_cuml(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    cuml = types.ModuleType("cuml")
    cuml.__spec__ = importlib.machinery.ModuleSpec("cuml", None)
    manifold = types.ModuleType("cuml.manifold")
    manifold.TSNE, manifold.UMAP = _FakeTSNE, _FakeUMAP
    cuml.manifold = manifold
    monkeypatch.setitem(sys.modules, "cuml", cuml)
    monkeypatch.setitem(sys.modules, "cuml.manifold", manifold)
    _Recorder.calls = []
    return _Recorder.calls


def test_cuml_tsne_parameters(fake_cuml: list[dict]) -> None:
    x, _ = blobs()
    cfg = make_cfg(tsne={"backend": "cuml"})
    emb = embed(x, "tsne", **opts("tsne", tsne={"backend": "cuml"}), seed=4)
    assert emb.coords.shape == (len(x), 2) and emb.coords.dtype == np.float32
    call = fake_cuml[-1]
    assert call["cls"] == "TSNE" and call["n_components"] == 2 and call["random_state"] == 4
    assert call["method"] == "fft" and call["init"] == "pca" and call["output_type"] == "numpy"
    assert call["max_iter"] == cfg.tsne.early_exaggeration_iter + cfg.tsne.n_iter
    assert call["exaggeration_iter"] == cfg.tsne.early_exaggeration_iter
    assert emb.info["backend"] == "cuml" and emb.info["gradient_method"] == "fft"
    embed(x, "tsne", **opts("tsne", tsne={"backend": "cuml", "method": "bh", "init": "random"}), seed=0)
    assert fake_cuml[-1]["method"] == "barnes_hut" and fake_cuml[-1]["init"] == "random"


def test_cuml_tsne_is_2d_only(fake_cuml: list[dict]) -> None:
    with pytest.raises(ConfigError, match="reduce.tsne.backend = cuml maps to 2-D only"):
        check_config("tsne", backend="cuml", n_components=3)


def test_cuml_umap_parameters_and_frames(fake_cuml: list[dict]) -> None:
    x, _ = blobs()
    cfg = make_cfg(umap={"backend": "cuml", "n_components": 3})
    emb = embed(x, "umap", **opts("umap", umap={"backend": "cuml", "n_components": 3}), seed=1)
    call = fake_cuml[-1]
    assert call["cls"] == "UMAP" and call["n_components"] == 3 and call["init"] == "spectral"
    assert call["n_neighbors"] == cfg.umap.n_neighbors and call["random_state"] == 1
    assert emb.info["backend"] == "cuml" and emb.info["notes"] == []
    frames = embed_frames([x, x * 1.5], "umap", **opts("umap", umap={"backend": "cuml", "n_components": 3}), seed=0)        # the second frame would start from the first
    assert all(not isinstance(f, Exception) for f in frames)
    assert any("cannot start from a given layout" in note for note in frames[1].info["notes"])
