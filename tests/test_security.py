"""Untrusted files: nothing the pipeline reads can run code or write outside a stage's folders.

The payload is the classic malicious pickle: an object whose ``__reduce__`` makes unpickling call
``os.system("touch <marker>")``. Each test first proves the crafted file is live (loading it the
unsafe way creates the marker), removes the marker, then runs the stage through the real CLI entry
point and checks: exit code, one ``error:`` line, none of the stage's outputs, and no marker.
Weights are read with safetensors, arrays with ``allow_pickle=False``, params with ``yaml.safe_load``,
CIFAR-10's pickled batches only after their MD5 matched torchvision's; layer names from layers.json
must be plain file names (``artifacts.load_layer_index``).
"""

from __future__ import annotations

import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import artifacts, paths
from tests.conftest import REPO, write_params
from tests.test_datasets import no_network, write_cifar  # noqa: F401  (no_network is a fixture)
from tests.test_reliability import edit_json, expect_failure, set_params

M = paths.MODEL
A = paths.ACTIVATIONS


class RunsCode:
    """Unpickling this runs ``touch <marker>`` in a shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """Where the payload would leave its trace; the payload is checked to be live first."""
    path = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(RunsCode(path)))
    assert path.exists(), "the payload does not run: the tests below would prove nothing"
    path.unlink()
    return path


def pickle_file(path: Path, marker: Path) -> Path:
    """A raw pickle that runs code (e.g. a ``.pt`` saved with plain pickle), at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"layers.conv1.weight": RunsCode(marker)}))
    return path


def torch_file(path: Path, marker: Path) -> Path:
    """A ``torch.save`` checkpoint (zip + pickle) that runs code under ``torch.load(weights_only=False)``."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".pt")              # torch.load reads *.safetensors with safetensors
    torch.save({"state_dict": RunsCode(marker)}, staging)
    torch.load(staging, weights_only=False)                  # live: it does run
    assert marker.exists()
    marker.unlink()
    staging.replace(path)
    return path


def object_npy(path: Path, marker: Path, rows: int = 120) -> Path:
    """A .npy holding an object array (stored as a pickle) that runs code under ``allow_pickle=True``."""
    np.save(path, np.array([RunsCode(marker)] * rows, dtype=object), allow_pickle=True)
    np.load(path, allow_pickle=True)                         # live: it does run
    assert marker.exists()
    marker.unlink()
    return path


SAFETENSORS_REFUSED = "not a valid safetensors file ("
SAFETENSORS_FIX = "weights must be saved with safetensors.torch.save_file (pickled .pt files are refused)"


@pytest.mark.parametrize("args", [("extract",), ("export",), ("render",)])
def test_pickle_as_the_trained_weights_runs_nothing(staged_ws: Path, capsys, marker: Path, args):
    pickle_file(M / "model.safetensors", marker)
    set_params(staged_ws, {"render": {"dpi": 50}})
    message = expect_failure(capsys, *args)
    assert message.startswith(f"data/model/model.safetensors: {SAFETENSORS_REFUSED}") and message.endswith(SAFETENSORS_FIX)
    assert not marker.exists()


def test_torch_checkpoint_as_a_snapshot_runs_nothing(staged_ws: Path, capsys, marker: Path):
    torch_file(M / "snapshots" / "step_000005.safetensors", marker)
    message = expect_failure(capsys, "extract")
    assert message.startswith(f"data/model/snapshots/step_000005.safetensors: {SAFETENSORS_REFUSED}")
    assert not marker.exists()


@pytest.mark.parametrize("name, make", [("evil.safetensors", pickle_file), ("evil.pt", torch_file)])
def test_malicious_model_weights_run_nothing(staged_ws: Path, capsys, marker: Path, name, make):
    weights = make(staged_ws / "data" / "weights" / name, marker)
    set_params(staged_ws, {"model": {"weights": str(weights.relative_to(staged_ws))}, "train": {"epochs": 0}})
    message = expect_failure(capsys, "train")
    assert message.startswith(f"data/weights/{name}: {SAFETENSORS_REFUSED}") and message.endswith(SAFETENSORS_FIX)
    assert not marker.exists()


READERS = [("reduce", "pca"), ("probe",), ("projector",), ("diagnose",)]
ACTIVATION_FILES = [(args, file) for args in READERS for file in ("input.npy", "labels.npy")] + [
    (("render",), "labels.npy"), (("render",), "confidence.npy")]     # render reads layer files late (slow)


@pytest.mark.parametrize("args, file", ACTIVATION_FILES, ids=[f"{a[0]}-{f}" for a, f in ACTIVATION_FILES])
def test_object_array_in_the_activations_runs_nothing(staged_ws: Path, capsys, marker: Path, args, file):
    object_npy(A / file, marker)
    set_params(staged_ws, {"render": {"dpi": 50}})
    message = expect_failure(capsys, *args)
    assert message == f"data/activations/{file}: holds pickled Python objects, not numbers; delete it and rerun `dvc repro`"
    assert not marker.exists()


@pytest.mark.parametrize("args, file", [(("train",), "train_images.npy"), (("extract",), "test_images.npy"),
                                        (("projector",), "test_images.npy")])
def test_object_array_in_the_prepared_data_runs_nothing(staged_ws: Path, capsys, marker: Path, args, file):
    object_npy(paths.PREPARED / file, marker)
    message = expect_failure(capsys, *args)
    assert message == f"data/prepared/{file}: holds pickled Python objects, not numbers; delete it and rerun `dvc repro`"
    assert not marker.exists()


@pytest.mark.parametrize("download", [False, True])
def test_crafted_cifar_batch_is_never_unpickled(workspace: Path, capsys, marker: Path, no_network, download):
    """CIFAR-10 ships as pickles that torchvision unpickles: they are read only once their MD5 is
    torchvision's, so a replaced batch is refused (offline) or re-downloaded (here: no network)."""
    root = workspace / "raw"
    write_cifar(root)
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": RunsCode(marker), "labels": [0]}, protocol=2))
    write_params(workspace, {"data": {"dataset": "cifar10", "root": "raw", "download": download}})
    message = expect_failure(capsys, "fetch")
    if download:
        assert message.startswith("cifar10: download failed (network disabled by the test suite)")
    else:
        assert message.startswith("raw/cifar-10-batches-py/data_batch_1: MD5 ")
        assert "does not match torchvision's c99cafc152244af753f735de768cd75f for cifar10" in message
    assert not marker.exists()


def test_python_tags_in_params_yaml_run_nothing(workspace: Path, capsys, marker: Path):
    import yaml

    text = f"train:\n  epochs: !!python/object/apply:os.system [\"touch {marker}\"]\n"
    yaml.unsafe_load(text)                                   # live: an unsafe loader runs it
    assert marker.exists()
    marker.unlink()
    (workspace / "params.yaml").write_text(text)
    message = expect_failure(capsys, "fetch", code=2)
    assert message.startswith("params.yaml: YAML syntax error at line 2, column 11: could not determine a "
                              "constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'")
    assert not marker.exists()


def _all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("key", ["layers", "snapshot_layers"])
@pytest.mark.parametrize("args", [("reduce", "pca"), ("probe",), ("projector",), ("diagnose",)],
                         ids=["reduce", "probe", "projector", "diagnose"])
def test_layer_names_cannot_reach_outside_the_stage_folders(staged_ws: Path, capsys, args, key):
    """A layer named ``../../escaped`` in layers.json (with a real file where that name points) would
    make reduce write data/escaped.npy and plots/escaped.csv, and projector data/escaped.bytes."""
    np.save(staged_ws / "escaped.npy", np.random.default_rng(0).normal(size=(120, 4)).astype(np.float32))
    bad = "../../escaped"
    if key == "layers":
        edit_json(A / "layers.json", lambda d: {**d, "layers": [*d["layers"], {"name": bad, "type": "Linear",
                                                                               "shape": [4], "dim": 4}]})
    else:
        edit_json(A / "layers.json", lambda d: {**d, "snapshot_layers": [bad]})
    before = _all_files(staged_ws)
    message = expect_failure(capsys, *args)
    where = "data/activations/layers.json" + (" (snapshot_layers)" if key == "snapshot_layers" else "")
    assert message == (f"{where}: layer name '../../escaped' is not a plain file name (letters, digits, _ . -); "
                       f"delete it and rerun extract (`dvc repro extract`)")
    assert _all_files(staged_ws) <= before                  # nothing new anywhere in the workspace
    artifacts.remove(staged_ws / "escaped.npy")


def test_importing_artifacts_leaves_the_umask_alone() -> None:
    """The umask is read when a file is written (files get the usual 0666 & ~umask), never changed at import."""
    code = ("import os; os.umask(0o027); import pipeline.artifacts as a, tempfile, pathlib; "
            "d = pathlib.Path(tempfile.mkdtemp()); a.save_json(d / 'x.json', {}); "
            "print(oct(os.umask(0o022)), oct(os.stat(d / 'x.json').st_mode & 0o777))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0o27", "0o640"]
