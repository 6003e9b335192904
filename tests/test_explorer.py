"""The explorer page: the library on tiny arrays, and the page in a real headless Chromium.

Browser tests (tests/browser.py) check what a user would see: the page loads from disk with no
console error and no request leaving the machine, the maps are drawn (pixels of the class colours
in the map's canvas), and a selection made in one layer is the selection of every layer of every
run (one shared data source). The screenshots are kept under test-artifacts/browser/.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.explorer import ExplorerRun, Snapshot, explorer_html, explorer_layout, thumbnail_sprite
from pipeline.stages.explore import pick_rows, thin_frames
from tests.browser import distinct_colours, nonblank_fraction

LAYERS = ["input", "conv1", "act1", "fc1", "logits"]
METHODS = ("pca", "tsne")
CLASSES = [str(k) for k in range(4)]


def tiny_runs(n: int = 60, n_runs: int = 2, seed: int = 0) -> tuple[list[ExplorerRun], np.ndarray, np.ndarray]:
    """Runs on n points of 4 classes, with separable maps, a skipped layer and 3 snapshot frames."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    centres = rng.normal(size=(len(CLASSES), 2)) * 6
    runs = []
    for r in range(n_runs):
        maps = {m: {layer: (centres[labels] * (i + 1) + rng.normal(size=(n, 2))).astype(np.float32)
                    for i, layer in enumerate(LAYERS)} for m in METHODS}
        del maps["tsne"]["act1"]
        wrong = rng.random(n) < 0.2
        preds = np.where(wrong, (labels + 1) % len(CLASSES), labels)
        scores = {m: {layer: {"knn_accuracy": 0.4 + 0.1 * i, "trustworthiness": 0.9, "silhouette": 0.05 * i}
                      for i, layer in enumerate(LAYERS) if layer in maps[m]} for m in METHODS}
        snaps = {"tsne": [Snapshot(step=s * 10, epoch=s * 0.5, accuracy=0.3 * s,
                                   coords=(centres[labels] * s + rng.normal(size=(n, 2))).astype(np.float32))
                          for s in range(3)]}
        runs.append(ExplorerRun(label=f"run{r}", layers=LAYERS, maps=maps, preds=preds,
                                confidence=rng.random(n).astype(np.float32), scores=scores,
                                probes={layer: 0.5 + 0.1 * i for i, layer in enumerate(LAYERS)},
                                skipped={"tsne": {"act1": "dead layer"}}, snapshot_layer="fc1", snapshots=snaps,
                                test_accuracy=float((preds == labels).mean())))
    images = rng.integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8)
    return runs, labels, images


# -- the library ----------------------------------------------------------------------------------


def test_sprite_holds_every_thumbnail_once_in_row_major_cells():
    rng = np.random.default_rng(1)
    for channels in (1, 3):
        images = rng.integers(0, 256, size=(7, channels, 5, 4), dtype=np.uint8)
        png, cols, cell = thumbnail_sprite(images)
        grid = np.asarray(Image.open(io.BytesIO(png)))
        assert (cols, cell) == (3, 5)
        assert grid.shape[:2] == (3 * 5, 3 * 5)
        for i in range(7):
            r, q = divmod(i, cols)
            got = grid[r * cell:r * cell + 5, q * cell:q * cell + 4]
            want = images[i].transpose(1, 2, 0)
            np.testing.assert_array_equal(got.reshape(want.shape), want)
    with pytest.raises(ValueError, match="uint8"):
        thumbnail_sprite(np.zeros((2, 1, 4, 4), dtype=np.float32))


def test_layout_puts_every_map_of_every_run_on_one_shared_source():
    from bokeh.models import ColumnDataSource, GlyphRenderer

    runs, labels, images = tiny_runs()
    layout, sprite = explorer_layout(runs, labels=labels, classes=CLASSES, images=images)
    sources = {id(s): s for s in layout.select({"type": ColumnDataSource}) if s.name == "points"}
    assert len(sources) == 1
    source = next(iter(sources.values()))
    scatters = [r for r in layout.select({"type": GlyphRenderer})
                if r.name and re.match(r"(map|strip|snap)_r\d", r.name)]
    # a large map, one small map per layer and a snapshot map, per run
    assert sorted(r.name for r in scatters) == sorted(
        [f"map_r{r}" for r in range(2)] + [f"snap_r{r}" for r in range(2)]
        + [f"strip_r{r}_l{l}" for r in range(2) for l in range(len(LAYERS))])
    assert all(r.data_source is source for r in scatters)
    data = source.data
    n = len(labels)
    assert all(len(v) == n for v in data.values())
    # each map's coordinates once (float32, 12 mantissa bits); the skipped layer points at the NaN column
    for r, run in enumerate(runs):
        for m, method in enumerate(METHODS):
            for l, layer in enumerate(LAYERS):
                key = f"r{r}_m{m}_l{l}"
                if layer in run.maps[method]:
                    np.testing.assert_allclose(data[key + "_x"], run.maps[method][layer][:, 0], rtol=2 ** -12)
                    np.testing.assert_allclose(data[key + "_y"], run.maps[method][layer][:, 1], rtol=2 ** -12)
                    assert data[key + "_x"].dtype == np.float32
                else:
                    assert key + "_x" not in data
        np.testing.assert_array_equal(data[f"r{r}_pred"], run.preds)
    assert np.isnan(data["_nan"]).all()
    # thumbnails once: a sprite (data URL) and two offsets per point, no image column per layer
    assert sprite.startswith("data:image/png;base64,")
    assert not [k for k, v in data.items() if isinstance(v, list) and v and str(v[0]).startswith("data:")]
    np.testing.assert_array_equal(data["idx"], np.arange(n))
    assert data["cls"][:4] == CLASSES


def test_html_is_self_contained_and_the_same_every_time():
    runs, labels, images = tiny_runs(n=40, n_runs=1)
    first = explorer_html(runs, labels=labels, classes=CLASSES, images=images, title="tiny")
    second = explorer_html(runs, labels=labels, classes=CLASSES, images=images, title="tiny")
    assert first == second
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<img[^>]+src=\"?https?:", first)
    assert first.count('--hs-sprite:url("data:image/png;base64,') == 1
    assert "Bokeh" in first and "<title>tiny</title>" in first
    other = explorer_html(runs, labels=labels, classes=["a", "b", "c", "d"], images=images, title="tiny")
    assert other != first


def test_without_thumbnails_or_predictions_the_page_still_builds():
    runs, labels, _ = tiny_runs(n=30, n_runs=1)
    runs[0].preds = runs[0].confidence = None
    html = explorer_html(runs, labels=labels, classes=CLASSES, images=None)
    assert "--hs-sprite:none" in html
    assert "prediction" not in re.findall(r'"labels":\[[^\]]*"class"[^\]]*\]', html)[0]


def test_inconsistent_input_is_refused_with_the_run_and_layer_named():
    runs, labels, images = tiny_runs(n=30, n_runs=1)
    runs[0].maps["pca"]["fc1"] = runs[0].maps["pca"]["fc1"][:-1]
    with pytest.raises(ValueError, match=r"run0: pca map of fc1 has shape \(29, 2\)"):
        explorer_html(runs, labels=labels, classes=CLASSES, images=images)
    runs, labels, images = tiny_runs(n=30, n_runs=1)
    with pytest.raises(ValueError, match="31 images for 30 points"):
        explorer_html(runs, labels=labels, classes=CLASSES, images=np.concatenate([images, images[:1]]))


def test_compact_keeps_12_mantissa_bits_and_non_finite_values():
    from pipeline.explorer import compact

    x = np.array([1.0, 1 + 2 ** -13, 1 + 2 ** -11, -3.14159265, 1e-30, 3e38, np.nan, np.inf, -np.inf, 0.0],
                 dtype=np.float32)
    y = compact(x)
    assert y.dtype == np.float32
    assert y[0] == 1.0 and y[2] == np.float32(1 + 2 ** -11)
    assert y[1] in (1.0, np.float32(1 + 2 ** -12))
    finite = np.isfinite(x)
    assert np.all(np.abs(y[finite] - x[finite]) <= np.abs(x[finite]) * 2.0 ** -13)
    assert np.isnan(y[6]) and y[7] == np.inf and y[8] == -np.inf and y[9] == 0.0
    assert np.all(y.view(np.uint32)[finite] & 0x7FF == 0)           # the low 11 bits are zero
    assert compact(x, bits=23).tobytes() == x.tobytes()


def test_take_subsets_every_array_alike():
    runs, labels, _ = tiny_runs(n=20, n_runs=1)
    rows = np.array([5, 1, 17])
    sub = runs[0].take(rows)
    np.testing.assert_array_equal(sub.maps["pca"]["fc1"], runs[0].maps["pca"]["fc1"][rows])
    np.testing.assert_array_equal(sub.preds, runs[0].preds[rows])
    np.testing.assert_array_equal(sub.snapshots["tsne"][2].coords, runs[0].snapshots["tsne"][2].coords[rows])


def test_thin_frames_and_pick_rows():
    assert thin_frames(5, 12) == [0, 1, 2, 3, 4]
    assert thin_frames(100, 4) == [0, 33, 66, 99]
    assert thin_frames(9, 1) == [8]
    labels = np.arange(1000) % 10
    rows = pick_rows(labels, 100, seed=0)
    assert len(rows) == 100 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == [10] * 10
    np.testing.assert_array_equal(pick_rows(labels, None, seed=0), np.arange(1000))


# -- in a real browser --------------------------------------------------------------------------

SCATTER_NAMES = """
const doc = Bokeh.documents[0];
const names = [];
for (const m of doc._all_models.values()) {
  const n = m.properties && m.properties.name && !m.properties.name.is_unset ? m.name : null;
  if (n && /^(map|strip|snap)_r\\d/.test(n)) names.push(n);
}
return names.sort();
"""

SELECTIONS = """
const doc = Bokeh.documents[0];
const out = {};
for (const name of arguments[0]) {
  out[name] = Array.from(doc.get_model_by_name(name).data_source.selected.indices).sort((a, b) => a - b);
}
return out;
"""


def open_explorer(browser, page: Path) -> None:
    browser.open(page)
    browser.wait_for("return window.Bokeh !== undefined && Bokeh.documents.length > 0"
                     " && Bokeh.documents[0].is_idle", timeout=120)


def canvas_png(browser, figure_name: str) -> bytes:
    """PNG of one figure's plotting frame (the canvas area inside the axes)."""
    import base64

    box = browser.run("""
        const v = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name(arguments[0]));
        const r = v.el.getBoundingClientRect(), f = v.frame.bbox;
        return [r.left + f.left + window.scrollX, r.top + f.top + window.scrollY, f.width, f.height];""",
                      figure_name)
    shot = browser.driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": box[0], "y": box[1], "width": box[2], "height": box[3], "scale": 1}})
    return base64.b64decode(shot["data"])


HOVER = """
const d = Bokeh.documents[0];
const r = d.get_model_by_name(arguments[1]), v = Bokeh.index.find_one(d.get_model_by_name(arguments[0]));
v.el.scrollIntoView();
const data = r.data_source.data, i = arguments[2];
const sx = v.frame.x_scale.compute(data[r.glyph.x.field][i]), sy = v.frame.y_scale.compute(data[r.glyph.y.field][i]);
const rect = v.el.getBoundingClientRect();
return [rect.left + sx, rect.top + sy];
"""

TOOLTIP = """
function find(root) {
  for (const el of root.querySelectorAll('.bk-tooltip-content')) { if (el.innerText.trim()) return el; }
  for (const el of root.querySelectorAll('*')) { if (el.shadowRoot) { const f = find(el.shadowRoot); if (f) return f; } }
  return null;
}
const t = find(document);
if (!t) return null;
const thumb = t.querySelector('div[style*="--hs-sprite"]');
const r = thumb ? thumb.getBoundingClientRect() : null;
return {text: t.innerText, thumb: r ? [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height] : null,
        image: thumb ? getComputedStyle(thumb).backgroundImage.slice(0, 30) : null};
"""


def hover(browser, figure: str, renderer: str, i: int) -> dict:
    """Move the mouse onto point i of a map; the tooltip's text and the box of its thumbnail."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    x, y = browser.run(HOVER, figure, renderer, i)
    actions = ActionBuilder(browser.driver)
    actions.pointer_action.move_to_location(int(x), int(y))            # viewport coordinates
    actions.perform()
    return browser.wait_for(TOOLTIP, timeout=20)


def check_linked_selection(browser, chosen: list[int], via: str) -> dict[str, list[int]]:
    """Select ``chosen`` through one renderer's source (as a box/lasso tool does); every map's selection."""
    names = browser.run(SCATTER_NAMES)
    assert via in names
    browser.run("Bokeh.documents[0].get_model_by_name(arguments[0]).data_source.selected.indices = arguments[1];",
                via, chosen)
    browser.wait_for("return Bokeh.documents[0].get_model_by_name('selection').text.includes('hs-count')")
    return browser.run(SELECTIONS, names)


@pytest.mark.slow
def test_two_run_page_in_chromium_draws_links_and_stays_offline(browser, tmp_path: Path):
    runs, labels, images = tiny_runs(n=200, n_runs=2)
    page = tmp_path / "explorer.html"
    page.write_text(explorer_html(runs, labels=labels, classes=CLASSES, images=images, title="two runs"))
    open_explorer(browser, page)
    assert browser.console_errors() == []
    assert browser.external_requests() == []
    assert {url.split(":")[0] for url in browser.requests()} <= {"file", "data"}   # the page, the sprite

    # drawn: the large map's frame holds the class colours, not just background
    frame = canvas_png(browser, "map_fig_r0")
    assert nonblank_fraction(frame) > 0.005
    assert distinct_colours(frame) >= 1 + len(CLASSES)

    chosen = [3, 17, 42, 43, 199]
    selections = check_linked_selection(browser, chosen, via="strip_r0_l1")
    assert len(selections) == 2 * (2 + len(LAYERS))
    assert all(sel == chosen for sel in selections.values()), selections
    text = browser.run("return Bokeh.documents[0].get_model_by_name('selection').text")
    assert '<span class="hs-count">5</span> selected' in text
    assert text.count('class="hs-thumb"') == 5

    # another layer and method: every glyph variant follows (selected points drawn where they are)
    browser.run("const d = Bokeh.documents[0]; d.get_model_by_name('method').active = 1;"
                " d.get_model_by_name('layer_r1').value = 0;")
    fields = browser.wait_for("""
        const r = Bokeh.documents[0].get_model_by_name('map_r1');
        const f = [r.glyph.x.field, r.selection_glyph.x.field, r.nonselection_glyph.x.field];
        return f[0] == 'r1_m1_l0_x' ? f : null;""")
    assert fields == ["r1_m1_l0_x"] * 3
    assert browser.console_errors() == []
    png = browser.screenshot("explorer_two_runs")
    assert nonblank_fraction(png) > 0.02


@pytest.mark.slow
def test_box_drag_in_the_large_map_selects_in_every_layer(browser, tmp_path: Path):
    from selenium.webdriver.common.action_chains import ActionChains

    runs, labels, images = tiny_runs(n=200, n_runs=1)
    page = tmp_path / "explorer.html"
    page.write_text(explorer_html(runs, labels=labels, classes=CLASSES, images=images))
    open_explorer(browser, page)
    box = browser.run("""
        const v = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('map_fig_r0'));
        const r = v.el.getBoundingClientRect(), f = v.frame.bbox;
        v.el.scrollIntoView();
        const r2 = v.el.getBoundingClientRect();
        return [r2.left + f.left, r2.top + f.top, f.width, f.height];""")
    body = browser.driver.find_element("tag name", "body")
    x0, y0, w, h = box
    (ActionChains(browser.driver)
     .move_to_element_with_offset(body, 0, 0).perform())
    # drag over the whole frame (viewport coordinates relative to the body's centre)
    size = browser.run("return [document.body.getBoundingClientRect().width, document.body.getBoundingClientRect().height,"
                       " document.body.getBoundingClientRect().left, document.body.getBoundingClientRect().top]")
    cx, cy = size[2] + size[0] / 2, size[3] + size[1] / 2
    (ActionChains(browser.driver)
     .move_to_element_with_offset(body, int(x0 + 2 - cx), int(y0 + 2 - cy)).click_and_hold()
     .move_by_offset(int(w / 2), int(h / 2)).move_by_offset(int(w / 2 - 4), int(h / 2 - 4)).release().perform())
    browser.wait_for("return Bokeh.documents[0].get_model_by_name('points').selected.indices.length > 0")
    names = browser.run(SCATTER_NAMES)
    selections = browser.run(SELECTIONS, names)
    first = selections["map_r0"]
    assert len(first) == 200                        # the whole frame: every point
    assert all(sel == first for sel in selections.values())
    assert browser.console_errors() == []
    browser.screenshot("explorer_box_drag")


# -- the stage and the two-run command, on a real tiny pipeline -------------------------------------


@pytest.fixture(scope="session")
def explored_ws(pipeline_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pipeline_ws + reduce pca + probe + explore (do not modify; copy it)."""
    import shutil

    from tests.conftest import run_cli, run_in_process

    ws = tmp_path_factory.mktemp("explored") / "ws"
    shutil.copytree(pipeline_ws, ws)
    with pytest.MonkeyPatch.context() as mp:
        run_in_process(ws, mp, ("reduce", "pca"), ("probe",))
    run_cli("explore", cwd=ws)
    return ws


@pytest.mark.slow
def test_explore_stage_page_works_offline_in_chromium(explored_ws: Path, browser):
    from pipeline import paths

    page = explored_ws / paths.EXPLORER
    html = page.read_text()
    index = __import__("json").loads((explored_ws / "data/activations/layers.json").read_text())
    layers = [row["name"] for row in index["layers"]]
    assert f"PCA: {layers[-2]} (layer {len(layers) - 1} of {len(layers)})" in html
    open_explorer(browser, page)
    assert browser.console_errors() == []
    assert browser.external_requests() == []
    frame = canvas_png(browser, "map_fig_r0")
    assert nonblank_fraction(frame) > 0.005 and distinct_colours(frame) >= 5
    # hover: the image (cropped from the sprite), true class, prediction and confidence
    labels = np.load(explored_ws / "data/activations/labels.npy")
    preds = np.load(explored_ws / "data/activations/preds.npy")
    conf = np.load(explored_ws / "data/activations/confidence.npy")
    indices = np.load(explored_ws / "data/activations/indices.npy")
    tip = hover(browser, "map_fig_r0", "map_r0", 7)
    assert tip["text"].split("\n") == [f"test image {indices[7]}", f"true {labels[7]}",
                                       f"predicted {preds[7]} (p = {conf[7]:.3f})"], tip
    assert tip["image"].startswith('url("data:image/png;base64,')
    import base64

    x, y, w, h = tip["thumb"]
    shot = browser.driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "clip": {"x": x + 1, "y": y + 1, "width": w - 2, "height": h - 2, "scale": 1}})
    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("L"))
    assert thumb.min() < 40 and thumb.max() > 200          # an MNIST digit: white strokes on black

    chosen = [0, 5, 6, 50, 119]
    selections = check_linked_selection(browser, chosen, via="map_r0")
    assert len(selections) == 2 + len(layers)                  # large map, snapshot map, one per layer
    assert all(sel == chosen for sel in selections.values()), selections
    # the thumbnails listed come from the sprite (real digits: not blank)
    listed = browser.run("return Bokeh.documents[0].get_model_by_name('selection').text")
    assert listed.count("var(--hs-sprite)") == len(chosen)
    browser.screenshot("explorer_stage")


@pytest.mark.slow
def test_explore_two_folders_side_by_side_and_mismatched_images(explored_ws: Path, tmp_path: Path):
    import shutil

    from tests.conftest import run_cli

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(explored_ws, a)
    shutil.copytree(explored_ws, b)
    (b / "data/embeddings/pca/info.json").unlink()          # B without maps of one method: refused, named
    out = tmp_path / "both.html"
    proc = run_cli("explore", str(a), str(b), "--out", str(out), cwd=a, check=False)
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip().count("\n") == 0 and "no maps to explore" in proc.stderr
    shutil.rmtree(b)
    shutil.copytree(explored_ws, b)
    proc = run_cli("explore", str(a), str(b), "--out", str(out), cwd=a)
    html = out.read_text()
    assert '"name":"map_r0"' in html and '"name":"map_r1"' in html
    assert f"A: {a}" not in html and str(b) in html
    # other test images in B: one line, exit 1, nothing written
    out.unlink()
    indices = np.load(b / "data/activations/indices.npy")
    np.save(b / "data/activations/indices.npy", indices + 1)
    proc = run_cli("explore", str(a), str(b), "--out", str(out), cwd=a, check=False)
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.startswith("error: ") and proc.stderr.strip().count("\n") == 0
    assert "different test images" in proc.stderr


@pytest.mark.slow
def test_explore_usage_and_params_errors(explored_ws: Path, tmp_path: Path):
    import shutil

    import yaml

    from tests.conftest import run_cli

    ws = tmp_path / "ws"
    shutil.copytree(explored_ws, ws)
    page = ws / "plots/explorer.html"
    proc = run_cli("explore", "--out", "x.html", cwd=ws, check=False)
    assert proc.returncode == 2 and "--out is for `explore A [B]`" in proc.stderr
    proc = run_cli("explore", "a", "b", "c", cwd=ws, check=False)
    assert proc.returncode == 1 and "one or two runs, got 3" in proc.stderr
    params = yaml.safe_load((ws / "params.yaml").read_text())
    for bad, code, words in (({"methods": []}, 2, "explore.methods"), ({"max_points": 3}, 2, "explore.max_points"),
                             ({"methods": ["umap"]}, 1, "no umap maps")):
        (ws / "params.yaml").write_text(yaml.safe_dump({**params, "explore": bad}))
        proc = run_cli("explore", cwd=ws, check=False)
        assert proc.returncode == code, proc.stderr
        assert proc.stderr.startswith("error: ") and words in proc.stderr and "Traceback" not in proc.stderr
        # params errors stop before the stage (the last page stays); inside the stage it is removed
        assert page.exists() == (code == 2)
    (ws / "params.yaml").write_text(yaml.safe_dump({**params, "explore": {"max_points": 40, "thumbnails": False}}))
    run_cli("explore", cwd=ws)
    html = page.read_text()
    assert "--hs-sprite:none" in html and "40 test images" in html
    # damaged thumbnails source: the wording every reader of the test images uses, nothing written
    (ws / "params.yaml").write_text(yaml.safe_dump(params))              # thumbnails on again
    images = ws / "data/prepared/test_images.npy"
    np.save(images, np.load(images).astype(np.float64))
    proc = run_cli("explore", cwd=ws, check=False)
    assert proc.returncode == 1 and not page.exists()
    assert proc.stderr.strip() == ("error: data/prepared/test_images.npy: test images has dtype float64, expected "
                                   "uint8; delete it and rerun `dvc repro`")


@pytest.mark.slow
def test_explore_two_git_revisions_read_through_dvc(explored_ws: Path, tmp_path: Path):
    """Two tagged runs in a git + DVC repository: read from DVC's cache at each revision, nothing
    rerun; the second run's maps are its own (scaled here), on one page with one selection."""
    import shutil

    from tests.conftest import run_cli
    from tests.dvc_repo import dvc, git

    root = tmp_path / "repo"
    root.mkdir()
    git("init", "-q", "-b", "main", cwd=root)
    dvc("init", "-q", cwd=root)
    (root / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    for part in ("data/prepared", "data/activations", "data/embeddings/pca", "metrics"):
        shutil.copytree(explored_ws / part, root / part)
    (root / "params.yaml").write_text((explored_ws / "params.yaml").read_text())
    tracked = ["data/prepared", "data/activations", "data/embeddings/pca"]
    dvc("add", *tracked, cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "run a", cwd=root)
    git("tag", "run-a", cwd=root)
    act4 = root / "data/embeddings/pca/act4.npy"
    np.save(act4, np.load(act4) * 1000.0)
    dvc("add", *tracked, cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "run b", cwd=root)
    shutil.rmtree(root / "data/embeddings")                # B is read from the cache, not the workspace

    out = tmp_path / "ab.html"
    run_cli("explore", "run-a", "main", "--out", str(out), cwd=root)
    html = out.read_text()
    assert re.search(r"<title>hidden-spaces explorer: run-a \([0-9a-f]{7}\) vs main \([0-9a-f]{7}\)</title>", html)
    assert '"name":"map_r0"' in html and '"name":"map_r1"' in html
    # run B's act4 map is the scaled one: its bounds are 1000 times run A's
    bounds = re.findall(r'\["m0_l\d+",\[(-?[\d.e+-]+),(-?[\d.e+-]+),', html)
    widths = sorted(float(b) - float(a) for a, b in bounds)
    assert widths[-1] > 500 * widths[0]
    proc = run_cli("explore", "no-such-run", cwd=root, check=False)
    assert proc.returncode == 1 and "unknown revision 'no-such-run'" in proc.stderr
