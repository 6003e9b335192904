"""The whole pipeline through real DVC commands, in the session's shared git repository with tiny
params (conftest's ``dvc_repo``: `dvc repro` from scratch, committed): every output, a no-op
repro, experiments that change one knob each and which stages they rerun, `dvc metrics diff`,
determinism of a forced rerun, and which stages an edit of a pipeline module makes stale.

Elsewhere, on the same repository: `python -m pipeline compare` between the committed run and
the filters=8 experiment (test_compare.py), SIGKILL mid-stage then repro (test_faults.py),
replacing a weights file (test_own_weights.py).
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.dvc_repo import dvc, git, stages_ran

pytestmark = pytest.mark.slow


def test_repro_from_scratch_writes_every_output(dvc_repo):
    root = dvc_repo
    for path in ("data/prepared/info.json", "data/model/model.safetensors", "data/activations/layers.json",
                 "data/embeddings/pca/act4.npy", "data/embeddings/tsne/act4.npy", "data/embeddings/umap/act4.npy",
                 "data/projector/projector_config.pbtxt", "data/export/export.json", "metrics/train/metrics.json",
                 "metrics/embeddings/tsne.json", "metrics/probes.json", "metrics/render.json",
                 "metrics/diagnostics.json", "plots/confusion.csv", "plots/figures/confusion.png",
                 "plots/figures/evolution_tsne_act4.gif", "plots/points/umap/12_act4.csv"):
        assert (root / path).exists(), path
    # render.figures (tests/dvc_repo.py) chose the figures drawn, not the numbers
    assert not list((root / "plots/figures").glob("scatter_*"))
    render_metrics = json.loads((root / "metrics/render.json").read_text())
    assert {"class_separation", "redundancy", "outliers"} <= set(render_metrics)


def test_noop_repro_runs_nothing(dvc_repo):
    out = dvc("repro", cwd=dvc_repo).stdout
    assert stages_ran(out) == set(), out


def test_metrics_show_lists_accuracy_and_per_layer_numbers(dvc_repo):
    shown = json.loads(dvc("metrics", "show", "--json", cwd=dvc_repo).stdout)
    text = json.dumps(shown)
    for key in ('"accuracy"', '"knn_accuracy"', '"trustworthiness"', '"dead_fraction"', '"act4"'):
        assert key in text, key


def test_exp_filters_reruns_train_and_after_but_not_fetch(filters8_exp):
    ran = filters8_exp["ran"]
    assert "fetch" not in ran
    assert {"train", "extract", "reduce@pca", "reduce@tsne", "reduce@umap", "render", "probe"} <= ran, ran
    diff = filters8_exp["diff"]
    # the workspace held the experiment's results: accuracy and per-layer embedding metrics changed
    train_diff = diff.get("metrics/train/metrics.json", {})
    assert "test.accuracy" in train_diff, list(diff)
    tsne_diff = diff.get("metrics/embeddings/tsne.json", {})
    assert any(key.startswith("conv1.") for key in tsne_diff), list(tsne_diff)[:10]
    probes = diff.get("metrics/probes.json", {})
    assert any(key.endswith(".accuracy") for key in probes), list(probes)[:10]


@pytest.mark.parametrize("change, method, other", [({"perplexity": 8}, "tsne", "umap"), ({"n_neighbors": 6}, "umap", "tsne")])
def test_one_map_param_reruns_only_that_map_and_after(dvc_repo, change, method, other):
    """What a change of one t-SNE or UMAP knob reruns, as DVC decides it without running anything:
    ``dvc repro --dry`` names the stages whose own inputs changed (only that map), and ``dvc dag``
    what comes after it (render and explore, not the other maps). filters8_exp runs a real
    experiment end to end."""
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["reduce"][method].update(change)
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert stages_ran(dvc("repro", "--dry", cwd=dvc_repo).stdout) == {f"reduce@{method}"}
    edges = [line.strip().rstrip(";").replace('"', "").split(" -> ")
             for line in dvc("dag", "--dot", cwd=dvc_repo).stdout.splitlines() if " -> " in line]
    after = {b for a, b in edges if a == f"reduce@{method}"}
    assert {"render", "explore"} <= after and not after & {"fetch", "train", "extract", "reduce@pca",
                                                          f"reduce@{other}", "probe", "projector"}, after


def test_forced_rerun_is_deterministic(dvc_repo):
    """A forced rerun of every stage no other test reruns (render, diagnose, projector, explore,
    export, and any new one): dvc.lock (the hash of every output, cached or not) byte-identical to
    the committed one, and every git-tracked file (metrics, plots) unchanged.

    The other stages are rerun and compared elsewhere, byte for byte: train and extract through DVC
    after a SIGKILL (test_faults.py), reduce (t-SNE, UMAP, with snapshot frames), probe and extract
    twice in one workspace (test_reliability.py), train with the same seed (test_train.py), fetch
    (test_datasets.py)."""
    root = dvc_repo
    committed = git("show", "HEAD:dvc.lock", cwd=root)
    assert (root / "dvc.lock").read_text() == committed
    elsewhere = {"fetch", "train", "extract", "reduce", "probe"}
    forced = [name for name in yaml.safe_load(committed)["stages"] if name.split("@")[0] not in elsewhere]
    assert {"render", "diagnose", "projector", "export"} <= set(forced), forced
    out = dvc("repro", "--force", "--single-item", *forced, cwd=root).stdout
    assert stages_ran(out) == set(forced), out
    changed = [line for line in git("status", "--porcelain", cwd=root).splitlines() if line.strip()]
    assert (root / "dvc.lock").read_text() == committed, "\n".join(changed)
    assert not changed, changed
    assert (root / "logs/train/timings.json").exists() and (root / "logs/reduce/tsne.json").exists()


def _stages_importing(module: str) -> set[str]:
    """dvc.yaml stages (foreach ones expanded) whose command imports ``module`` (tests/test_dvc_deps.py)."""
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
def test_editing_a_module_changes_exactly_the_stages_that_import_it(dvc_repo, module):
    root = dvc_repo
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
