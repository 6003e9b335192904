"""The compare command: pure helpers, figures, and real DVC repositories (synthetic and full pipeline)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.figure import Figure

from pipeline.errors import UserError
from pipeline.plots.compare import cka_heatmap, maps_side_by_side
from pipeline.stages.compare import (OUTPUT_FILES, Revision, align_layers, check_same_images, choose_method,
                                     stale_outputs, summary_markdown, verdict)
from tests.conftest import REPO, run_cli
from tests.dvc_repo import dvc, exp_run, git

LENET = ["input", "conv1", "act1", "pool1", "conv2", "act2", "pool2", "flatten", "fc1", "act3", "fc2", "act4",
         "logits"]
MLP = ["input", "flatten", "fc1", "act1", "fc2", "act2", "logits"]


# ----------------------------------------------------------------------------- pure helpers

def test_align_layers_same_and_different_architectures() -> None:
    assert align_layers(LENET, LENET) == [(n, n) for n in LENET]
    rows = align_layers(LENET, MLP)
    # every layer appears exactly once per side, in forward order
    assert [a for a, _ in rows if a] == LENET
    assert [b for _, b in rows if b] == MLP
    matched = [a for a, b in rows if a and b]
    assert matched[0] == "input" and matched[-1] == "logits"
    assert set(matched) <= set(LENET) & set(MLP)
    assert ("conv1", None) in rows


def _subset(indices, labels=None, dataset="mnist-5k") -> dict:
    indices = np.asarray(indices)
    return {"dataset": dataset, "indices": indices,
            "labels": np.asarray(labels) if labels is not None else indices % 3}


def test_check_same_images() -> None:
    a = _subset([3, 8, 10, 42])
    assert check_same_images(a, _subset([3, 8, 10, 42]), "A", "B").tolist() == [0, 1, 2, 3]
    # the same images in another order: B is reordered to A's order
    b = _subset([42, 3, 10, 8])
    order = check_same_images(a, b, "A", "B")
    assert b["indices"][order].tolist() == [3, 8, 10, 42]
    with pytest.raises(UserError, match=r"different test images.*4 and 4 images, 3 in common.*extract\.n_samples "
                                        r"and extract\.seed"):
        check_same_images(a, _subset([3, 8, 10, 43]), "HEAD", "exp-1")
    with pytest.raises(UserError, match="4 and 3 images"):
        check_same_images(a, _subset([3, 8, 10]), "A", "B")
    with pytest.raises(UserError, match="A = A was extracted from dataset mnist-5k and B = B from digits"):
        check_same_images(a, _subset([3, 8, 10, 42], dataset="digits"), "A", "B")
    with pytest.raises(UserError, match="different labels"):
        check_same_images(a, _subset([3, 8, 10, 42], labels=[0, 0, 0, 0]), "A", "B")


def test_choose_method_prefers_tsne_then_umap_then_pca_common_to_both() -> None:
    assert choose_method(["pca", "tsne", "umap"], ["umap", "tsne"]) == "tsne"
    assert choose_method(["pca", "umap"], ["umap", "pca"]) == "umap"
    assert choose_method(["pca", "tsne"], ["pca", "umap"]) == "pca"
    assert choose_method(["tsne"], ["umap"]) is None


def test_stale_outputs_from_dvc_lock() -> None:
    def out(path: str, md5: str) -> dict:
        return {"path": path, "hash": "md5", "md5": md5}

    lock = {"schema": "2.0", "stages": {
        "extract": {"deps": [out("data/model", "m.dir")], "outs": [out("data/activations", "new.dir")]},
        "reduce@pca": {"deps": [out("data/activations", "old.dir"), out("pipeline/reducers.py", "r")],
                       "outs": [out("data/embeddings/pca", "e.dir"), out("metrics/embeddings/pca.json", "j")]},
        "reduce@tsne": {"deps": [out("data/activations", "new.dir")],
                        "outs": [out("data/embeddings/tsne", "t.dir"), out("metrics/embeddings/tsne.json", "k")]},
        "probe": {"deps": [out("data/activations", "old.dir")], "outs": [out("metrics/probes.json", "p")]},
    }}
    assert stale_outputs(lock) == {"data/embeddings/pca", "metrics/embeddings/pca.json", "metrics/probes.json"}
    lock["stages"]["probe"]["deps"][0]["md5"] = "new.dir"
    lock["stages"]["reduce@pca"]["deps"][0]["md5"] = "new.dir"
    assert stale_outputs(lock) == set()
    assert stale_outputs(None) == set() and stale_outputs({"stages": "junk"}) == set()
    del lock["stages"]["extract"]                  # nothing says which activations are current
    assert stale_outputs(lock) == set()


def test_verdict() -> None:
    a = {"knn": 0.90, "trust": 0.95, "probe": 0.80}
    b = {"knn": 0.93, "trust": 0.951, "probe": 0.85}
    winner, phrases = verdict(a, b)
    assert winner == "B"
    assert phrases == ["kNN accuracy 0.900 vs 0.930 (B higher)", "trustworthiness 0.950 vs 0.951 (tie)",
                       "probe accuracy 0.800 vs 0.850 (B higher)"]
    assert verdict(b, a)[0] == "A"
    assert verdict({"knn": 0.9, "probe": 0.7}, {"knn": 0.8, "probe": 0.8})[0] is None     # one each
    assert verdict({"knn": None}, {"knn": 0.8}) == (None, [])


def test_summary_markdown_tables_and_verdict() -> None:
    rows = align_layers(LENET, MLP)
    emb_a = {n: {"knn_accuracy": 0.5 + i / 40, "trustworthiness": 0.9} for i, n in enumerate(LENET)}
    emb_b = {n: {"knn_accuracy": 0.4 + i / 40, "trustworthiness": 0.9} for i, n in enumerate(MLP)}
    emb_b["act1"] = {"skipped": "constant layer"}
    probes_a = {n: {"accuracy": 0.7} for n in LENET}
    probes_b = {"act2": {"accuracy": 0.6}}
    cka = {("input", "input"): 1.0, ("fc1", "fc1"): 0.42, ("logits", "logits"): None}
    text = summary_markdown(label_a="HEAD (abc1234)", label_b="exp-x (def5678)",
                            info_a={"arch": "lenet", "params": 61706, "test_accuracy": 0.965, "test_loss": 0.1,
                                    "penultimate": "act4"},
                            info_b={"arch": "mlp", "params": 235146, "test_accuracy": 0.95, "test_loss": None,
                                    "penultimate": "act2"},
                            rows=rows, cka=cka, emb_a=emb_a, emb_b=emb_b, probes_a=probes_a, probes_b=probes_b,
                            method="tsne", n_images=120)
    assert "| architecture | lenet | mlp |" in text
    assert "| parameters | 61,706 | 235,146 |" in text
    assert "| test accuracy | 0.9650 | 0.9500 |" in text
    assert "| test loss | 0.1000 | – |" in text
    assert "of the 2-D t-SNE maps" in text
    assert "| input | 1.000 | 0.500 | 0.400 |" in text
    assert re.search(r"\| fc1 \| 0\.420 \| 0\.700 \| 0\.450 \|", text)
    assert "| conv1 (A only) | – | 0.525 | – |" in text
    assert "| **act4** (before output of A) (A only) |" in text
    # act1/act2 exist in both but cannot be matched in forward order with flatten/fc1/fc2: one row each
    assert "| **act2** (before output of B) (B only) |" in text
    assert "| act2 (A only) |" in text
    assert "| act1 (B only) | – | – | – | – | – | – | – |" in text      # B's act1 was skipped by reduce
    # A's act4 (kNN 0.775, probe 0.7) against B's act2 (kNN 0.525, probe 0.6): A wins 2 of 3, trust ties
    assert "**A** (`HEAD (abc1234)`) has the better representation, higher on 2 of 3" in text
    assert "trustworthiness 0.900 vs 0.900 (tie)" in text
    # no maps and no probes: says what to run
    bare = summary_markdown(label_a="a", label_b="b", info_a={"penultimate": "x"}, info_b={"penultimate": "x"},
                            rows=[("x", "x")], cka={("x", "x"): 0.5}, emb_a=None, emb_b=None, probes_a=None,
                            probes_b=None, method=None, n_images=10)
    assert "no metrics of that layer at both revisions" in bare and "`dvc repro`" in bare
    assert "| **x** (before output) | 0.500 | – |" in bare
    assert "| | A | B |" not in bare and "no 2-D maps made with the same method" in bare


class _FakeFS:
    """Stands in for DVCFileSystem: some files exist, some are tracked without cached data."""

    def __init__(self, files: dict[str, bytes], tracked: set[str]) -> None:
        self.files, self.tracked = files, tracked

    def read_bytes(self, path: str) -> bytes:
        if path in self.files:
            return self.files[path]
        raise FileNotFoundError(path)

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.tracked


def test_revision_reads_and_explains_missing_files() -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.int64).reshape(2, 3))
    fs = _FakeFS({"a.npy": buf.getvalue(), "m.json": b'{"x": 1}', "bad.npy": b"junk", "bad.json": b"{"},
                 tracked={"data/activations/act4.npy"})
    rev = Revision(rev="exp-abc", sha="0123456789abcdef", fs=fs)
    assert rev.label == "exp-abc (0123456)"
    assert Revision(rev="0123456", sha="0123456789abcdef", fs=fs).label == "0123456"
    assert Revision(rev="workspace", sha=None, fs=fs).label == "workspace"
    assert rev.read_npy("a.npy", ndim=2).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert rev.read_json("m.json") == {"x": 1}
    assert rev.read_json("nope.json", required=False) is None
    with pytest.raises(UserError, match=r"exp-abc \(0123456\): data/activations/act4\.npy is tracked but not in "
                                        r"the DVC cache; run `dvc repro` / `dvc exp run` at that revision, or `dvc pull`"):
        rev.read_npy(Path("data/activations/act4.npy"))
    with pytest.raises(UserError, match="layers.json does not exist; run `dvc repro`"):
        rev.read_json("data/activations/layers.json")
    with pytest.raises(UserError, match="not a plain .npy"):
        rev.read_npy("bad.npy")
    with pytest.raises(UserError, match="not valid JSON"):
        rev.read_json("bad.json")
    with pytest.raises(UserError, match="expected 1 dimensions"):
        rev.read_npy("a.npy", ndim=1)


# ----------------------------------------------------------------------------- figures

def test_cka_heatmap_cells_labels_and_undefined_values() -> None:
    m = np.array([[1.0, 0.25, np.nan], [0.5, 0.875, 0.1]])
    fig = cka_heatmap(m, ["conv1", "act4"], ["fc1", "act2", "dead"], label_a="HEAD (abc)", label_b="exp-1",
                      mark_a="act4", mark_b="act2", n_points=120)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["1.00", "0.25", "n/a", "0.50", "0.88", "0.10"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["conv1", "act4"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fc1", "act2", "dead"]
    assert "HEAD (abc)" in ax.get_ylabel() and "exp-1" in ax.get_xlabel()
    assert "120 test images" in ax.get_title()
    bold = [t.get_text() for t in [*ax.get_xticklabels(), *ax.get_yticklabels()] if t.get_fontweight() == "bold"]
    assert bold == ["act2", "act4"]
    image = ax.images[0]
    assert image.get_clim() == (0.0, 1.0)
    with pytest.raises(ValueError, match="does not match"):
        cka_heatmap(m, ["a"], ["b"], label_a="a", label_b="b")


def test_maps_side_by_side_same_colours_and_titles() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    a, b = rng.normal(size=(30, 2)) + labels[:, None], rng.normal(size=(30, 3))
    fig = maps_side_by_side(a, b, labels, ["zero", "one", "two"], method="tsne", title_a="A: HEAD · layer act4",
                            title_b="B: exp · layer act4", scores_a="kNN acc 0.900", scores_b="kNN acc 0.800")
    left, right = fig.axes[:2]
    assert left.get_title() == "A: HEAD · layer act4\nkNN acc 0.900"
    assert right.get_title() == "B: exp · layer act4\nkNN acc 0.800"
    assert left.get_xlabel() == "t-SNE 1"
    ca = left.collections[0].get_facecolors()
    cb = right.collections[0].get_facecolors()
    # same palette on both sides: the set of colours used is the same
    assert {tuple(np.round(c[:3], 3)) for c in ca} == {tuple(np.round(c[:3], 3)) for c in cb}
    assert len({tuple(np.round(c[:3], 3)) for c in ca}) == 3
    with pytest.raises(ValueError, match="29 points but 30 labels"):
        maps_side_by_side(a[:29], b, labels, ["zero", "one", "two"], method="pca", title_a="A", title_b="B")


def test_outside_a_dvc_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    proc = run_cli("compare", "HEAD", "main", cwd=tmp_path, check=False)
    assert proc.returncode == 2                                  # started in the wrong place: a usage error
    assert proc.stderr.strip().startswith("error: no params.yaml or dvc.yaml in ") and "or any folder above it" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "plots").exists()


# ----------------------------------------------------------------------------- a synthetic DVC repo

def _write_run(root: Path, layers: dict[str, np.ndarray], labels: np.ndarray, indices: np.ndarray, *,
               penultimate: str, arch: str, test_accuracy: float, knn: dict[str, float] | None = None) -> None:
    """The files extract / reduce / probe / train would have written (synthetic values)."""
    act = root / "data" / "activations"
    shutil.rmtree(act, ignore_errors=True)
    act.mkdir(parents=True)
    for name, x in layers.items():
        np.save(act / f"{name}.npy", x.astype(np.float32))
    np.save(act / "labels.npy", labels.astype(np.int64))
    np.save(act / "indices.npy", indices.astype(np.int64))
    index = {"arch": arch, "dataset": "mnist-5k", "classes": [str(k) for k in range(int(labels.max()) + 1)],
             "n": len(labels), "layers": [{"name": n, "dim": int(x.shape[1])} for n, x in layers.items()],
             "output_layer": list(layers)[-1], "penultimate": penultimate}
    (act / "layers.json").write_text(json.dumps(index))
    (root / "metrics" / "train").mkdir(parents=True, exist_ok=True)
    (root / "metrics" / "train" / "metrics.json").write_text(json.dumps(
        {"test": {"accuracy": test_accuracy, "loss": 0.3}, "params": 1000}))
    if knn is not None:
        emb = root / "data" / "embeddings" / "pca"
        shutil.rmtree(emb, ignore_errors=True)
        emb.mkdir(parents=True)
        np.save(emb / f"{penultimate}.npy", layers[penultimate][:, :2].astype(np.float32))
        (root / "metrics" / "embeddings").mkdir(parents=True, exist_ok=True)
        (root / "metrics" / "embeddings" / "pca.json").write_text(json.dumps(
            {n: {"knn_accuracy": v, "trustworthiness": 0.9} for n, v in knn.items()}))
        (root / "metrics" / "probes.json").write_text(json.dumps({n: {"accuracy": v} for n, v in knn.items()}))


def _commit_outputs(root: Path, message: str, tracked: list[str]) -> None:
    dvc("add", *tracked, cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", message, cwd=root)


@pytest.fixture(scope="module")
def synthetic_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """git + DVC repo with three tagged runs of synthetic activations on the same 60 images:
    `lenet-a`, `rotated` (every layer of lenet-a rotated and scaled: CKA 1 on the diagonal) and
    `mlp` (other layer names and widths), plus `other-images` (a different subset)."""
    root = tmp_path_factory.mktemp("synthetic_repo")
    git("init", "-q", "-b", "main", cwd=root)
    dvc("init", "-q", cwd=root)
    (root / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")     # what marks the project folder
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "empty project", cwd=root)
    rng = np.random.default_rng(0)
    n = 60
    labels, indices = np.arange(n) % 3, np.arange(0, 2 * n, 2)
    base = rng.normal(size=(n, 4)) + labels[:, None]
    layers_a = {"input": rng.normal(size=(n, 30)), "conv1": np.tanh(base @ rng.normal(size=(4, 50))),
                "act4": base @ rng.normal(size=(4, 8)) + 0.1 * rng.normal(size=(n, 8)),
                "logits": rng.normal(size=(n, 3))}
    _write_run(root, layers_a, labels, indices, penultimate="act4", arch="lenet", test_accuracy=0.9,
               knn={"act4": 0.8, "conv1": 0.6})
    _commit_outputs(root, "lenet a", ["data/activations", "data/embeddings"])
    git("tag", "lenet-a", cwd=root)
    rotated = {}
    for i, (name, x) in enumerate(layers_a.items()):
        q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
        rotated[name] = (x @ q) * (i + 2) + 5.0
    _write_run(root, rotated, labels, indices, penultimate="act4", arch="lenet", test_accuracy=0.95,
               knn={"act4": 0.85, "conv1": 0.6})
    _commit_outputs(root, "rotated", ["data/activations", "data/embeddings"])
    git("tag", "rotated", cwd=root)
    layers_m = {"input": layers_a["input"], "fc1": rng.normal(size=(n, 20)), "act2": base @ rng.normal(size=(4, 6)),
                "logits": rng.normal(size=(n, 3))}
    _write_run(root, layers_m, labels, indices, penultimate="act2", arch="mlp", test_accuracy=0.7,
               knn={"act2": 0.7})
    _commit_outputs(root, "mlp", ["data/activations", "data/embeddings"])
    git("tag", "mlp", cwd=root)
    _write_run(root, layers_a, labels, indices + 1, penultimate="act4", arch="lenet", test_accuracy=0.9)
    _commit_outputs(root, "other images", ["data/activations"])
    git("tag", "other-images", cwd=root)
    return root


@pytest.mark.slow
def test_synthetic_rotation_gives_unit_diagonal(synthetic_repo: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from pipeline.config import Params
    from pipeline.stages import compare

    monkeypatch.chdir(synthetic_repo)
    out = tmp_path / "report"
    result = compare.run(Params(), rev_a="lenet-a", rev_b="rotated", out=out)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    data = json.loads((out / "cka.json").read_text())
    assert data["layers_a"] == data["layers_b"] == ["input", "conv1", "act4", "logits"]
    m = np.array(data["matrix"], dtype=float)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-5)
    assert m[0, 3] < 0.9                                     # unrelated random layers are not similar
    assert data["sha_a"] == git("rev-parse", "lenet-a^{commit}", cwd=synthetic_repo).strip()
    assert data["same_name"]["act4"] == pytest.approx(1.0, abs=1e-5)
    printed = capsys.readouterr().out
    assert printed == (out / "summary.md").read_text() == result["summary"]
    assert "**B** (`rotated" in printed and "| test accuracy | 0.9000 | 0.9500 |" in printed
    assert "kNN accuracy 0.800 vs 0.850 (B higher)" in printed


@pytest.mark.slow
def test_synthetic_different_architectures(synthetic_repo: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import Params
    from pipeline.stages import compare

    monkeypatch.chdir(synthetic_repo)
    out = tmp_path / "arch"
    result = compare.run(Params(), rev_a="lenet-a", rev_b="mlp", out=out)
    assert result["cka"].shape == (4, 4)
    data = json.loads((out / "cka.json").read_text())
    assert data["layers_b"] == ["input", "fc1", "act2", "logits"]
    m = np.array(data["matrix"], dtype=float)
    assert m[0, 0] == pytest.approx(1.0)                     # the same input on both sides
    assert m[2, 2] > 0.5 > m[2, 1]                           # act4 and act2 are both functions of `base`
    summary = (out / "summary.md").read_text()
    assert "| conv1 (A only) |" in summary and "| fc1 (B only) |" in summary
    assert "(A: `act4`, B: `act2`)" in summary and "**A** (`lenet-a" in summary
    assert (out / "maps.png").stat().st_size > 10_000


@pytest.mark.slow
def test_synthetic_errors_leave_nothing(synthetic_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "keep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "cka.json").write_text("stale")
    cases = [
        (("lenet-a", "no-such-rev"), r"unknown revision 'no-such-rev'.*`git log --oneline`.*`dvc exp show`"),
        (("lenet-a", "other-images"), r"different test images \(indices\.npy: 60 and 60 images, 0 in common\).*"
                                      r"data\.\*, extract\.n_samples and extract\.seed"),
        (("HEAD~4", "lenet-a"), r"HEAD~4 \([0-9a-f]{7}\): data/activations/layers\.json does not exist; run "
                                r"`dvc repro` / `dvc exp run` at that revision, or `dvc pull`"),
    ]
    for args, pattern in cases:
        proc = run_cli("compare", *args, "--out", str(out), cwd=synthetic_repo, check=False)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and re.search(pattern, lines[-1]), proc.stderr
        assert "Traceback" not in proc.stderr
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]      # ours removed, the user's kept
        assert proc.stdout == ""
    fresh = tmp_path / "fresh"
    proc = run_cli("compare", "lenet-a", "nope", "--out", str(fresh / "deeper"), cwd=synthetic_repo, check=False)
    assert proc.returncode == 1 and not fresh.exists()


@pytest.mark.slow
def test_synthetic_failure_while_writing_removes_partial_report(synthetic_repo: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import Params
    from pipeline.stages import compare

    monkeypatch.chdir(synthetic_repo)
    written = []

    def broken_maps(*args, **kwargs):
        written.extend(sorted(p.name for p in (tmp_path / "new" / "report").iterdir()))
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "_maps", broken_maps)
    with pytest.raises(KeyboardInterrupt):
        compare.run(Params(), rev_a="lenet-a", rev_b="rotated", out=tmp_path / "new" / "report")
    assert written == ["cka.json", "cka.png"]                 # the failure came after real writes
    assert not (tmp_path / "new").exists()                    # and the folders it made are gone too


# ----------------------------------------------------------------------------- the real pipeline under DVC

def _exp_sha(root: Path, name: str) -> str:
    ref = next(r for r in git("for-each-ref", "refs/exps", "--format=%(refname)", cwd=root).split()
               if r.endswith("/" + name))
    return git("rev-parse", ref, cwd=root).strip()


@pytest.mark.slow
def test_compare_experiments_of_the_real_pipeline(dvc_repo: Path, filters8_exp: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's DVC repository (the committed tiny run), its `model.filters=8` experiment and
    an experiment that reran only extract with another seed (other test images)."""
    from pipeline.config import Params
    from pipeline.stages import compare

    root = dvc_repo
    first = git("rev-list", "--max-parents=0", "HEAD", cwd=root).strip()      # before any output existed
    wider = filters8_exp["name"]
    # extract.n_samples 120 < 200 test images, so another seed picks other images; extract alone is enough
    other_subset = "extract-seed1"
    assert exp_run(root, other_subset, "extract.seed=1", targets=("extract",)) == {"extract"}

    t1 = time.perf_counter()
    proc = run_cli("compare", "HEAD", wider, cwd=root)
    t_compare = time.perf_counter() - t1
    out = root / "plots" / "compare"
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    data = json.loads((out / "cka.json").read_text())
    m = np.array(data["matrix"], dtype=float)
    assert data["layers_a"] == data["layers_b"] and len(data["layers_a"]) == m.shape[0] == m.shape[1]
    assert np.isfinite(m).all() and (m >= 0).all() and (m <= 1).all()
    diag_best = int(sum(np.argmax(m[i]) == i for i in range(len(m))))
    assert diag_best > len(m) / 2, np.round(m, 3)
    assert np.diag(m).mean() > m[~np.eye(len(m), dtype=bool)].mean()
    assert m[0, 0] == pytest.approx(1.0, abs=1e-6)         # both saw the same input pixels
    summary = (out / "summary.md").read_text()
    assert proc.stdout == summary
    assert "2-D t-SNE maps" in summary and "| test accuracy |" in summary and "**act4**" in summary
    assert re.search(r"\| \*\*act4\*\* \(before output\) \| 0\.\d{3} \| 0\.\d{3} \| 0\.\d{3} \|", summary)
    assert (out / "maps.png").stat().st_size > 10_000 and (out / "cka.png").stat().st_size > 10_000
    print(f"\nCKA diagonal HEAD vs {wider} (filters 6 -> 8): "
          + ", ".join(f"{n} {v:.3f}" for n, v in zip(data["layers_a"], np.diag(m))))
    print(f"compare (CLI) {t_compare:.1f} s")

    # the rest in-process (no interpreter start per case); the CLI's one-line errors are checked above
    monkeypatch.chdir(root)
    # the last `dvc exp run` left its outputs in the workspace: the same run as that experiment
    same = compare.run(Params(), rev_a="workspace", rev_b=other_subset, out=root / "plots" / "same")
    np.testing.assert_allclose(np.diag(same["cka"]), 1.0, atol=1e-6)
    # only extract ran in that experiment: its reduce maps and probes (in dvc.lock) describe other images
    assert same["method"] is None
    assert "| **act4** (before output) | 1.000 | – | – | – | – | – | – |" in same["summary"]

    def fails(a: str, b: str) -> str:
        with pytest.raises(UserError) as info:
            compare.run(Params(), rev_a=a, rev_b=b, out=out)
        assert not any(out.iterdir())
        return str(info.value)

    assert "unknown revision 'exp-nope'" in fails("HEAD", "exp-nope")
    assert "data/activations/layers.json does not exist; run `dvc repro`" in fails("HEAD", first[:9])
    msg = fails("HEAD", other_subset)
    assert "different test images" in msg and "extract.seed" in msg
    # the experiment's act4.npy tracked in its dvc.lock but gone from the cache
    assert data["sha_b"] == _exp_sha(root, wider)
    lock = yaml.safe_load(git("show", f"{data['sha_b']}:dvc.lock", cwd=root))   # git itself knows no exp names
    out_hash = next(o["md5"] for o in lock["stages"]["extract"]["outs"] if o["path"] == "data/activations")
    cache = root / ".dvc" / "cache" / "files" / "md5"
    entries = json.loads((cache / out_hash[:2] / out_hash[2:]).read_text())
    obj = next(e["md5"] for e in entries if e["relpath"] == "act4.npy")
    moved = tmp_path / "act4.obj"
    shutil.move(cache / obj[:2] / obj[2:], moved)
    try:
        msg = fails("HEAD", wider)
        assert "data/activations/act4.npy is tracked but not in the DVC cache" in msg and "dvc pull" in msg
    finally:
        shutil.move(moved, cache / obj[:2] / obj[2:])
