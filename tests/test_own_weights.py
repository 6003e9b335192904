"""Bring your own weights: ``model.weights`` + ``train.epochs: 0`` analyses given weights exactly;
wrong weights or a disagreeing config beside them give one-line errors; DVC reruns train when the
weights file under data/weights/ is replaced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.artifacts import load_safetensors, save_safetensors
from tests.conftest import REPO, deep_update, run_cli, write_params


def _metrics(ws: Path) -> dict:
    return json.loads((ws / "metrics/train/metrics.json").read_text())


def _own_weights(ws: Path, with_config: bool = False) -> Path:
    """Copy the trained weights out of the stage's outputs (a train rerun deletes data/model)."""
    dest = ws / "data/weights/mine.safetensors"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ws / "data/model/model.safetensors", dest)
    if with_config:
        shutil.copy(ws / "data/model/model.json", dest.with_suffix(".json"))
    return dest


def _train_error(capsys: pytest.CaptureFixture, code: int = 1) -> str:
    """Run ``python -m pipeline train`` in-process (cwd: the workspace) and return its one error line."""
    from pipeline import cli

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(["train"])
    err = capsys.readouterr().err
    assert exc.value.code == code, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.slow                        # train and extract as two processes
def test_analyse_only_reproduces_the_run_exactly(staged_ws: Path):
    before = _metrics(staged_ws)
    original = load_safetensors(staged_ws / "data/model/model.safetensors")
    weights = _own_weights(staged_ws, with_config=True)
    write_params(staged_ws, {"model": {"weights": str(weights.relative_to(staged_ws))}, "train": {"epochs": 0}})
    run_cli("train", cwd=staged_ws)
    after = _metrics(staged_ws)
    assert after["test"]["accuracy"] == before["test"]["accuracy"]
    assert after["test"]["loss"] == before["test"]["loss"]
    assert after["per_class_accuracy"] == before["per_class_accuracy"]
    saved = load_safetensors(staged_ws / "data/model/model.safetensors")
    assert saved.keys() == original.keys()
    assert all(saved[k].equal(original[k]) for k in original)          # the exact weights, not retrained
    meta = json.loads((staged_ws / "data/model/model.json").read_text())
    assert meta["model"]["weights"] == "data/weights/mine.safetensors"
    run_cli("extract", cwd=staged_ws)                                   # the analysis runs on them
    assert json.loads((staged_ws / "data/activations/layers.json").read_text())["n"] == 120


def test_weights_of_another_architecture_name_the_first_mismatch(staged_ws: Path, capsys):
    weights = _own_weights(staged_ws)
    write_params(staged_ws, {"model": {"weights": str(weights), "filters": 8}, "train": {"epochs": 0}})
    line = _train_error(capsys)
    assert "layers.conv1.weight" in line and "(6, 1, 5, 5)" in line and "(8, 1, 5, 5)" in line
    assert not (staged_ws / "data/model").exists()                      # no half-written outputs

    tensors = load_safetensors(weights)
    tensors["extra.weight"] = tensors["layers.logits.bias"].clone()
    save_safetensors(weights, tensors)
    write_params(staged_ws, {"model": {"weights": str(weights)}, "train": {"epochs": 0}})
    line = _train_error(capsys)
    assert "unexpected tensor 'extra.weight'" in line


def test_pickled_or_missing_weights_are_refused(staged_ws: Path, capsys):
    bad = staged_ws / "data/weights/model.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x80\x04not a safetensors file")
    write_params(staged_ws, {"model": {"weights": str(bad)}, "train": {"epochs": 0}})
    assert "not a valid safetensors file" in _train_error(capsys)
    write_params(staged_ws, {"model": {"weights": "nowhere.safetensors"}, "train": {"epochs": 0}})
    assert "nowhere.safetensors" in _train_error(capsys)
    write_params(staged_ws, {"train": {"epochs": 0}})
    assert "model.weights" in _train_error(capsys, code=2)             # params contradict each other: exit 2


def test_config_beside_the_weights_must_agree(staged_ws: Path, capsys):
    weights = _own_weights(staged_ws, with_config=True)
    write_params(staged_ws, {"model": {"weights": str(weights), "activation": "relu"}, "train": {"epochs": 0}})
    line = _train_error(capsys)
    assert "mine.json" in line and "model.activation = null" in line and "relu" in line

    config = json.loads(weights.with_suffix(".json").read_text())
    del config["model"]
    weights.with_suffix(".json").write_text(json.dumps(config))
    write_params(staged_ws, {"model": {"weights": str(weights)}, "train": {"epochs": 0}})
    assert "no `model` section" in _train_error(capsys)


def test_train_depends_on_the_weights_folder():
    """dvc.yaml itself (not a copy a test edited) lists data/weights as a train dependency."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert "data/weights" in spec["stages"]["train"]["deps"]
    assert (REPO / "data/weights/README.md").is_file()             # the folder exists in a fresh clone


@pytest.mark.slow
def test_dvc_reruns_train_when_the_weights_file_is_replaced(dvc_repo: Path, tmp_path: Path):
    from tests.dvc_repo import dvc, stages_ran

    repo = dvc_repo                                                     # the project's own dvc.yaml, run once
    trained = _metrics(repo)["test"]["accuracy"]
    shutil.copy(repo / "data/model/snapshots/step_000000.safetensors", tmp_path / "init.safetensors")
    weights = _own_weights(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params = deep_update(params, {"model": {"weights": "data/weights/mine.safetensors"}, "train": {"epochs": 0}})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc("repro", "train", cwd=repo).stdout
    assert "train" in stages_ran(out)
    assert _metrics(repo)["test"]["accuracy"] == trained
    assert "up to date" in dvc("status", "train", cwd=repo).stdout

    shutil.copy(tmp_path / "init.safetensors", weights)                  # same path, other content
    status = dvc("status", "train", cwd=repo).stdout
    assert "data/weights" in status and "modified" in status
    out = dvc("repro", "train", cwd=repo).stdout
    assert "train" in stages_ran(out)
    assert _metrics(repo)["test"]["accuracy"] != trained                 # the untrained weights now
