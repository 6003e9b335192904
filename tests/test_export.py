"""export stage: ONNX and TorchScript files that reproduce the PyTorch model on the test split."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.stages import export as ex
from tests.conftest import REPO, run_cli, run_in_process, write_params


def _normalised_test_split(ws: Path, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    images = np.load(ws / "data/prepared/test_images.npy")                 # (N, C, H, W) uint8
    mean = np.asarray(meta["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32), images


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")          # torch.jit.load is deprecated in torch 2.9+
def test_export_matches_pytorch_on_the_test_split(staged_ws: Path):
    import onnxruntime as ort

    from pipeline.models import load_model

    proc = run_cli("export", cwd=staged_ws)
    out = staged_ws / "data/export"
    info = json.loads((out / "export.json").read_text())
    meta = json.loads((staged_ws / "data/model/model.json").read_text())
    assert info["input"]["shape"] == ["batch", *meta["input_shape"]]
    assert info["mean"] == meta["mean"] and info["std"] == meta["std"] and info["classes"] == meta["classes"]
    assert info["output"]["name"] == "logits" and set(info["files"]) == {"onnx", "torchscript"}

    x, _ = _normalised_test_split(staged_ws, meta)
    model, _ = load_model(staged_ws / "data/model")
    with torch.inference_mode():
        reference = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(out / info["files"]["onnx"]), providers=["CPUExecutionProvider"])
    onnx_out = np.concatenate([session.run(["logits"], {"input": x[i:i + 37]})[0]      # odd batch sizes:
                               for i in range(0, len(x), 37)])                          # dynamic batch axis
    scripted = torch.jit.load(str(out / info["files"]["torchscript"]))
    with torch.inference_mode():
        ts_out = scripted(torch.from_numpy(x)).numpy()
        one = scripted(torch.from_numpy(x[:1])).numpy()
    for got in (onnx_out, ts_out):
        assert got.shape == reference.shape
        np.testing.assert_array_equal(got.argmax(1), reference.argmax(1))
        assert np.abs(got - reference).max() < 1e-3
    np.testing.assert_allclose(one, reference[:1], atol=1e-5)

    metrics = json.loads((staged_ws / "metrics/export.json").read_text())
    assert metrics["n_test"] == len(x)
    for fmt in ("onnx", "torchscript"):
        assert metrics[fmt]["argmax_agreement"] == 1.0 and metrics[fmt]["argmax_mismatches"] == 0
        assert 0.0 <= metrics[fmt]["max_abs_diff"] < 1e-3
    assert metrics["onnx"]["max_abs_diff"] == pytest.approx(float(np.abs(onnx_out - reference).max()), abs=1e-6)
    assert "max |difference|" in proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr                 # torch's deprecation notices kept quiet

    # the same bytes wherever the project and torch live: no trace call stacks with absolute paths
    with zipfile.ZipFile(out / info["files"]["torchscript"]) as archive:
        contents = b"".join(archive.read(entry) for entry in archive.infolist())
    for place in (REPO, Path(torch.__file__).parent):
        assert str(place).encode() not in contents
        assert str(place).encode() not in (out / info["files"]["onnx"]).read_bytes()


def test_compare_outputs_counts_mismatches():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.4]], dtype=np.float32)
    other = ref.copy()
    other[2] = [0.4, 0.6]
    m = ex.compare_outputs(ref, other, "classify")
    assert m["argmax_mismatches"] == 1 and m["argmax_agreement"] == pytest.approx(2 / 3)
    assert m["max_abs_diff"] == pytest.approx(0.2)
    assert set(ex.compare_outputs(ref, other, "reconstruct")) == {"max_abs_diff"}


def test_export_without_onnx_explains_how_to_install(staged_ws: Path, monkeypatch, capsys):
    import sys

    from pipeline import cli

    monkeypatch.setitem(sys.modules, "onnxruntime", None)            # import fails as if not installed
    with pytest.raises(SystemExit) as exc:
        cli.main(["export"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "onnxruntime" in err and "pip install onnx onnxruntime" in err
    assert not (staged_ws / "data/export").exists()


def test_export_torchscript_only(staged_ws: Path):
    write_params(staged_ws, {"export": {"formats": ["torchscript"]}})
    run_cli("export", cwd=staged_ws)
    assert sorted(p.name for p in (staged_ws / "data/export").iterdir()) == ["export.json", "model.torchscript.pt"]
    metrics = json.loads((staged_ws / "metrics/export.json").read_text())
    assert set(metrics) == {"n_test", "torchscript"}


@pytest.mark.slow
def test_export_autoencoder_full_model(workspace: Path, monkeypatch: pytest.MonkeyPatch):
    write_params(workspace, {"model": {"arch": "conv_ae", "filters": 4, "latent_dim": 8},
                             "train": {"epochs": 1, "snapshot_every": 0}})
    run_in_process(workspace, monkeypatch, ("fetch",), ("train",))
    run_cli("export", cwd=workspace)
    info = json.loads((workspace / "data/export/export.json").read_text())
    assert info["task"] == "reconstruct" and info["output"]["name"] == "reconstruction"
    assert info["output"]["shape"] == ["batch", 1, 28, 28]
    metrics = json.loads((workspace / "metrics/export.json").read_text())
    for fmt in ("onnx", "torchscript"):
        assert metrics[fmt]["max_abs_diff"] < 1e-3 and "argmax_agreement" not in metrics[fmt]
