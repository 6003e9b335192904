"""The whole pipeline through real DVC commands, in a temporary git repository with tiny params.

One repository per session (``pipeline_repo``): `dvc repro` from scratch, then experiments that
change one knob each, checking which stages ran; `dvc metrics diff`; determinism of a forced
rerun; and `python -m pipeline compare` between the committed run and an experiment.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.dvc_repo import dvc, git, make_repo, run, stages_ran

pytestmark = pytest.mark.slow

def _dvc_stage_names() -> set[str]:
    """Every stage of dvc.yaml, foreach stages expanded (reduce@pca, ...)."""
    import yaml

    from tests.conftest import REPO

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {f"{name}@{item}" for name, body in stages.items() for item in body.get("foreach", [])} | \
        {name for name, body in stages.items() if "foreach" not in body}


ALL_STAGES = _dvc_stage_names()


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory) -> Path:
    root = make_repo(tmp_path_factory.mktemp("dvc_pipeline"))
    out = dvc("repro", cwd=root).stdout
    assert stages_ran(out) == ALL_STAGES, out
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "tiny run", cwd=root)
    return root


def _exp_run(root: Path, name: str, *sets: str) -> set[str]:
    """`dvc exp run --name NAME -S ...`; returns the stages that ran."""
    args = ["exp", "run", "--name", name]
    for s in sets:
        args += ["-S", s]
    return stages_ran(dvc(*args, cwd=root).stdout)


def test_repro_from_scratch_writes_every_output(pipeline_repo):
    root = pipeline_repo
    for path in ("data/prepared/info.json", "data/model/model.safetensors", "data/activations/layers.json",
                 "data/embeddings/pca/act4.npy", "data/embeddings/tsne/act4.npy", "data/embeddings/umap/act4.npy",
                 "data/projector/projector_config.pbtxt", "data/export/export.json", "metrics/train/metrics.json",
                 "metrics/embeddings/tsne.json", "metrics/probes.json", "metrics/render.json",
                 "metrics/diagnostics.json", "plots/confusion.csv", "plots/figures/progression_tsne.png",
                 "plots/points/umap/12_act4.csv"):
        assert (root / path).exists(), path


def test_noop_repro_runs_nothing(pipeline_repo):
    out = dvc("repro", cwd=pipeline_repo).stdout
    assert stages_ran(out) == set(), out


def test_metrics_show_lists_accuracy_and_per_layer_numbers(pipeline_repo):
    shown = json.loads(dvc("metrics", "show", "--json", cwd=pipeline_repo).stdout)
    text = json.dumps(shown)
    for key in ('"accuracy"', '"knn_accuracy"', '"trustworthiness"', '"dead_fraction"', '"act4"'):
        assert key in text, key


def test_exp_filters_reruns_train_and_after_but_not_fetch(pipeline_repo):
    name = "filters8"
    ran = _exp_run(pipeline_repo, name, "model.filters=8")
    assert "fetch" not in ran
    assert {"train", "extract", "reduce@pca", "reduce@tsne", "reduce@umap", "render", "probe"} <= ran, ran
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=pipeline_repo).stdout)
    # workspace holds the experiment's results: accuracy and per-layer embedding metrics changed
    train_diff = diff.get("metrics/train/metrics.json", {})
    assert "test.accuracy" in train_diff, list(diff)
    tsne_diff = diff.get("metrics/embeddings/tsne.json", {})
    assert any(key.startswith("conv1.") for key in tsne_diff), list(tsne_diff)[:10]
    probes = diff.get("metrics/probes.json", {})
    assert any(key.endswith(".accuracy") for key in probes), list(probes)[:10]
    # compare the committed run and the experiment: CKA between every pair of layers
    out = pipeline_repo / "plots" / "compare_test"
    run([sys.executable, "-m", "pipeline", "compare", "HEAD", name, "--out", str(out)], cwd=pipeline_repo)
    cka = json.loads((out / "cka.json").read_text())
    matrix = np.array(cka["matrix"], dtype=float)
    assert cka["layers_a"] == cka["layers_b"]
    wins = sum(int(np.nanargmax(row) == i) for i, row in enumerate(matrix))
    assert wins > len(matrix) / 2, matrix
    assert (out / "cka.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.rmtree(out)


def test_exp_tsne_param_reruns_only_tsne_and_after(pipeline_repo):
    ran = _exp_run(pipeline_repo, "perplexity8", "reduce.tsne.perplexity=8")
    assert "reduce@tsne" in ran and "render" in ran
    assert not ran & {"fetch", "train", "extract", "reduce@pca", "reduce@umap", "probe", "projector"}, ran


def test_exp_umap_param_reruns_only_umap_and_after(pipeline_repo):
    ran = _exp_run(pipeline_repo, "neighbours6", "reduce.umap.n_neighbors=6")
    assert "reduce@umap" in ran and "render" in ran
    assert not ran & {"fetch", "train", "extract", "reduce@pca", "reduce@tsne", "probe", "projector"}, ran


def test_forced_rerun_is_deterministic(pipeline_repo):
    """`dvc repro --force` of the whole pipeline: dvc.lock (the hash of every output, cached or not)
    byte-identical to the committed one, and every git-tracked file (metrics, plots) unchanged."""
    root = pipeline_repo
    git("checkout", "-q", "--", ".", cwd=root)            # back to the committed params and results
    dvc("checkout", "--force", cwd=root, check=False)
    committed = git("show", "HEAD:dvc.lock", cwd=root)
    assert (root / "dvc.lock").read_text() == committed
    out = dvc("repro", "--force", cwd=root).stdout
    assert stages_ran(out) == ALL_STAGES, out
    changed = [line for line in git("status", "--porcelain", cwd=root).splitlines() if line.strip()]
    assert (root / "dvc.lock").read_text() == committed, "\n".join(changed)
    assert not changed, changed
    assert (root / "logs/train/timings.json").exists() and (root / "logs/reduce/tsne.json").exists()


def _stages_importing(module: str) -> set[str]:
    """dvc.yaml stages (foreach ones expanded) whose command imports ``module`` (tests/test_dvc_deps.py)."""
    import yaml

    from tests.conftest import REPO
    from tests.test_dvc_deps import code_deps, stage_modules

    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    names = set()
    for name, stage_module in stage_modules(dvc_yaml).items():
        if module in code_deps(stage_module):
            items = dvc_yaml["stages"][name].get("foreach")
            names |= {f"{name}@{item}" for item in items} if items else {name}
    return names


@pytest.mark.parametrize("module", ["pipeline/runtime.py", "pipeline/datasets.py", "pipeline/quality.py",
                                    "pipeline/plots/common.py"])
def test_editing_a_module_changes_exactly_the_stages_that_import_it(pipeline_repo, module):
    root = pipeline_repo
    git("checkout", "-q", "--", ".", cwd=root)
    dvc("checkout", "--force", cwd=root, check=False)
    expected = _stages_importing(module)
    assert expected, module
    path = root / module
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# an edit\n")
        status = json.loads(dvc("status", "--json", cwd=root).stdout)
    finally:
        path.write_bytes(original)
    changed = {stage for stage, entries in status.items()
               if any(module in (entry.get("changed deps") or {}) for entry in entries if isinstance(entry, dict))}
    assert changed == expected, (module, status)
    assert set(status) == expected, status                  # nothing else is out of date
