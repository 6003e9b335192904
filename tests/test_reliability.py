"""Reliability: bad params, damaged data and model files, missing inputs, interruptions, numerical
faults, determinism and fuzzing, each tried through the real command-line entry point.

Every failure case checks the same things (:func:`expect_failure`): the exit code (2 for a bad
params.yaml, 1 for other problems a user can fix, 128 + signal for an interruption), exactly one
``error:`` line on stderr and it is the last line, no traceback, and that none of the stage's
outputs exist afterwards (DVC caches whatever exists after exit 0; after a failure nothing of the
stage may look like a result). The message itself is compared too: it names the file or key and
says what to do.

Stages run in process (``pipeline.cli.main``) in a private copy of the session's tiny fetch ->
train -> extract workspace (``staged_ws``), or in an empty ``workspace``; only the signal tests
need a real process (marked slow). Files crafted to run code when loaded are in test_security.py.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import artifacts, cli, paths
from pipeline.errors import UserError
from tests.conftest import REPO, deep_update, default_signals
from tests.skips import skip_or_fail
from tests.test_reduce_stage import blobs, write_activations

P = paths.PREPARED
M = paths.MODEL
A = paths.ACTIVATIONS


# --------------------------------------------------------------------------------------------
# The one check every failure goes through


def outputs_of(args: tuple[str, ...]) -> list[Path]:
    """The files and folders the stage ``args`` (e.g. ``("reduce", "tsne")``) writes (dvc.yaml outs)."""
    outs = {
        "fetch": [P], "train": [M, paths.TRAIN_METRICS], "extract": [A],
        "probe": [paths.PROBE_METRICS], "render": [paths.FIGURES, paths.CONFUSION, paths.RENDER_METRICS],
        "projector": [paths.PROJECTOR], "diagnose": [paths.DIAGNOSTICS_METRICS, paths.DIAGNOSTICS_PLOTS],
        "export": [paths.EXPORT, paths.EXPORT_METRICS],
    }
    i = next(i for i, a in enumerate(args) if a in outs or a == "reduce")     # skip --params FILE
    if args[i] == "reduce":
        method = args[i + 1]
        return [paths.embedding_dir(method), paths.embedding_metrics(method), paths.points_dir(method)]
    return outs[args[i]]


def expect_failure(capsys: pytest.CaptureFixture, *args: str, code: int = 1, clear: bool = False) -> str:
    """Run ``python -m pipeline ARGS`` in process (cwd: the workspace) and check the failure.

    ``clear``: remove the stage's outputs first, as DVC does before it runs a stage (a params error
    stops the command before the stage starts, so outputs of an earlier run would stay untouched).
    Returns the error message without the ``error: `` prefix.
    """
    outputs = outputs_of(args)
    if clear:
        for out in outputs:
            artifacts.remove(out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    err = capsys.readouterr().err
    assert exit_info.value.code == code, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    left = [str(out) for out in outputs if out.exists()]
    assert not left, f"left behind: {left}"
    assert not list(Path(".").rglob("*.tmp")) and not list(Path(".").rglob("*.partial"))
    return errors[0].removeprefix("error: ")


def set_params(ws: Path, overrides: dict) -> None:
    """Merge ``overrides`` into the workspace's params.yaml (a non-dict value replaces a section)."""
    current = yaml.safe_load((ws / "params.yaml").read_text())
    (ws / "params.yaml").write_text(yaml.safe_dump(deep_update(current, overrides), sort_keys=False))


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def without(key: str) -> Callable[[dict], dict]:
    return lambda d: {k: v for k, v in d.items() if k != key}


# --------------------------------------------------------------------------------------------
# params.yaml: exit 2, one line naming key, value and the rule


PARAMS_CASES = [
    # values refused by the pydantic models before any stage starts
    (("train",), {"train": {"batch_size": 0}}, "params.yaml: train.batch_size = 0: must be greater than or equal to 1"),
    (("train",), {"model": {"filters": -4}}, "params.yaml: model.filters = -4: must be greater than or equal to 1"),
    (("train",), {"model": {"hidden": "big"}}, "params.yaml: model.hidden = big: must be a valid list"),
    (("train",), {"train": 5}, "params.yaml: train = 5: must be a valid dictionary or instance of TrainConfig"),
    (("train",), {"train": {"epoch": 3}}, "params.yaml: train.epoch: unknown key; did you mean 'epochs'? allowed: "),
    (("fetch",), {"data": {"n_train": 5}}, "params.yaml: data.n_train = 5: must be greater than or equal to 10"),
    (("extract",), {"extract": {"n_samples": 0}}, "params.yaml: extract.n_samples = 0: must be greater than or equal to 10"),
    (("extract",), {"extract": {"snapshot_layers": []}}, "params.yaml: extract.snapshot_layers = []: empty list; leave it out"),
    (("projector",), {"projector": {"layers": []}}, "params.yaml: projector.layers = []: empty list; leave it out (null)"),
    (("projector",), {"projector": {"max_points": 1}}, "params.yaml: projector.max_points = 1: must be greater than or equal to 2"),
    (("export",), {"export": {"formats": []}}, "params.yaml: export.formats = []: empty list; use [onnx], [torchscript] or both"),
    (("export",), {"export": {"formats": ["tflite"]}}, "params.yaml: export.formats.0 = tflite: must be 'onnx' or 'torchscript'"),
    (("probe",), {"probe": {"test_fraction": 1.5}}, "params.yaml: probe.test_fraction = 1.5: must be less than 0.95"),
    (("diagnose",), {"diagnose": {"saturation": 0.2}}, "params.yaml: diagnose.saturation = 0.2: must be greater than 0.5"),
    (("render",), {"render": {"dpi": 10}}, "params.yaml: render.dpi = 10: must be greater than or equal to 50"),
    (("reduce", "tsne"), {"reduce": {"tsne": {"perplexity": 0}}}, "params.yaml: reduce.tsne.perplexity = 0: must be greater than 0"),
    (("reduce", "umap"), {"reduce": {"umap": {"n_neighbors": 1}}},
     "params.yaml: reduce.umap.n_neighbors = 1: must be greater than or equal to 2"),
    # true/false is never a number (pydantic alone would train `epochs: yes` as one epoch)
    (("train",), {"train": {"epochs": True}}, "params.yaml: train.epochs = true: true/false is not a number; give a number"),
    (("train",), {"train": {"lr": False}}, "params.yaml: train.lr = false: true/false is not a number; give a number"),
    (("train",), {"model": {"hidden": [64, True]}},
     "params.yaml: model.hidden = [64, true]: true/false is not a number; give a number (or a list of numbers)"),
    (("extract",), {"extract": {"n_samples": True}},
     "params.yaml: extract.n_samples = true: true/false is not a number; give a number"),
    # a knob the arch has no use for, and params that contradict each other or the data's size: exit 2 too
    (("train",), {"model": {"arch": "linear", "hidden": [64]}},
     "model.hidden = [64]: arch linear (softmax regression) has no hidden layers; set model.hidden: null, or use "
     "arch: mlp for dense hidden layers"),
    (("train",), {"train": {"epochs": 0}}, "train.epochs = 0 needs model.weights (a safetensors file) to analyse"),
    (("fetch",), {"data": {"n_test": 4995}}, "data.n_test = 4995 leaves too few training images out of 5000; use at "
                                             "most 4990"),
    # valid on their own, refused by the stage once it sees the data or the model
    (("render",), {"render": {"layer": "fc9"}}, "render.layer = fc9: not an extracted layer; use one of input, conv1, act1"),
    (("train",), {"model": {"arch": "conv_ae", "kernel_size": 40}},
     "model.kernel_size = 40 is larger than the 28x28 input; use at most 28"),
    (("train",), {"model": {"kernel_size": 27}}, "model.kernel_size = 27 is larger than the 14x14 map after pool1; "
                                                 "LeNet needs kernel_size <= 14; use arch=cnn for larger kernels"),
    (("reduce", "tsne"), {"reduce": {"tsne": {"method": "fft", "n_components": 3}}},
     "reduce.tsne.method = fft supports only 2-D maps (n_components = 3); use method: bh or auto for 3-D"),
    (("reduce", "tsne"), {"reduce": {"tsne": {"method": "exact"}}},
     "reduce.tsne.method = exact: openTSNE has no exact gradient; use method: auto, bh or fft, or backend: sklearn"),
]


@pytest.mark.parametrize("args, overrides, expected", PARAMS_CASES,
                         ids=[f"{' '.join(a)}:{json.dumps(o)[:40]}" for a, o, _ in PARAMS_CASES])
def test_bad_params_exit_2_with_one_line(staged_ws: Path, capsys, args, overrides, expected):
    set_params(staged_ws, overrides)
    message = expect_failure(capsys, *args, code=2, clear=True)
    assert message.startswith(expected), message


RAW_PARAMS = [
    ("tab", "train:\n\tepochs: 3\n",
     "params.yaml: YAML syntax error at line 2, column 1: found character '\\t' that cannot start any token; fix the file"),
    ("duplicate-key", "train:\n  epochs: 1\n  epochs: 2\n",
     "params.yaml: YAML syntax error at line 3, column 3: duplicate key 'epochs' (the later value would silently "
     "replace the earlier one); keep one"),
    ("duplicate-section", "model: {arch: cnn}\ntrain: {epochs: 1}\nmodel:\n  filters: 8\n",
     "params.yaml: YAML syntax error at line 3, column 1: duplicate key 'model'"),
    ("latin-1", "model:\n  arch: l\xe9net\n".encode("latin-1"), "params.yaml: not UTF-8 text; save it as UTF-8"),
    ("a-list", "- fetch\n- train\n", "params.yaml: expected a mapping of sections (data, model, train, ...), got list"),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in RAW_PARAMS], ids=[c[0] for c in RAW_PARAMS])
def test_unreadable_params_file_exit_2(staged_ws: Path, capsys, text, expected):
    target = staged_ws / "params.yaml"
    target.write_bytes(text) if isinstance(text, bytes) else target.write_text(text)
    assert expect_failure(capsys, "train", code=2, clear=True).startswith(expected)


def test_yaml_merge_keys_still_work(tmp_path: Path):
    """The duplicate-key check must not refuse ``<<: *base`` followed by an override."""
    from pipeline.config import load_params

    path = tmp_path / "params.yaml"
    path.write_text("train:\n  <<: {epochs: 3, lr: 0.5}\n  lr: 0.1\n")
    cfg = load_params(path).train
    assert (cfg.epochs, cfg.lr) == (3, 0.1)


@pytest.mark.parametrize("flag, expected", [
    ("nope.yaml", "--params nope.yaml: file not found; give an existing YAML file (or leave --params out)"),
    ("data", "data is a folder, not a params file; pass a YAML file (e.g. params.yaml)"),
])
def test_params_flag_pointing_nowhere_exit_2(staged_ws: Path, capsys, flag, expected):
    """An explicit --params that is not a file must not silently mean "all defaults"."""
    assert expect_failure(capsys, "--params", flag, "fetch", code=2, clear=True) == expected


@pytest.mark.parametrize("args, expected", [
    (("nosuch",), "Error: No such command 'nosuch'."),
    (("reduce",), "Error: Missing argument 'method'. Choose from:\n\tpca,\n\ttsne,\n\tumap"),
    (("train", "--bogus"), "Error: No such option: --bogus"),
    (("compare", "HEAD"), "Error: Missing argument 'rev_b'."),
])
def test_command_line_usage_errors_exit_2_without_traceback(workspace: Path, capsys, args, expected):
    """Typer vendors its own click (typer._click): its usage errors must still be shown, not raised."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.strip().endswith("\n" + expected)
    assert sorted(p.name for p in workspace.iterdir()) == ["params.yaml"]


def test_umap_n_neighbors_is_clamped_with_a_warning_recorded_in_metrics(workspace: Path, capfd):
    """Too few points for reduce.umap.n_neighbors: clamped to n - 1, one warning line, and the clamp
    is in the metrics file and info.json (t-SNE's perplexity: test_reduce_stage.py)."""
    from pipeline.config import parse_params
    from pipeline.stages import reduce as reduce_stage

    x, labels = blobs(n_per=3)                                       # 9 points
    write_activations(workspace, {"input": x, "fc": x[:, :5]}, labels)
    reduce_stage.run(parse_params({"reduce": {"pca_dims": 5, "umap": {"n_neighbors": 15, "n_epochs": 30}}}), "umap")
    metrics = json.loads(paths.embedding_metrics("umap").read_text())
    assert metrics["fc"]["clamped"] == "n_neighbors 15 -> 8 (only 9 points; at most n - 1)"
    info = json.loads((paths.embedding_dir("umap") / "info.json").read_text())
    assert info["layers"]["fc"]["params"]["n_neighbors"] == 8
    assert ("warning: reduce umap: n_neighbors 15 -> 8 (only 9 points; at most n - 1) for layers input, fc"
            in capfd.readouterr().err.splitlines())


# --------------------------------------------------------------------------------------------
# data/prepared: damaged, foreign or inconsistent files -> one line, nothing trained


def _resave(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    np.save(path, change(np.load(path)))


PREPARED_CASES = [
    ("images-float64", lambda: _resave(P / "test_images.npy", lambda a: a.astype(np.float64)),
     "data/prepared/test_images.npy: test images has dtype float64, expected uint8; delete it and rerun `dvc repro`"),
    ("images-3d", lambda: _resave(P / "test_images.npy", lambda a: a[:, 0]),
     "data/prepared/test_images.npy: test images has shape (200, 28, 28), expected 4 dimensions"),
    ("labels-shorter", lambda: _resave(P / "test_labels.npy", lambda a: a[:-3]),
     "data/prepared: 200 test images but 197 labels; rerun `dvc repro fetch`"),
    ("labels-out-of-range", lambda: _resave(P / "train_labels.npy", lambda a: a + 5),
     "data/prepared: train labels outside 0..9; rerun `dvc repro fetch`"),
    ("labels-negative", lambda: _resave(P / "train_labels.npy", lambda a: a - 1),
     "data/prepared: train labels outside 0..9; rerun `dvc repro fetch`"),
    ("labels-float", lambda: _resave(P / "train_labels.npy", lambda a: a.astype(np.float64)),
     "data/prepared/train_labels.npy: train labels has dtype float64, expected integer"),
    ("npz-named-npy", lambda: np.savez(open(P / "train_images.npy", "wb"), a=np.zeros(3)),
     "data/prepared/train_images.npy: a .npz archive, not a .npy array; delete it and rerun `dvc repro`"),
    ("text-array", lambda: np.save(P / "train_images.npy", np.full((3, 1, 2, 2), "a")),
     "data/prepared/train_images.npy: train images has dtype <U1, not a plain numeric .npy"),
    ("truncated", lambda: (P / "train_images.npy").write_bytes((P / "train_images.npy").read_bytes()[:1000]),
     "data/prepared/train_images.npy: not a plain numeric .npy (Failed to read all data for array."),
    ("empty-file", lambda: (P / "train_images.npy").write_bytes(b""),
     "data/prepared/train_images.npy: truncated or damaged .npy (No data left in file)"),
    ("no-rows", lambda: (np.save(P / "train_images.npy", np.zeros((0, 1, 28, 28), np.uint8)),
                         np.save(P / "train_labels.npy", np.zeros(0, np.int64))),
     "data/prepared: no train images; rerun `dvc repro fetch`"),
    ("info-damaged", lambda: (P / "info.json").write_text('{"dataset": "mnist-5k", '),
     "data/prepared/info.json: damaged JSON (Expecting property name enclosed in double quotes"),
    ("info-a-list", lambda: (P / "info.json").write_text("[1, 2]"),
     "data/prepared/info.json: expected a JSON object, got list; delete data/prepared and rerun `dvc repro fetch`"),
    ("info-no-classes", lambda: edit_json(P / "info.json", without("classes")),
     "data/prepared/info.json: no `classes` list; delete data/prepared and rerun `dvc repro fetch`"),
    ("info-no-mean", lambda: edit_json(P / "info.json", without("mean")),
     "data/prepared/info.json: `mean` is not a list of 1 finite numbers (one per channel)"),
    ("info-zero-std", lambda: edit_json(P / "info.json", lambda d: {**d, "std": [0.0]}),
     "data/prepared/info.json: `std` has a value <= 0"),
    ("info-other-shape", lambda: edit_json(P / "info.json", lambda d: {**d, "shape": [1, 32, 32]}),
     "data/prepared: train images have shape (1, 28, 28), info.json says [1, 32, 32]; rerun `dvc repro fetch`"),
]


@pytest.mark.parametrize("damage, expected", [c[1:] for c in PREPARED_CASES], ids=[c[0] for c in PREPARED_CASES])
def test_damaged_prepared_data_stops_train(staged_ws: Path, capsys, damage, expected):
    damage()
    assert expect_failure(capsys, "train").startswith(expected)


@pytest.mark.parametrize("args", [("extract",), ("export",), ("projector",), ("render",)])
def test_every_reader_of_the_test_images_checks_them(staged_ws: Path, capsys, args):
    _resave(P / "test_images.npy", lambda a: a.astype(np.float64))
    message = expect_failure(capsys, *args)
    assert message == ("data/prepared/test_images.npy: test images has dtype float64, expected uint8; "
                       "delete it and rerun `dvc repro`")


# --------------------------------------------------------------------------------------------
# data/model: truncated weights, malformed model.json


MODEL_CASES = [
    ("weights-truncated", lambda: (M / "model.safetensors").write_bytes((M / "model.safetensors").read_bytes()[:5000]),
     "data/model/model.safetensors: not a valid safetensors file (Error while deserializing header: "),
    ("weights-empty", lambda: (M / "model.safetensors").write_bytes(b""),
     "data/model/model.safetensors: not a valid safetensors file (Error while deserializing header: "),
    ("snapshot-truncated", lambda: (M / "snapshots/step_000005.safetensors").write_bytes(b"\x08\x00"),
     "data/model/snapshots/step_000005.safetensors: not a valid safetensors file ("),
    ("config-damaged", lambda: (M / "model.json").write_text('{"arch": "lenet",'),
     "data/model/model.json: damaged JSON ("),
    ("config-a-list", lambda: (M / "model.json").write_text("[]"),
     "data/model/model.json: malformed model config (expected a JSON object, got list); rerun `dvc repro train`"),
    ("config-no-model", lambda: edit_json(M / "model.json", without("model")),
     "data/model/model.json: malformed model config (no `model` section); rerun `dvc repro train`"),
    ("config-unknown-arch", lambda: edit_json(M / "model.json", lambda d: {**d, "model": {**d["model"], "arch": "resnet"}}),
     "data/model/model.json: malformed model config (model.arch: must be one of lenet, cnn, mlp"),
    ("config-2d-input", lambda: edit_json(M / "model.json", lambda d: {**d, "input_shape": [28, 28]}),
     "data/model/model.json: malformed model config (`input_shape` = [28, 28] is not [C, H, W])"),
    ("config-no-mean", lambda: edit_json(M / "model.json", without("mean")),
     "data/model/model.json: malformed model config (no `mean`); rerun `dvc repro train`"),
    ("config-short-std", lambda: edit_json(M / "model.json", lambda d: {**d, "std": []}),
     "data/model/model.json: malformed model config (`std` is not a list of 1 numbers (one per channel))"),
    ("config-class-count", lambda: edit_json(M / "model.json", lambda d: {**d, "n_classes": 3}),
     "data/model/model.json: malformed model config (`classes` is not a list of n_classes = 3 names)"),
    ("config-other-layers", lambda: edit_json(M / "model.json", lambda d: {**d, "layers": d["layers"][:-1]}),
     "data/model/model.json: malformed model config (`layers` do not list the layers of the model its `model` "
     "section describes: conv1, act1"),
    ("config-other-filters", lambda: edit_json(M / "model.json", lambda d: {**d, "model": {**d["model"], "filters": 8}}),
     "data/model/model.safetensors: tensor 'layers.conv1.weight' has shape (6, 1, 5, 5), the model expects (8, 1, 5, 5)"),
]


@pytest.mark.parametrize("damage, expected", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_damaged_model_files_stop_extract(staged_ws: Path, capsys, damage, expected):
    damage()
    assert expect_failure(capsys, "extract").startswith(expected)


@pytest.mark.parametrize("args", [("diagnose",), ("export",), ("render",)])
def test_every_reader_of_model_json_checks_it(staged_ws: Path, capsys, args):
    edit_json(M / "model.json", lambda d: {**d, "layers": 5})
    assert expect_failure(capsys, *args) == ("data/model/model.json: malformed model config (`layers` is not a list "
                                             "of {name, type, ...}); rerun `dvc repro train`")


# --------------------------------------------------------------------------------------------
# data/activations: damaged or foreign files, for every stage that reads them

ACTIVATION_READERS = [("reduce", "pca"), ("probe",), ("projector",), ("diagnose",), ("render",)]

ACTIVATION_CASES = [        # the first layer in forward order is damaged, so every reader meets it at once
    ("text-array", lambda: np.save(A / "input.npy", np.full((120, 4), "a")),
     r"data/activations/input\.npy: activations( of input)? has dtype <U1, not a plain numeric \.npy", ()),
    ("3d-array", lambda: _resave(A / "input.npy", lambda a: a[:, :, None]),
     r"data/activations/input\.npy: activations( of input)? has shape \(120, 784, 1\), expected 2 dimensions", ()),
    ("fewer-rows", lambda: _resave(A / "input.npy", lambda a: a[:50]),
     r"data/activations/input\.npy.* (50 rows but labels\.npy has 120|shape \(50, 784\), layers\.json says \(120, 784\))",
     ()),
    ("labels-float", lambda: _resave(A / "labels.npy", lambda a: a.astype(np.float64)),
     r"data/activations/labels\.npy: labels has dtype float64, expected integer", ()),
    ("labels-out-of-range", lambda: _resave(A / "labels.npy", lambda a: a + 20),
     r"data/activations/labels\.npy: labels outside 0\.\.9 \(found 20\.\.29\) for 10 classes; delete it and rerun "
     r"extract \(`dvc repro extract`\)", ("render",)),
    ("index-a-list", lambda: (A / "layers.json").write_text("[]"),
     r"data/activations/layers\.json: expected a JSON object, got list; delete it and rerun extract", ("render",)),
    ("index-no-layers", lambda: edit_json(A / "layers.json", without("layers")),
     r"data/activations/layers\.json: no `layers` list; delete it and rerun extract", ("render",)),
]


# render reads activation files late (after drawing other figures): one array case is enough there
_RENDER_ARRAY_CASES = {"text-array"}


def _activation_params():
    for case_id, damage, pattern, gaps in ACTIVATION_CASES:
        for args in ACTIVATION_READERS:
            if args[0] == "render" and case_id not in _RENDER_ARRAY_CASES and not case_id.startswith(("labels", "index")):
                continue
            yield pytest.param(args, damage, pattern, id=f"{args[0]}-{case_id}")


@pytest.mark.parametrize("args, damage, pattern", list(_activation_params()))
def test_damaged_activations_stop_every_reader(staged_ws: Path, capsys, args, damage, pattern):
    set_params(staged_ws, {"render": {"dpi": 50}})
    damage()
    message = expect_failure(capsys, *args)
    assert re.match(pattern, message), message


# --------------------------------------------------------------------------------------------
# Missing inputs: every stage says which file is missing and what to run


STAGES = [("train",), ("extract",), ("reduce", "pca"), ("reduce", "tsne"), ("reduce", "umap"), ("probe",),
          ("render",), ("projector",), ("diagnose",), ("export",)]
FIRST_INPUT = {"train": "data/prepared/info.json: dataset info", "extract": "data/prepared/info.json: dataset info",
               "export": "data/model/model.json: model config"}


@pytest.mark.parametrize("args", STAGES, ids=[" ".join(a) for a in STAGES])
def test_stage_in_an_empty_workspace_says_what_to_run(workspace: Path, capsys, args):
    message = expect_failure(capsys, *args)
    first = FIRST_INPUT.get(args[0], "data/activations/layers.json: activation index (layers.json)")
    assert message == f"{first} not found; run the stage that makes it (`dvc repro`)"


@pytest.mark.parametrize("missing, args, expected", [
    (M, ("extract",), "data/model/model.json: model config"),
    (M, ("diagnose",), "data/model/model.json: model config"),
    (M, ("render",), "data/model/model.json: model config"),
    (M, ("export",), "data/model/model.json: model config"),
    (P, ("projector",), "data/prepared/test_images.npy: test images"),
    (P, ("render",), "data/prepared/info.json: dataset info"),
    (P, ("export",), "data/prepared/info.json: dataset info"),
    (A / "act2.npy", ("probe",), "data/activations/act2.npy: activations"),
    (A / "labels.npy", ("reduce", "pca"), "data/activations/labels.npy: labels"),
], ids=lambda v: str(v) if isinstance(v, Path) else None)
def test_stage_with_one_input_missing_names_it(staged_ws: Path, capsys, missing, args, expected):
    artifacts.remove(missing)
    set_params(staged_ws, {"render": {"dpi": 50}})
    assert expect_failure(capsys, *args) == f"{expected} not found; run the stage that makes it (`dvc repro`)"


# --------------------------------------------------------------------------------------------
# Incomplete folders: a stage killed outside DVC leaves a folder without its completion marker
# (the file it writes last); every reader refuses such a folder with one line


INCOMPLETE_CASES = [
    (P, "fetch", [("train",), ("extract",), ("projector",), ("render",), ("export",)]),
    (M, "train", [("extract",), ("render",), ("diagnose",), ("export",)]),
    (A, "extract", [("reduce", "pca"), ("probe",), ("projector",), ("diagnose",), ("render",)]),
]


@pytest.mark.parametrize("folder, stage, args", [(f, s, a) for f, s, readers in INCOMPLETE_CASES for a in readers],
                         ids=[f"{f.name}-{' '.join(a)}" for f, _, readers in INCOMPLETE_CASES for a in readers])
def test_readers_refuse_a_folder_without_its_completion_marker(staged_ws: Path, capsys, folder, stage, args):
    marker = paths.COMPLETE_WHEN[folder][0]
    (folder / marker).unlink()
    set_params(staged_ws, {"render": {"dpi": 50}})
    assert expect_failure(capsys, *args) == (f"{folder}: incomplete ({marker}, which {stage} writes last, is missing: "
                                             f"the stage was interrupted); rerun it (`dvc repro {stage}`)")


def test_render_refuses_a_half_written_embedding_folder(staged_ws: Path, capsys):
    """13 maps and no info.json (reduce umap killed outside DVC): no figures from a partial map set."""
    umap = paths.embedding_dir("umap")
    artifacts.save_npy(umap / "act4.npy", np.zeros((120, 2), dtype=np.float32))
    set_params(staged_ws, {"render": {"dpi": 50}})
    assert expect_failure(capsys, "render") == (f"{umap}: incomplete (info.json, which reduce@umap writes last, is "
                                                f"missing: the stage was interrupted); rerun it (`dvc repro reduce@umap`)")


def test_every_marked_stage_writes_its_marker_last(staged_ws: Path, monkeypatch):
    """The order of the renames that finish each file, for the stages whose folders are marked."""
    done: list[Path] = []
    replace = os.replace

    def recording(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        done.append(Path(dst).absolute().relative_to(staged_ws))

    monkeypatch.setattr(os, "replace", recording)
    set_params(staged_ws, {"train": {"epochs": 1}, "reduce": {"pca_dims": 10}})
    for args, folder, marker in [(("fetch",), P, "info.json"), (("train",), M, "model.json"),
                                 (("extract",), A, "layers.json"),
                                 (("reduce", "pca"), paths.embedding_dir("pca"), "info.json")]:
        done.clear()
        with pytest.raises(SystemExit) as exit_info:
            cli.main(list(args))
        assert exit_info.value.code == 0
        inside = [p for p in done if p.parts[:len(folder.parts)] == folder.parts]
        assert len(inside) > 1 and inside[-1] == folder / marker, (args, inside[-3:])


# --------------------------------------------------------------------------------------------
# Messages that used to mislead: say what is wrong with the file or folder


def test_symlinked_activation_file_says_what_it_is(staged_ws: Path, capsys):
    other = staged_ws / "notes.txt"
    other.write_text("not numbers\n")
    (A / "input.npy").unlink()
    (A / "input.npy").symlink_to(other)
    message = expect_failure(capsys, "probe")
    assert message == (f"data/activations/input.npy: not a .npy file (a symlink to {other}): it starts with "
                       f"b'not nu', a .npy with b'\\x93NUMPY'; delete it and rerun `dvc repro`")
    assert "allow_pickle" not in message


def test_outputs_that_cannot_be_cleared_name_the_folder_and_change_nothing(staged_ws: Path, capsys, monkeypatch):
    """A read-only data/activations (simulated: the suite runs as root, which permissions do not stop):
    rmtree fails on the first entry, named without its folder; the line names both, claims no removal."""
    import shutil

    def read_only(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "input.npy")

    monkeypatch.setattr(shutil, "rmtree", read_only)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["extract"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and err.count("\n") == 0 and "Traceback" not in err
    assert err == ("error: data/activations: cannot clear the previous outputs (Permission denied on "
                   "data/activations/input.npy); make data/activations writable for you (or delete it) and rerun; "
                   "nothing was changed")
    assert (A / "layers.json").exists()                          # really nothing was changed


def test_weights_folder_instead_of_a_file(staged_ws: Path, capsys):
    (staged_ws / "data" / "weights" / "run1").mkdir(parents=True)
    set_params(staged_ws, {"model": {"weights": "data/weights/run1"}, "train": {"epochs": 0}})
    message = expect_failure(capsys, "train")
    assert message == "data/weights/run1: a folder, not a weights file; point model.weights at a .safetensors file in it"


def test_a_file_where_the_metrics_folder_should_be(staged_ws: Path, capsys):
    artifacts.remove(paths.METRICS)
    paths.METRICS.write_text("oops\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert err == ("error: metrics: a file stands where the folder for metrics/train should be; move or delete it "
                   "and rerun")
    assert (M / "model.json").exists()                           # refused before anything was cleared


def test_lenet_honours_an_empty_hidden_list():
    """`hidden: []` means no dense hidden layers for LeNet, as for mlp and cnn (it used to mean the default)."""
    from torch import nn

    from pipeline.config import ModelConfig
    from pipeline.models import build_model

    def dense(hidden):
        model = build_model(ModelConfig(arch="lenet", hidden=hidden), (1, 28, 28), 10)
        return [m.out_features for _, m in model.named_layers() if isinstance(m, nn.Linear)]

    assert dense(None) == [120, 84, 10] and dense([]) == [10] and dense([32]) == [32, 10]


def test_knobs_an_arch_ignores_are_listed_and_noted_in_the_metrics(staged_ws: Path, capsys):
    import torch

    from pipeline.config import ModelConfig
    from pipeline.models import ignored_knobs

    assert ignored_knobs(ModelConfig(arch="mlp", filters=8, pool="avg"), (1, 28, 28), 10) == [
        "model.filters = 8", "model.pool = avg"]
    assert ignored_knobs(ModelConfig(arch="lenet"), (1, 28, 28), 10) == []
    assert ignored_knobs(ModelConfig(arch="cnn", filters=8, pool="avg"), (1, 28, 28), 10) == []
    torch.manual_seed(0)
    ignored_knobs(ModelConfig(arch="cnn"), (1, 28, 28), 10)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)                    # the trial build leaves the seed's stream alone
    set_params(staged_ws, {"model": {"arch": "mlp", "filters": 8}, "train": {"epochs": 1}})
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 0, err
    assert "warning: model.filters = 8: ignored by arch mlp (noted in metrics/train/metrics.json)" in err
    assert json.loads((paths.TRAIN_METRICS / "metrics.json").read_text())["notes"] == \
        "model.filters = 8: ignored by arch mlp"


# One rule for exit codes (pipeline/errors.py): 2 when params or the command line are wrong, 1 when
# files, data or the machine are. A UserError (exit 1) whose message is about a params value breaks
# it, unless the problem is really a file or the machine (listed here with the reason).
_PARAMS_KEY = re.compile(r'UserError\(\s*f?"(data|model|train|extract|reduce|probe|render|projector|export|diagnose)'
                         r'\.\w+ = ')
_EXIT_1_ABOUT_PARAMS = {
    "data.root = {root} is a file": "a file is in the way",
    "data.root = {root} does not exist": "the raw files are missing",
    "train.device = cuda but no CUDA GPU": "the machine has no GPU",
    "train.device = mps but Apple MPS": "the machine has no MPS",
    "model.factory = {spec}: {call} raised": "the factory's own code failed",
    "model.factory = {spec}: {call} returned a": "the factory's own code returned something else",
}


def test_exit_code_rule_holds_in_the_code():
    offenders = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        text = path.read_text()
        for match in _PARAMS_KEY.finditer(text):
            line = text[match.start():text.index("\n", match.start())]
            if not any(allowed in line for allowed in _EXIT_1_ABOUT_PARAMS):
                offenders.append(f"{path.relative_to(REPO)}: {line.strip()}")
    assert not offenders, "params errors raised as UserError (exit 1); use ConfigError (exit 2):\n" + "\n".join(offenders)
    from pipeline.errors import ConfigError, UsageError

    assert (UserError.exit_code, ConfigError.exit_code, UsageError.exit_code) == (1, 2, 2)


def test_reduce_with_an_unknown_method_is_a_usage_error(workspace: Path):
    from pipeline.config import parse_params
    from pipeline.errors import UsageError
    from pipeline.stages import reduce as reduce_stage

    with pytest.raises(UsageError) as info:
        reduce_stage.run(parse_params({}), "isomap")
    assert info.value.exit_code == 2


# --------------------------------------------------------------------------------------------
# Cosmetic, still one clean line: Ctrl-C twice, Ctrl-C while loading, an error under a progress bar


def test_error_under_a_progress_bar_starts_its_own_line(staged_ws: Path, capsys, monkeypatch):
    monkeypatch.setenv("HIDDEN_SPACES_QUIET", "0")
    (A / "act2.npy").write_bytes((A / "act2.npy").read_bytes()[:500])     # probe's layer bar is drawing then
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["probe"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "probe:" in err                                                # the bar was drawn
    line = err[err.index("error: ") - 1:]
    assert line[0] == "\n", repr(err[-400:])                              # not glued onto the bar's `\r...`
    assert line.strip().startswith("error: data/activations/act2.npy: ")


INTERRUPT_ON_IMPORT = '''\
import sys


class _CtrlC:
    """Ctrl-C at the moment pipeline.cli imports typer (test-only startup hook)."""

    def find_spec(self, name, path=None, target=None):
        if name == "typer" and "pipeline" in sys.modules:
            raise KeyboardInterrupt
        return None


sys.meta_path.insert(0, _CtrlC())
'''


def test_ctrl_c_while_the_command_line_loads_is_one_line(workspace: Path, tmp_path: Path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(INTERRUPT_ON_IMPORT)
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{REPO}"}
    proc = subprocess.run([sys.executable, "-m", "pipeline", "fetch"], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "error: interrupted before the command started; nothing was written\n"
    assert not (workspace / P).exists()


@pytest.mark.slow
def test_ctrl_c_twice_is_still_one_line(staged_ws: Path):
    """A second (and third...) Ctrl-C while the process exits: no "Exception ignored in atexit" traceback."""
    artifacts.remove(M)
    set_params(staged_ws, {"train": {"epochs": 200}})
    env = {**os.environ, "PYTHONPATH": str(REPO), "HIDDEN_SPACES_QUIET": "1"}
    # preexec_fn: a SIGINT ignored by the launcher (a background job of a script) is inherited otherwise
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "train"], cwd=staged_ws, env=env, text=True,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=default_signals)
    lines = []
    try:
        deadline = time.monotonic() + 300
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("epoch 1/") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        for _ in range(100):                         # keep pressing Ctrl-C until it has exited
            time.sleep(0.02)
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = "".join(lines) + rest
    assert code == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: interrupted; outputs of the interrupted stage were removed, rerun `dvc repro`"]
    assert not M.exists() and not paths.TRAIN_METRICS.exists()


# --------------------------------------------------------------------------------------------
# Wrong folder: a stage started in a subfolder runs in the project root; no params.yaml is an error


def test_stage_started_in_a_subfolder_runs_in_the_project_root(workspace: Path, monkeypatch, capsys):
    (workspace / "dvc.yaml").write_text("stages: {}\n")
    (workspace / "data" / "raw").mkdir(parents=True)
    set_params(workspace, {"data": {"dataset": "digits", "n_train": 100, "n_test": 50}})
    monkeypatch.chdir(workspace / "data" / "raw")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fetch"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 0, err
    assert f"note: running in the project root {workspace}" in err
    info = json.loads((workspace / P / "info.json").read_text())
    assert info["dataset"] == "digits" and info["n_test"] == 50          # params.yaml was read, not defaults
    assert not (workspace / "data" / "raw" / "data").exists() and not (workspace / "data" / "data").exists()


def test_params_flag_is_relative_to_where_you_are(workspace: Path, monkeypatch, capsys):
    (workspace / "sub").mkdir()
    (workspace / "sub" / "mine.yaml").write_text(yaml.safe_dump({"data": {"dataset": "digits", "n_test": 40}}))
    monkeypatch.chdir(workspace / "sub")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fetch", "--params", "mine.yaml"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert json.loads((workspace / P / "info.json").read_text())["n_test"] == 40


def test_project_without_params_yaml_exit_2(workspace: Path, capsys):
    (workspace / "params.yaml").unlink()
    (workspace / "dvc.yaml").write_text("stages: {}\n")
    message = expect_failure(capsys, "fetch", code=2)
    assert message == (f"{workspace / 'params.yaml'}: not found (the project root has dvc.yaml but no params file); "
                       f"restore it (`git checkout params.yaml`) or pass --params FILE")


def test_outside_any_project_exit_2(tmp_path: Path, monkeypatch, capsys):
    if paths.find_root(tmp_path) is not None:
        skip_or_fail(f"{paths.find_root(tmp_path)} above the temporary folder holds dvc.yaml or params.yaml")
    monkeypatch.chdir(tmp_path)
    message = expect_failure(capsys, "train", code=2)
    assert message == (f"no params.yaml or dvc.yaml in {tmp_path} or any folder above it; run from the project "
                       f"folder, or pass --params FILE")


# --------------------------------------------------------------------------------------------
# Interruptions: Ctrl-C, disk full, SIGINT / SIGTERM from outside


def test_ctrl_c_in_the_middle_of_a_stage_removes_what_it_wrote(staged_ws: Path, capsys, monkeypatch):
    """KeyboardInterrupt after reduce wrote some maps: exit 130, one line, none of its outputs left."""
    real = artifacts.save_csv
    seen: list[bool] = []

    def interrupt_third(path, columns, **kw):
        if len(seen) == 2:
            seen.append(paths.embedding_dir("pca").is_dir() and any(paths.points_dir("pca").iterdir()))
            raise KeyboardInterrupt
        seen.append(True)
        real(path, columns, **kw)

    monkeypatch.setattr(artifacts, "save_csv", interrupt_third)
    message = expect_failure(capsys, "reduce", "pca", code=130)
    assert message == "interrupted; outputs of the interrupted stage were removed, rerun `dvc repro`"
    assert seen == [True, True, True]                       # it was interrupted after real writes


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(staged_ws: Path, capsys, monkeypatch):
    """ENOSPC half-way through a file: no traceback, the partial file and the stage's outputs are gone."""
    real = np.save

    def full_disk(fh, array, **kw):
        if str(getattr(fh, "name", "")).find("confidence") >= 0:
            fh.write(b"\x93NUMPY half a header")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fh, array, **kw)

    monkeypatch.setattr(np, "save", full_disk)
    message = expect_failure(capsys, "extract")
    assert message == ("No space left on device; free disk space (or move data/ to a larger disk) and rerun "
                       "(the stage's partial outputs were removed)")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_training_removes_partial_outputs(staged_ws: Path, signum):
    """Ctrl-C (SIGINT) or `kill` / CI cancellation (SIGTERM) while train is writing snapshots, events
    and dvclive files: exit 128 + signal, one line, data/model and metrics/train gone."""
    artifacts.remove(M)
    set_params(staged_ws, {"train": {"epochs": 60, "snapshot_every": 2}})     # minutes on a slow machine
    env = {**os.environ, "PYTHONPATH": str(REPO), "HIDDEN_SPACES_QUIET": "1"}
    # preexec_fn: a SIGINT ignored by the launcher (`pytest &` in a script) would be inherited
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "train"], cwd=staged_ws, env=env, text=True,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=default_signals)
    lines = []
    try:
        deadline = time.monotonic() + 300
        for line in proc.stderr:                    # wait until an epoch has written files
            lines.append(line)
            if line.startswith("epoch 1/") or time.monotonic() > deadline:
                break
        assert (M / "snapshots").is_dir() and (paths.TRAIN_METRICS).is_dir(), "".join(lines)
        proc.send_signal(signum)
        sent = time.monotonic()
        code = proc.wait(timeout=240)              # the stage itself, not whoever else holds its stderr
        took = time.monotonic() - sent
        try:
            os.killpg(proc.pid, 0)                 # a process of its group outlived it: say so, end it
            warnings.warn(f"train left a process running after {signal.Signals(signum).name}")
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = "".join(lines) + rest
    assert code == 128 + signum, f"exit {code} {took:.1f} s after the signal:\n{err}"
    # prompt: closing tensorboard's writer after an interrupt waited out its 120-s flush interval
    # (in 3 of 5 whole-suite runs, 5 of 12 interrupts under load); an interrupted stage now leaves it
    epochs = len(re.findall(r"^epoch \d+/", rest, re.M))
    assert took < 60, f"train took {took:.0f} s to exit after the signal ({epochs} more epochs logged)"
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("error: interrupted; outputs of the interrupted stage were removed, "
                                            "rerun `dvc repro`")
    assert not M.exists() and not paths.TRAIN_METRICS.exists()
    assert not list(staged_ws.rglob("*.tmp"))


_SIGNAL_STATE = ("import signal; blocked = signal.pthread_sigmask(signal.SIG_BLOCK, []); "
                 "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, "
                 "signal.SIGINT in blocked or signal.SIGTERM in blocked)")


def test_signal_tests_do_not_depend_on_how_pytest_was_started():
    """A launcher that ignores SIGINT (a background job of a non-interactive shell) and blocks
    SIGTERM: a child started plainly inherits both, a child started with ``default_signals`` does not."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        plain = subprocess.run([sys.executable, "-c", _SIGNAL_STATE], capture_output=True, text=True, timeout=60)
        fixed = subprocess.run([sys.executable, "-c", _SIGNAL_STATE], capture_output=True, text=True, timeout=60,
                               preexec_fn=default_signals)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        signal.signal(signal.SIGINT, previous)
    assert plain.stdout.split() == ["False", "True"], plain.stdout + plain.stderr    # the hostile launcher took effect
    assert fixed.stdout.split() == ["True", "False"], fixed.stdout + fixed.stderr


# Every write under pipeline/ goes through pipeline/artifacts.py (atomic: temporary file + rename).
# A raw write is allowed only into a temporary path of artifacts.atomic_path (named `tmp`), or for
# the reasons listed; calls of artifacts' own writers (`artifacts.write_text(`) are what we want.
_RAW_WRITE = re.compile(r"\bnp\.save\(|\.savefig\(|json\.dump\(|\.write_text\(|\.write_bytes\(|torch\.save\("
                        r"|jit\.save\(|onnx\.export\(|\.to_csv\(|\.save\(|open\([^)]*[\"'][wax]b?\+?[\"']"
                        r"|open_memmap\(|SummaryWriter\(|Live\(")
_ALLOWED = {
    ("pipeline/stages/extract.py", "open_memmap("): "activations stream into .partial files, renamed when complete",
    ("pipeline/stages/train.py", "SummaryWriter("): "TensorBoard appends events to logs/train (not an output; cleared "
                                                     "when train starts)",
    ("pipeline/stages/export.py", "jit.save("): "into an in-memory buffer, then artifacts.write_bytes",
    ("pipeline/stages/train.py", "Live("): "dvclive writes metrics/train; inside stage_outputs (removed on failure)",
    ("pipeline/explorer.py", ".save("): "the thumbnail sprite is encoded into an in-memory buffer inside the page",
}


def test_every_write_in_the_pipeline_is_atomic():
    offenders = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel == "pipeline/artifacts.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = re.sub(r"\bartifacts\.\w+\(", "", line.split("#")[0])
            for match in _RAW_WRITE.finditer(code):
                if re.search(r"\btmp\b", code) or (rel, match.group(0)) in _ALLOWED:
                    continue
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "writes that bypass pipeline/artifacts.py:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------------------------
# Numerical faults: handled, and counted in the metrics files


def test_nan_activations_are_skipped_and_recorded_by_every_reader(staged_ws: Path, capsys):
    """A layer extract flagged as NaN/inf: reduce, probe and diagnose record it as skipped in their
    metrics, projector leaves it out; the other layers are processed."""
    acts = np.load(A / "act3.npy")
    acts[::7, 3] = np.nan
    np.save(A / "act3.npy", acts)
    keep = ("input", "act3", "act4")                    # a smaller extract (extract.layers), no snapshots: fast
    edit_json(A / "layers.json", lambda d: {**d, "layers": [r for r in d["layers"] if r["name"] in keep],
                                            "nonfinite_layers": ["act3"], "snapshots": [], "snapshot_layers": []})
    set_params(staged_ws, {"projector": {"layers": ["act3", "act4"], "sprite": False}})
    for args in (["reduce", "pca"], ["probe"], ["diagnose"], ["projector"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(args)
        assert exit_info.value.code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    pca = json.loads(paths.embedding_metrics("pca").read_text())
    probes = json.loads(paths.PROBE_METRICS.read_text())
    diag = json.loads(paths.DIAGNOSTICS_METRICS.read_text())
    assert pca["act3"] == {"skipped": "18 of 14400 activation values are NaN or infinite"}
    assert probes["act3"] == {"skipped": "18 of 14400 activation values are NaN or infinite"}
    assert diag["act3"] == {"skipped": "NaN or inf activations (extract flagged the layer)"}
    assert "knn_accuracy" in pca["act4"] and "accuracy" in probes["act4"] and "dead_fraction" in diag["act4"]
    config = (paths.PROJECTOR / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "03_act4"' in config and "act3" not in config     # network-order names
    for stage in ("reduce pca: layer act3 skipped", "probe: layer act3 skipped", "layer act3 has NaN or inf",
                  "projector: layer act3 has NaN or inf"):
        assert stage in err, stage


def test_nan_weights_are_analysed_with_a_warning_and_flagged_by_extract(staged_ws: Path, capsys):
    """model.weights holding NaN, analysed as they are (train.epochs: 0): a warning names the tensor,
    extract records every layer after it in nonfinite_layers (which the later stages skip)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(M / "model.safetensors"))
    state["layers.fc1.weight"][0, :5] = float("nan")
    (staged_ws / "data/weights").mkdir(parents=True)
    save_file(state, str(staged_ws / "data/weights/nan.safetensors"))
    set_params(staged_ws, {"model": {"weights": "data/weights/nan.safetensors"}, "train": {"epochs": 0}})
    for args in (["train"], ["extract"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(args)
        assert exit_info.value.code == 0
    err = capsys.readouterr().err
    assert ("warning: data/weights/nan.safetensors: 5 weight values are NaN or inf (first in layers.fc1.weight); "
            "the layers they feed get NaN activations, which reduce, probe, projector and diagnose skip and record"
            in err.splitlines())
    metrics = json.loads((paths.TRAIN_METRICS / "metrics.json").read_text())
    assert metrics["test"]["loss"] in (None, "nan") or np.isnan(metrics["test"]["loss"])
    index = json.loads((A / "layers.json").read_text())
    assert index["nonfinite_layers"] == ["fc1", "act3", "fc2", "act4", "logits"]
    assert "warning: final model: layer fc1 has NaN or inf activations; reduce will skip it" in err


def test_a_map_that_comes_back_nan_is_skipped_and_recorded(workspace: Path, monkeypatch, capfd):
    """openTSNE returning all-NaN coordinates for one layer: that layer is `skipped` in the metrics,
    the others are mapped, and no NaN coordinates are written."""
    import openTSNE

    from pipeline.config import parse_params
    from pipeline.stages import reduce as reduce_stage

    x, labels = blobs()
    write_activations(workspace, {"input": x, "fc": x[:, :5] * 2, "out": x[:, :3]}, labels)
    real_fit = openTSNE.TSNE.fit
    calls = []

    def nan_once(self, data):
        calls.append(1)
        return np.full((len(data), 2), np.nan) if len(calls) == 2 else real_fit(self, data)

    monkeypatch.setattr(openTSNE.TSNE, "fit", nan_once)
    reduce_stage.run(parse_params({"reduce": {"pca_dims": 5, "tsne": {"perplexity": 10, "n_iter": 60,
                                                                        "early_exaggeration_iter": 30}}}), "tsne")
    metrics = json.loads(paths.embedding_metrics("tsne").read_text())
    assert metrics["fc"] == {"skipped": "tsne returned 120 non-finite coordinates"}
    assert "knn_accuracy" in metrics["input"] and "knn_accuracy" in metrics["out"]
    assert not (paths.embedding_dir("tsne") / "fc.npy").exists()
    assert "warning: reduce tsne: layer fc skipped: tsne returned 120 non-finite coordinates" in capfd.readouterr().err


# --------------------------------------------------------------------------------------------
# Determinism: the same params give the same bytes (CPU)


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, as bytes (timings live in logs/, outside every output)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_reduce_twice_gives_identical_maps_and_metrics(workspace: Path, method: str):
    from pipeline.config import parse_params
    from pipeline.stages import reduce as reduce_stage

    x, labels = blobs(n_per=25)
    rng = np.random.default_rng(3)
    hidden = np.tanh(x @ rng.normal(size=(8, 6))).astype(np.float32)
    snaps = {step: {"hidden": (hidden * (0.3 + step / 20) + rng.normal(scale=0.3, size=hidden.shape)).astype(np.float32)}
             for step in (0, 10)}
    snaps[20] = {"hidden": hidden}
    write_activations(workspace, {"input": x, "hidden": hidden}, labels, preds=labels, snapshots=snaps,
                      snapshot_layers=["hidden"])
    params = parse_params({"reduce": {"pca_dims": 6, "tsne": {"perplexity": 10, "n_iter": 80, "early_exaggeration_iter": 40},
                                      "umap": {"n_neighbors": 8, "n_epochs": 40}}})
    runs = []
    for _ in range(2):
        reduce_stage.run(params, method)
        runs.append({"maps": _tree(paths.embedding_dir(method)), "points": _tree(paths.points_dir(method)),
                     "metrics": paths.embedding_metrics(method).read_bytes()})
    assert runs[0] == runs[1]
    assert len(runs[0]["maps"]) == 2 + 1 + 3                      # 2 layers, info.json, 3 snapshot frames


def test_probe_twice_gives_identical_metrics(workspace: Path):
    from pipeline.config import parse_params
    from pipeline.stages import probe as probe_stage

    x, labels = blobs(n_per=30, dim=12)
    noisy = x + np.random.default_rng(0).normal(scale=4.0, size=x.shape).astype(np.float32)
    write_activations(workspace, {"input": noisy, "fc": x, "wide": np.repeat(noisy, 30, axis=1)}, labels)
    params = parse_params({"probe": {"max_dims": 64}})
    first = probe_stage.run(params)
    text = paths.PROBE_METRICS.read_bytes()
    assert probe_stage.run(params) == first and paths.PROBE_METRICS.read_bytes() == text
    assert first["wide"]["dims"] == 63                            # PCA path taken: min(max_dims, n_train)


def test_extract_twice_gives_identical_activations(staged_ws: Path):
    before = _tree(A)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["extract"])
    assert exit_info.value.code == 0
    assert _tree(A) == before


# --------------------------------------------------------------------------------------------
# Fuzzing the readers and writers of the file formats


_NPY_HEADER = b"\x93NUMPY\x01\x00"
_prefixes = st.sampled_from([b"", _NPY_HEADER, b"PK\x03\x04", b"\x80\x04\x95", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', "
                                                                               b"'fortran_order': False, 'shape': (3, 2), }"])


@settings(max_examples=150, deadline=None)
@given(head=_prefixes, body=st.binary(max_size=200), mmap=st.booleans())
def test_fuzz_load_npy_never_crashes_or_unpickles(head: bytes, body: bytes, mmap: bool):
    """Any bytes in a .npy: a plain numeric array or a one-line UserError, never another exception."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        path.write_bytes(head + body)
        try:
            array = artifacts.load_npy(path, mmap=mmap)
        except UserError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))
            return
        assert isinstance(array, np.ndarray) and array.dtype.kind in "biuf"
        del array


_MUTATIONS = ["none", "image-dtype", "image-ndim", "labels-shorter", "labels-range", "labels-dtype", "labels-2d",
              "info-shape", "info-classes", "info-mean", "info-std", "empty"]
_dtypes = st.sampled_from([np.int64, np.int8, np.float32, np.float64, np.bool_, np.complex64, np.uint16])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 5), chw=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
       n_classes=st.integers(1, 4), seed=st.integers(0, 2**16), split=st.sampled_from(["train", "test"]),
       mutation=st.sampled_from(_MUTATIONS), dtype=_dtypes)
def test_fuzz_load_prepared_accepts_exactly_the_contract(n, chw, n_classes, seed, split, mutation, dtype):
    """A data/prepared folder in the ARTIFACTS.md format loads unchanged; the same folder with any one
    thing wrong (dtype, dimensions, lengths, label range, info.json) gives one UserError line."""
    from pipeline.datasets import load_prepared

    rng = np.random.default_rng(seed)
    arrays_ = {s: (rng.integers(0, 256, (n, *chw), dtype=np.uint8), rng.integers(0, n_classes, n).astype(np.int64))
               for s in ("train", "test")}
    info = {"classes": [f"c{k}" for k in range(n_classes)], "shape": list(chw),
            "mean": [0.5] * chw[0], "std": [0.25] * chw[0]}
    images, labels = arrays_[split]
    bad_images, bad_labels = images, labels
    if mutation == "image-dtype":
        bad_images = images.astype(dtype)
    elif mutation == "image-ndim":
        bad_images = images.reshape(n, -1)
    elif mutation == "labels-shorter":
        bad_labels = labels[:-1]
    elif mutation == "labels-range":
        bad_labels = labels + n_classes
    elif mutation == "labels-dtype":
        bad_labels = labels.astype(dtype) if np.dtype(dtype).kind not in "iu" else labels.astype(np.float32)
    elif mutation == "labels-2d":
        bad_labels = labels[:, None]
    elif mutation == "info-shape":
        info["shape"] = [chw[0], chw[1] + 1, chw[2]]
    elif mutation == "info-classes":
        info["classes"] = []
    elif mutation == "info-mean":
        info["mean"] = [0.5] * (chw[0] + 1)
    elif mutation == "info-std":
        info["std"] = [0.0] * chw[0]
    elif mutation == "empty":
        bad_images, bad_labels = images[:0], labels[:0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for s_, (x, y) in arrays_.items():
            np.save(folder / f"{s_}_images.npy", bad_images if s_ == split else x)
            np.save(folder / f"{s_}_labels.npy", bad_labels if s_ == split else y)
        (folder / "info.json").write_text(json.dumps(info))
        if mutation == "none":
            data = load_prepared(folder)
            for s_ in ("train", "test"):
                np.testing.assert_array_equal(getattr(data, f"{s_}_images"), arrays_[s_][0])
                got = getattr(data, f"{s_}_labels")
                assert got.dtype == np.int64 and np.array_equal(got, arrays_[s_][1])
            assert data.classes == info["classes"]
            return
        with pytest.raises(UserError) as err:
            load_prepared(folder)
        assert "\n" not in str(err.value) and str(err.value).startswith(str(folder))


_names = st.one_of(st.sampled_from(["conv1", "act4", "..", ".", "../x", "a/b", "", "ok.name", "-x", ".hidden"]),
                   st.text(max_size=8))
_layer_rows = st.fixed_dictionaries({"name": _names, "shape": st.just([4]), "dim": st.sampled_from([4, 0, "4"])})


@settings(max_examples=150, deadline=None)
@given(layers=st.one_of(st.lists(_layer_rows, max_size=4), st.none(), st.integers()),
       classes=st.one_of(st.lists(st.text(max_size=3), max_size=3), st.none()),
       snapshot_layers=st.one_of(st.none(), st.lists(_names, max_size=2)),
       snapshots=st.one_of(st.none(), st.lists(st.fixed_dictionaries(
           {"step": st.one_of(st.integers(0, 10), st.text(max_size=2)),
            "dir": st.sampled_from(["snapshots/step_000010", "../../etc", "snapshots/step_1"])}), max_size=2)))
def test_fuzz_layer_index_names_are_always_safe_file_names(layers, classes, snapshot_layers, snapshots):
    """A crafted layers.json never yields a layer name that could leave the stage's folder."""
    with tempfile.TemporaryDirectory() as tmp:
        index = {"layers": layers, "classes": classes, "n": 3, "snapshot_layers": snapshot_layers,
                 "snapshots": snapshots}
        (Path(tmp) / "layers.json").write_text(json.dumps(index))
        try:
            loaded = artifacts.load_layer_index(tmp)
        except UserError as exc:
            assert "\n" not in str(exc)
            return
        for name in [row["name"] for row in loaded["layers"]] + list(loaded.get("snapshot_layers") or []):
            assert artifacts.SAFE_NAME.match(name) and "/" not in name and not name.startswith(".")
            assert (Path(tmp) / f"{name}.npy").resolve().parent == Path(tmp).resolve()
        for entry in loaded.get("snapshots") or []:
            assert re.fullmatch(r"snapshots/step_\d{6,}", entry["dir"])


_cells = st.text(alphabet=st.sampled_from(list("ab ,\"\n\r\té-")), max_size=6)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
                               st.integers(-5, 5), _cells), max_size=8))
def test_fuzz_csv_writer_round_trips_through_a_csv_reader(rows):
    """plots/points/*.csv: class names with commas, quotes or line breaks still read back as written."""
    xs = np.array([r[0] for r in rows], dtype=np.float64)
    labels = np.array([r[1] for r in rows], dtype=np.int64)
    names = np.array([r[2] for r in rows], dtype=str) if rows else np.array([], dtype=str)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "points.csv"
        artifacts.save_csv(path, {"x": xs, "label": labels, "class": names})
        with open(path, newline="", encoding="utf-8") as fh:
            back = list(csv.DictReader(fh))
    assert len(back) == len(rows)
    for (x, label, name), row in zip(rows, back):
        assert int(row["label"]) == label and row["class"] == name
        assert float(row["x"]) == pytest.approx(x, rel=1e-4, abs=1e-30)


# --------------------------------------------------------------------------------------------
# The README's reliability table: `python -m tests.test_reliability` counts the collected cases.
#
# test -> (category, outcome, one_line, clean). outcome: "error" (the case must fail), "handled" (it
# must run through and record what happened: a skip, a clamp, a warning), "same" (identical outputs),
# "property" (hypothesis). one_line / clean: the test asserts the one-line error / that the stage
# left none of its outputs (None: not asserted, e.g. a unit test of a pure function).

CATEGORIES = ["params", "data", "model files", "missing inputs", "wrong folder", "stale cache", "interruptions",
              "full disk", "numerical faults", "determinism", "fuzzing"]
_R, _S = "tests/test_reliability.py", "tests/test_security.py"
CASES: dict[str, tuple[str, str, bool | None, bool | None]] = {
    # params
    "tests/test_config.py::test_bad_values_name_key_value_and_rule": ("params", "error", True, None),
    "tests/test_config.py::test_several_problems_stay_on_one_line": ("params", "error", True, None),
    "tests/test_config.py::test_not_a_mapping": ("params", "error", True, None),
    "tests/test_config.py::test_yaml_syntax_error_names_line": ("params", "error", True, None),
    "tests/test_config.py::test_unknown_key_is_refused_by_pydantic_model": ("params", "error", None, None),
    "tests/test_config.py::test_cli_bad_params_exit_2_one_line": ("params", "error", True, True),
    "tests/test_config.py::test_cli_yaml_syntax_error": ("params", "error", True, None),
    "tests/test_extract.py::test_choose_layers_keeps_forward_order_and_rejects_unknown": ("params", "error", True, None),
    "tests/test_extract.py::test_bad_extract_params": ("params", "error", True, True),
    "tests/test_models.py::test_kernel_larger_than_image_is_a_config_error": ("params", "error", True, None),
    "tests/test_models.py::test_valid_padding_that_leaves_no_map_names_the_fix": ("params", "error", True, None),
    "tests/test_models.py::test_lenet_kernel_too_large_for_second_conv": ("params", "error", True, None),
    "tests/test_autoencoders.py::test_kernel_larger_than_image_is_a_config_error": ("params", "error", True, None),
    "tests/test_train.py::test_kernel_larger_than_image_fails_at_train_with_exit_2": ("params", "error", True, True),
    "tests/test_train.py::test_epochs_zero_without_weights_is_refused": ("params", "error", None, None),
    "tests/test_datasets.py::test_split_refuses_a_test_part_that_leaves_no_training_data": ("params", "error", True, None),
    "tests/test_fetch.py::test_test_split_too_large_for_digits": ("params", "error", True, True),
    "tests/test_reduce_stage.py::test_unknown_method_is_one_line": ("params", "error", True, None),
    "tests/test_reduce_stage.py::test_unsupported_combination_fails_before_touching_outputs": ("params", "error", True, None),
    "tests/test_reducers.py::test_unsupported_tsne_combinations_are_refused": ("params", "error", True, None),
    "tests/test_reducers.py::test_unknown_method_is_refused": ("params", "error", True, None),
    "tests/test_reducers_cuml.py::test_missing_cuml_is_one_config_error": ("params", "error", True, None),
    "tests/test_reducers_cuml.py::test_missing_cuml_from_the_cli": ("params", "error", True, True),
    "tests/test_render_stage.py::test_bad_sample_index_is_one_line_and_leaves_nothing": ("params", "error", True, True),
    "tests/test_render_stage.py::test_unknown_render_layer_names_the_valid_ones": ("params", "error", True, True),
    "tests/test_projector.py::test_choose_layers": ("params", "error", True, None),
    "tests/test_projector.py::test_unknown_layer_is_one_line_exit_2_and_no_output": ("params", "error", True, True),
    f"{_R}::test_bad_params_exit_2_with_one_line": ("params", "error", True, True),
    f"{_R}::test_unreadable_params_file_exit_2": ("params", "error", True, True),
    f"{_R}::test_params_flag_pointing_nowhere_exit_2": ("params", "error", True, True),
    # click's usage block (Usage / Try --help / Error: ...) rather than one `error:` line
    f"{_R}::test_command_line_usage_errors_exit_2_without_traceback": ("params", "error", None, True),
    f"{_S}::test_python_tags_in_params_yaml_run_nothing": ("params", "error", True, True),
    "tests/test_reduce_stage.py::test_too_few_points_clamp_and_record": ("params", "handled", None, None),
    "tests/test_reducers.py::test_perplexity_is_clamped_for_few_points": ("params", "handled", None, None),
    "tests/test_reducers.py::test_n_neighbors_is_clamped_for_few_points": ("params", "handled", None, None),
    "tests/test_reducers.py::test_clamp_rules": ("params", "handled", None, None),
    f"{_R}::test_umap_n_neighbors_is_clamped_with_a_warning_recorded_in_metrics": ("params", "handled", None, None),
    f"{_R}::test_yaml_merge_keys_still_work": ("params", "handled", None, None),
    # data
    "tests/test_fetch.py::test_missing_root_without_download": ("data", "error", True, True),
    "tests/test_fetch.py::test_root_that_is_a_file": ("data", "error", True, True),
    "tests/test_fetch.py::test_no_raw_files_without_download": ("data", "error", True, True),
    "tests/test_fetch.py::test_one_missing_file_is_named": ("data", "error", True, True),
    "tests/test_fetch.py::test_truncated_idx_file": ("data", "error", True, True),
    "tests/test_fetch.py::test_labels_not_matching_images": ("data", "error", True, True),
    "tests/test_fetch.py::test_md5_mismatch_of_placed_archive": ("data", "error", True, True),
    "tests/test_fetch.py::test_damaged_gzip_with_matching_md5": ("data", "error", True, True),
    "tests/test_fetch.py::test_cifar_md5_mismatch": ("data", "error", True, True),
    "tests/test_fetch.py::test_cifar_offline_download": ("data", "error", True, True),
    "tests/test_fetch.py::test_offline_download_fails_fast_with_one_line": ("data", "error", True, True),
    "tests/test_datasets.py::test_check_idx_accepts_good_and_names_bad_files": ("data", "error", True, None),
    "tests/test_datasets.py::test_placed_gz_files_must_have_the_official_md5": ("data", "error", True, None),
    "tests/test_datasets.py::test_cifar_batches_must_have_the_official_md5": ("data", "error", True, None),
    "tests/test_datasets.py::test_offline_download_fails_at_once_with_the_timeout_set": ("data", "error", True, None),
    "tests/test_datasets.py::test_damaged_pickle_with_matching_md5_is_one_line": ("data", "error", True, None),
    "tests/test_reduce_stage.py::test_row_count_mismatch_is_a_user_error": ("data", "error", True, True),
    "tests/test_compare.py::test_revision_reads_and_explains_missing_files": ("data", "error", True, None),
    f"{_R}::test_damaged_prepared_data_stops_train": ("data", "error", True, True),
    f"{_R}::test_every_reader_of_the_test_images_checks_them": ("data", "error", True, True),
    f"{_R}::test_damaged_activations_stop_every_reader": ("data", "error", True, True),
    f"{_S}::test_object_array_in_the_activations_runs_nothing": ("data", "error", True, True),
    f"{_S}::test_object_array_in_the_prepared_data_runs_nothing": ("data", "error", True, True),
    f"{_S}::test_crafted_cifar_batch_is_never_unpickled": ("data", "error", True, True),
    f"{_S}::test_layer_names_cannot_reach_outside_the_stage_folders": ("data", "error", True, True),
    # model files
    "tests/test_own_weights.py::test_weights_of_another_architecture_name_the_first_mismatch": ("model files", "error", True, True),
    "tests/test_own_weights.py::test_pickled_or_missing_weights_are_refused": ("model files", "error", True, None),
    "tests/test_own_weights.py::test_config_beside_the_weights_must_agree": ("model files", "error", True, None),
    "tests/test_models.py::test_weights_round_trip_and_mismatch_names_first_tensor": ("model files", "error", True, None),
    f"{_R}::test_damaged_model_files_stop_extract": ("model files", "error", True, True),
    f"{_R}::test_every_reader_of_model_json_checks_it": ("model files", "error", True, True),
    f"{_S}::test_pickle_as_the_trained_weights_runs_nothing": ("model files", "error", True, True),
    f"{_S}::test_torch_checkpoint_as_a_snapshot_runs_nothing": ("model files", "error", True, True),
    f"{_S}::test_malicious_model_weights_run_nothing": ("model files", "error", True, True),
    # missing inputs
    "tests/test_train.py::test_train_without_prepared_data_says_what_to_run": ("missing inputs", "error", True, None),
    "tests/test_probe.py::test_probe_stage_without_activations": ("missing inputs", "error", True, True),
    "tests/test_reduce_stage.py::test_missing_activations_is_a_user_error": ("missing inputs", "error", True, None),
    "tests/test_diagnostics.py::test_diagnose_missing_activations_is_one_line_and_leaves_nothing":
        ("missing inputs", "error", True, True),
    "tests/test_compare.py::test_outside_a_dvc_project": ("missing inputs", "error", True, True),
    "tests/test_compare.py::test_synthetic_errors_leave_nothing": ("missing inputs", "error", True, True),
    "tests/test_export.py::test_export_without_onnx_explains_how_to_install": ("missing inputs", "error", True, True),
    f"{_R}::test_stage_in_an_empty_workspace_says_what_to_run": ("missing inputs", "error", True, True),
    f"{_R}::test_stage_with_one_input_missing_names_it": ("missing inputs", "error", True, True),
    # interrupted writers: readers refuse a folder without its completion marker
    f"{_R}::test_readers_refuse_a_folder_without_its_completion_marker": ("interruptions", "error", True, True),
    f"{_R}::test_render_refuses_a_half_written_embedding_folder": ("interruptions", "error", True, True),
    f"{_R}::test_every_marked_stage_writes_its_marker_last": ("interruptions", "handled", None, None),
    # messages that used to mislead
    f"{_R}::test_symlinked_activation_file_says_what_it_is": ("data", "error", True, True),
    f"{_R}::test_outputs_that_cannot_be_cleared_name_the_folder_and_change_nothing": ("interruptions", "error", True, None),
    f"{_R}::test_weights_folder_instead_of_a_file": ("model files", "error", True, True),
    f"{_R}::test_a_file_where_the_metrics_folder_should_be": ("missing inputs", "error", True, None),
    # exit codes, strict types, cosmetics
    f"{_R}::test_lenet_honours_an_empty_hidden_list": ("params", "handled", None, None),
    f"{_R}::test_knobs_an_arch_ignores_are_listed_and_noted_in_the_metrics": ("params", "handled", None, None),
    f"{_R}::test_exit_code_rule_holds_in_the_code": ("params", "handled", None, None),
    f"{_R}::test_reduce_with_an_unknown_method_is_a_usage_error": ("params", "error", None, None),
    f"{_R}::test_error_under_a_progress_bar_starts_its_own_line": ("data", "error", True, True),
    f"{_R}::test_ctrl_c_while_the_command_line_loads_is_one_line": ("interruptions", "error", True, True),
    f"{_R}::test_ctrl_c_twice_is_still_one_line": ("interruptions", "error", True, True),
    "tests/test_train.py::test_compile_without_a_cxx_compiler_is_one_line": ("missing inputs", "error", True, True),
    # wrong folder
    f"{_R}::test_stage_started_in_a_subfolder_runs_in_the_project_root": ("wrong folder", "handled", None, None),
    f"{_R}::test_params_flag_is_relative_to_where_you_are": ("wrong folder", "handled", None, None),
    f"{_R}::test_project_without_params_yaml_exit_2": ("wrong folder", "error", True, True),
    f"{_R}::test_outside_any_project_exit_2": ("wrong folder", "error", True, True),
    "tests/test_config.py::test_missing_file_is_an_error_and_an_empty_one_means_defaults": ("wrong folder", "error", True, None),
    # stale cache: an input changed, DVC must rerun what reads it
    "tests/test_dvc_deps.py::test_every_stage_declares_exactly_the_code_it_imports": ("stale cache", "handled", None, None),
    "tests/test_dvc_deps.py::test_check_reports_missing_unused_and_too_wide_deps": ("stale cache", "handled", None, None),
    "tests/test_dvc_pipeline.py::test_editing_a_module_changes_exactly_the_stages_that_import_it":
        ("stale cache", "handled", None, None),
    "tests/test_stale_cache.py::test_swapping_raw_label_files_reruns_fetch": ("stale cache", "handled", None, None),
    # interruptions
    "tests/test_faults.py::test_sigkill_then_repro_gives_uninterrupted_outputs": ("interruptions", "error", None, True),
    "tests/test_compare.py::test_synthetic_failure_while_writing_removes_partial_report":
        ("interruptions", "error", None, True),
    "tests/test_plots.py::test_save_figure_failure_leaves_no_file": ("interruptions", "error", None, True),
    f"{_R}::test_ctrl_c_in_the_middle_of_a_stage_removes_what_it_wrote": ("interruptions", "error", True, True),
    f"{_R}::test_signal_during_training_removes_partial_outputs": ("interruptions", "error", True, True),
    f"{_R}::test_every_write_in_the_pipeline_is_atomic": ("interruptions", "handled", None, None),
    # full disk
    f"{_R}::test_disk_full_while_writing_is_one_line_and_leaves_nothing": ("full disk", "error", True, True),
    "tests/test_full_disk.py::test_extract_checks_free_space_before_it_starts": ("full disk", "error", True, True),
    "tests/test_full_disk.py::test_a_full_disk_while_allocating_is_an_error_not_a_sigbus": ("full disk", "error", True, True),
    # numerical faults
    "tests/test_train.py::test_divergence_stops_with_one_line_and_no_outputs": ("numerical faults", "error", True, True),
    "tests/test_reduce_stage.py::test_no_mappable_layer_is_an_error_and_leaves_nothing":
        ("numerical faults", "error", True, True),
    "tests/test_reducers.py::test_bad_input_is_skipped_with_a_reason": ("numerical faults", "handled", None, None),
    "tests/test_reducers.py::test_sklearn_tsne_is_never_called_on_constant_input": ("numerical faults", "handled", None, None),
    "tests/test_reducers.py::test_nan_output_of_the_backend_is_caught": ("numerical faults", "handled", None, None),
    "tests/test_reducers.py::test_backend_exception_becomes_a_skip": ("numerical faults", "handled", None, None),
    "tests/test_reducers.py::test_partially_dead_layer_is_mapped_and_counted": ("numerical faults", "handled", None, None),
    "tests/test_reducers.py::test_metrics_undefined_cases": ("numerical faults", "handled", None, None),
    "tests/test_reduce_stage.py::test_reduce_writes_every_output": ("numerical faults", "handled", None, None),
    "tests/test_probe.py::test_dead_layer_gives_chance_not_a_crash": ("numerical faults", "handled", None, None),
    "tests/test_probe.py::test_nan_layer_is_skipped": ("numerical faults", "handled", None, None),
    "tests/test_probe.py::test_probe_stage_writes_metrics": ("numerical faults", "handled", None, None),
    "tests/test_diagnostics.py::test_diagnose_warns_about_a_mostly_dead_layer": ("numerical faults", "handled", None, None),
    "tests/test_projector.py::test_non_finite_values_name_the_layer": ("numerical faults", "handled", None, None),
    "tests/test_projector.py::test_stage_leaves_out_layers_extract_flagged_non_finite":
        ("numerical faults", "handled", None, None),
    "tests/test_similarity.py::test_undefined_for_constant_or_non_finite_layers": ("numerical faults", "handled", None, None),
    f"{_R}::test_nan_activations_are_skipped_and_recorded_by_every_reader": ("numerical faults", "handled", None, None),
    f"{_R}::test_nan_weights_are_analysed_with_a_warning_and_flagged_by_extract":
        ("numerical faults", "handled", None, None),
    f"{_R}::test_a_map_that_comes_back_nan_is_skipped_and_recorded": ("numerical faults", "handled", None, None),
    # determinism
    "tests/test_dvc_pipeline.py::test_forced_rerun_is_deterministic": ("determinism", "same", None, None),
    "tests/test_train.py::test_same_seed_gives_identical_weights": ("determinism", "same", None, None),
    "tests/test_reducers.py::test_embed_is_deterministic_for_a_seed": ("determinism", "same", None, None),
    "tests/test_datasets.py::test_mnist_5k_split_sizes_and_determinism": ("determinism", "same", None, None),
    "tests/test_own_weights.py::test_analyse_only_reproduces_the_run_exactly": ("determinism", "same", None, None),
    "tests/test_autoencoders.py::test_same_seed_same_model_and_same_sampled_loss": ("determinism", "same", None, None),
    f"{_R}::test_reduce_twice_gives_identical_maps_and_metrics": ("determinism", "same", None, None),
    f"{_R}::test_probe_twice_gives_identical_metrics": ("determinism", "same", None, None),
    f"{_R}::test_extract_twice_gives_identical_activations": ("determinism", "same", None, None),
    # fuzzing (hypothesis; examples per run in the listing)
    "tests/test_config.py::test_any_mapping_loads_or_gives_one_line": ("fuzzing", "property", True, None),
    "tests/test_reducers.py::test_property_pca_gives_finite_coords": ("fuzzing", "property", None, None),
    "tests/test_reducers.py::test_property_tsne_gives_finite_coords": ("fuzzing", "property", None, None),
    f"{_R}::test_fuzz_load_npy_never_crashes_or_unpickles": ("fuzzing", "property", True, None),
    f"{_R}::test_fuzz_load_prepared_accepts_exactly_the_contract": ("fuzzing", "property", True, None),
    f"{_R}::test_fuzz_layer_index_names_are_always_safe_file_names": ("fuzzing", "property", True, None),
    f"{_R}::test_fuzz_csv_writer_round_trips_through_a_csv_reader": ("fuzzing", "property", None, None),
}


def known_gaps() -> dict[str, int]:
    """Collected cases marked xfail here (they run, and currently fail the check): test -> count."""
    n = sum(1 for param in _activation_params() if param.marks)
    return {f"{_R}::test_damaged_activations_stop_every_reader": n}


def test_reliability_table_names_existing_tests():
    """Every test the README table counts still exists (the table cannot silently rot)."""
    for key in CASES:
        file, name = key.split("::")
        assert re.search(rf"^def {name}\(", (REPO / file).read_text(), re.M), key
    assert {c[0] for c in CASES.values()} == set(CATEGORIES)


def _collected() -> dict[str, int]:
    """test (file::function) -> number of collected cases (parametrisations), from pytest itself."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *sorted({k.split("::")[0] for k in CASES})], cwd=REPO, capture_output=True, text=True)
    counts: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        if "::" in line:
            key = line.split("[")[0].strip()
            counts[key] = counts.get(key, 0) + 1
    return counts


def reliability_table() -> str:
    """Per category: cases tried; of the must-fail ones, how many assert the one-line error and the
    clean workspace, and how many of those pass (xfail cases do not); cases that must run through."""
    counts, gaps = _collected(), known_gaps()
    rows = ["| category | cases tried | must fail | clear one-line error: passing / checked "
            "| clean workspace: passing / checked | must run through (skip, clamp, record, same bytes) |",
            "|---|---|---|---|---|---|"]
    listing = []
    for cat in CATEGORIES:
        tried = fail = one = one_ok = clean = clean_ok = through = 0
        for key, (c, outcome, one_line, cleaned) in CASES.items():
            if c != cat:
                continue
            n, bad = counts.get(key, 0), gaps.get(key, 0)
            tried += n
            if outcome == "error":
                fail += n
                one, one_ok = one + (n if one_line else 0), one_ok + (n - bad if one_line else 0)
                clean, clean_ok = clean + (n if cleaned else 0), clean_ok + (n - bad if cleaned else 0)
            else:
                through += n
            listing.append(f"- {cat}: `{key}` x{n}" + (f" ({bad} xfail)" if bad else ""))
        rows.append(f"| {cat} | {tried} | {fail} | {one_ok} / {one} | {clean_ok} / {clean} | {through} |")
    return "\n".join(rows) + "\n\n" + "\n".join(listing) + "\n"


if __name__ == "__main__":
    print(reliability_table())
