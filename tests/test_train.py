"""The train stage: outputs, metrics, snapshots, divergence, and the dvc.yaml wiring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline import paths
from tests.conftest import REPO, run_cli, write_params


@pytest.fixture
def trained(pipeline_ws: Path) -> Path:
    """The session's tiny fetch -> train (-> extract) workspace: read it, write only into tmp_path."""
    return pipeline_ws


def test_train_writes_weights_config_snapshots_and_metrics(trained):
    model_dir = trained / paths.MODEL
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["arch"] == "lenet" and meta["input_shape"] == [1, 28, 28] and meta["n_classes"] == 10
    assert [row["name"] for row in meta["layers"]][-1] == "logits"
    assert (model_dir / "model.safetensors").read_bytes()[:8] != b"\x80\x04\x95"   # not a pickle
    index = json.loads((model_dir / "snapshots" / "index.json").read_text())["snapshots"]
    steps = [s["step"] for s in index]
    # 600 images less 10% validation = 540 / 64 = 9 steps per epoch, 2 epochs, a snapshot every 5
    # steps (schedule linear in the tiny params) plus step 0 and the end
    assert steps == [0, 5, 10, 15, 18]
    for entry in index:
        assert (model_dir / "snapshots" / entry["file"]).exists()
    metrics = json.loads((trained / paths.TRAIN_METRICS / "metrics.json").read_text())
    assert 0.5 < metrics["test"]["accuracy"] <= 1.0
    assert set(metrics["per_class_accuracy"]) == {str(i) for i in range(10)}
    assert metrics["params"] == 61706 and "seconds_per_epoch" not in metrics      # timings: logs/ (below)
    curve = (trained / paths.TRAIN_METRICS / "plots" / "metrics" / "val" / "accuracy.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "accuracy"] and len(curve) == 1 + 2      # validation: every epoch
    assert not (trained / paths.TRAIN_METRICS / "plots" / "metrics" / "test").exists()  # test: once, at the end
    assert 0.5 < metrics["val"]["accuracy"] <= 1.0
    assert not (model_dir / "tensorboard").exists()             # events hold the time: never a DVC output
    events = list((trained / paths.TRAIN_LOGS / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    timings = json.loads((trained / paths.TRAIN_LOGS / "timings.json").read_text())
    assert len(timings["epoch_seconds"]) == 2 and timings["seconds_per_epoch"] > 0


def test_tensorboard_events_hold_filters_image(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained / paths.TRAIN_LOGS / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert "filters/first_layer" in acc.Tags()["images"]
    assert len(acc.Images("filters/first_layer")) == 2               # one per epoch
    assert "test/accuracy" in acc.Tags()["scalars"]


@pytest.mark.slow                        # two more training runs
def test_same_seed_gives_identical_weights(trained, tmp_path):
    """Two trainings with the same params and data give the same bytes. Both on one thread: the
    float sums of a two-thread run are split differently from a one-thread run's, and in CI the
    shared workspace's run and this one did not always get the same thread count."""
    import shutil

    weights = []
    for run in ("a", "b"):
        ws = tmp_path / run
        (ws / "data").mkdir(parents=True)
        write_params(ws)
        shutil.copytree(trained / paths.PREPARED, ws / paths.PREPARED)
        run_cli("train", cwd=ws, env={"OMP_NUM_THREADS": "1"})
        weights.append((ws / paths.MODEL / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]


@pytest.mark.slow
def test_divergence_stops_with_one_line_and_no_outputs(trained, tmp_path):
    """Weights holding an inf make the first loss non-finite: one line, exit 1, nothing left behind."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(trained / paths.MODEL / "model.safetensors"))
    state["layers.fc1.weight"][0, 0] = float("inf")
    save_file(state, str(tmp_path / "broken.safetensors"))
    write_params(tmp_path, {"model": {"weights": "broken.safetensors"}})
    shutil.copytree(trained / paths.PREPARED, tmp_path / paths.PREPARED)
    proc = run_cli("train", cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged: the loss became nan at epoch 1, step ")
    assert "lower train.lr, e.g. to 0.0001" in last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / paths.MODEL).exists() and not (tmp_path / paths.TRAIN_METRICS).exists()
    assert torch.isinf(state["layers.fc1.weight"]).any()


def test_train_without_prepared_data_says_what_to_run(tmp_path):
    write_params(tmp_path)
    proc = run_cli("train", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: data/prepared/info.json: dataset info not found; run the stage that makes it (`dvc repro`)"]


@pytest.mark.slow
def test_epochs_zero_without_weights_is_refused(trained, tmp_path):
    import shutil

    write_params(tmp_path, {"train": {"epochs": 0}})
    shutil.copytree(trained / paths.PREPARED, tmp_path / paths.PREPARED)
    proc = run_cli("train", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "needs model.weights" in proc.stderr        # params inconsistent: exit 2


def test_kernel_larger_than_image_fails_at_train_with_exit_2(trained, tmp_path):
    import shutil

    write_params(tmp_path, {"model": {"arch": "cnn", "kernel_size": 29}})
    shutil.copytree(trained / paths.PREPARED, tmp_path / paths.PREPARED)
    proc = run_cli("train", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: model.kernel_size = 29 is larger than the 28x28 input; use at most 28"
    assert not (tmp_path / paths.MODEL).exists()


def test_help_lists_every_stage_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys; from pipeline.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); print(r.output); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout
    for stage in ("fetch", "train", "extract", "reduce", "probe", "render", "projector", "compare"):
        assert stage in out
    assert out.strip().splitlines()[-1] == "False"


def test_dvc_yaml_stages_call_existing_commands():
    """Every stage cmd in dvc.yaml is a `python -m pipeline <command>` that the CLI knows."""
    from pipeline.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, stage in spec["stages"].items():
        stage = stage.get("do", stage)
        parts = stage["cmd"].split()
        assert parts[:3] == ["python", "-m", "pipeline"], name
        assert parts[3] in commands, name


@pytest.mark.slow
def test_compile_without_a_cxx_compiler_is_one_line(trained, tmp_path):
    """train.compile with no C++ compiler on PATH: one line naming the fix, exit 1, nothing left."""
    import shutil
    import sys

    write_params(tmp_path, {"train": {"compile": True, "device": "cpu", "epochs": 1}})
    shutil.copytree(trained / paths.PREPARED, tmp_path / paths.PREPARED)
    bare = tmp_path / "bin"                          # PATH with python only: no g++, c++ or clang++
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    proc = run_cli("train", cwd=tmp_path, check=False, env={"PATH": str(bare), "CXX": ""})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith("error: train.compile: torch.compile cannot build kernels on cpu (")
    assert lines[-1].endswith("it needs a working C++ compiler (g++ or clang++ on PATH, or CXX), or set "
                              "train.compile: false")
    assert sum(line.startswith("error:") for line in lines) == 1
    assert not (tmp_path / paths.MODEL).exists() and not (tmp_path / paths.TRAIN_METRICS).exists()


@pytest.mark.slow
def test_log_snapshot_schedule_and_validation_split(trained, tmp_path):
    """The defaults: snapshots at steps 0, 1, 2, 4, 8, ... and the end; a validation share of the
    training images watched each epoch, the test split evaluated once."""
    import shutil

    write_params(tmp_path, {"train": {"epochs": 1, "snapshot_schedule": "log", "val_fraction": 0.2}})
    shutil.copytree(trained / paths.PREPARED, tmp_path / paths.PREPARED)
    proc = run_cli("train", cwd=tmp_path)
    assert "(480 train / 120 validation / 200 test)" in proc.stderr
    index = json.loads((tmp_path / paths.MODEL / "snapshots" / "index.json").read_text())["snapshots"]
    assert [s["step"] for s in index] == [0, 1, 2, 4, 8]                # 480 / 64 = 8 steps
    metrics = json.loads((tmp_path / paths.TRAIN_METRICS / "metrics.json").read_text())
    assert set(metrics["val"]) == {"loss", "accuracy"} and set(metrics["test"]) == {"loss", "accuracy"}
    assert metrics["test"] != metrics["val"]
