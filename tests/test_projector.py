"""TensorBoard Embedding Projector bundle: the pure writer, the stage, and a real TensorBoard server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline import projector
from pipeline.errors import ConfigError

from tests.conftest import run_cli
from tests.servers import free_port, get, serve

CLASSES = ["zero", "one", "two"]


def _bundle_inputs(n: int = 30, hw: tuple[int, int] = (6, 10), channels: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    preds = labels.copy()
    preds[::4] = (preds[::4] + 1) % 3                                  # every 4th point is wrong
    images = rng.integers(0, 256, size=(n, channels, *hw), dtype=np.uint8)
    tensors = {"conv": rng.standard_normal((n, 12)).astype(np.float32),
               "fc": rng.standard_normal((n, 5)).astype(np.float16)}
    return dict(tensors=tensors, labels=labels, preds=preds,
                confidence=rng.uniform(0.3, 1.0, n).astype(np.float32), images=images)


def _parse_config(path: Path):
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    return text_format.Parse(path.read_text(), ProjectorConfig())


def _tb_read_tensor(path: Path, shape) -> np.ndarray:
    """What the projector plugin does with a tensor file: TSV first, raw float32 on UnicodeDecodeError."""
    from tensorboard.plugins.projector import projector_plugin as plugin

    try:
        return plugin._read_tensor_tsv_file(str(path))
    except UnicodeDecodeError:
        return plugin._read_tensor_binary_file(str(path), list(shape))


def _metadata(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


# --------------------------------------------------------------------------- pure writer

def test_bundle_layout_and_config(tmp_path: Path) -> None:
    inputs = _bundle_inputs()
    summary = projector.write_bundle(tmp_path, inputs.pop("tensors"), classes=CLASSES, **inputs)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert names == [projector.EVENT_NAME, "metadata.tsv", "projector_config.pbtxt", "sprite.png",
                     "tensors/conv.bytes", "tensors/fc.bytes"]
    assert summary["n_points"] == summary["n_total"] == 30

    config = _parse_config(tmp_path / "projector_config.pbtxt")          # TensorBoard's own proto
    assert [e.tensor_name for e in config.embeddings] == ["conv", "fc"]
    conv, fc = config.embeddings
    assert conv.tensor_path == "tensors/conv.bytes" and list(conv.tensor_shape) == [30, 12]
    assert list(fc.tensor_shape) == [30, 5]
    for emb in config.embeddings:
        assert emb.metadata_path == "metadata.tsv"
        assert emb.sprite.image_path == "sprite.png"
        assert list(emb.sprite.single_image_dim) == [10, 6]              # [width, height]
        assert not os.path.isabs(emb.tensor_path)
    # the plugin resolves every path against the config's folder and refuses ones outside it
    from tensorboard.plugins.projector.projector_plugin import _rel_to_abs_asset_path
    cfg_path = str(tmp_path / "projector_config.pbtxt")
    for rel in (conv.tensor_path, conv.metadata_path, conv.sprite.image_path):
        assert Path(_rel_to_abs_asset_path(rel, cfg_path)).is_file()


def test_first_entry_shares_the_tensor_and_must_sort_first(tmp_path: Path) -> None:
    inputs = _bundle_inputs()
    tensors = inputs.pop("tensors")
    summary = projector.write_bundle(tmp_path, tensors, classes=CLASSES, first=("fc", "* fc"), **inputs)
    config = _parse_config(tmp_path / "projector_config.pbtxt")
    assert [e.tensor_name for e in config.embeddings] == ["* fc", "conv", "fc"]
    assert config.embeddings[0].tensor_path == config.embeddings[2].tensor_path == "tensors/fc.bytes"
    assert summary["first"] == "* fc" and list(summary["layers"]) == ["conv", "fc"]
    for first, problem in [(("fc", "fc first"), "must sort before"), (("nope", "* x"), "not a written tensor")]:
        with pytest.raises(ValueError, match=problem):
            projector.write_bundle(tmp_path / "bad", tensors, classes=CLASSES, first=first, **inputs)


def test_marker_event_makes_the_projector_plugin_active(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    (tmp_path / projector.EVENT_NAME).write_bytes(projector.marker_event())
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert acc.ActivePlugins() == {"projector"}                # what plugins_listing asks for
    assert projector.marker_event() == projector.marker_event()   # deterministic bytes


def test_bytes_round_trip_through_tensorboard_reader(tmp_path: Path) -> None:
    inputs = _bundle_inputs()
    tensors = inputs.pop("tensors")
    projector.write_bundle(tmp_path, tensors, classes=CLASSES, **inputs)
    for name, x in tensors.items():
        path = tmp_path / "tensors" / f"{name}.bytes"
        assert path.stat().st_size == x.size * 4
        raw = np.fromfile(path, dtype="<f4").reshape(x.shape)
        np.testing.assert_array_equal(raw, x.astype(np.float32))       # float16 widened exactly
        np.testing.assert_array_equal(_tb_read_tensor(path, x.shape), x.astype(np.float32))


def test_bytes_that_decode_as_utf8_fall_back_to_tsv(tmp_path: Path) -> None:
    # A dead layer: raw zeros are valid UTF-8, so TensorBoard's TSV-first reader takes them for
    # text and fails (ValueError, which breaks every projector request). The writer must notice.
    from tensorboard.plugins.projector import projector_plugin as plugin

    zeros = np.zeros((20, 8), dtype=np.float32)
    raw_path = tmp_path / "raw.bytes"
    zeros.tofile(raw_path)
    with pytest.raises(ValueError):
        plugin._read_tensor_tsv_file(str(raw_path))

    halves = np.full((20, 8), 0.5, dtype=np.float32)                   # bytes 00 00 00 3f: ASCII too
    for x in (zeros, halves):
        path = projector.write_tensor(tmp_path / "out" / "dead", x, "bytes")
        assert path.suffix == ".tsv"
        np.testing.assert_array_equal(_tb_read_tensor(path, x.shape), x)
    ordinary = np.random.default_rng(1).standard_normal((20, 8)).astype(np.float32)
    assert projector.write_tensor(tmp_path / "out" / "live", ordinary, "bytes").suffix == ".bytes"


def test_tsv_values_rows_and_precision(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((9, 300)) * 10.0 ** rng.integers(-40, 37, size=(9, 300))
    x = x.astype(np.float32)
    x[0, :5] = [0.0, -0.0, 1.0, -2.5e-7, 3.4e38]
    x[1, :3] = [1e-45, 999999.95, 0.1]
    path = projector.write_tensor(tmp_path / "t", x, "tsv")
    assert path.name == "t.tsv"
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 9
    assert all(line.count("\t") == 299 for line in text.splitlines())
    exact = x.astype(np.float64)
    parsed = np.array([[float(v) for v in line.split("\t")] for line in text.splitlines()])
    nz = x != 0
    assert np.all(np.abs(parsed - exact)[nz] <= 5e-7 * (1 + 1e-9) * np.abs(exact[nz]))   # 7 significant digits
    assert (parsed[~nz] == 0).all()
    back = _tb_read_tensor(path, x.shape)                              # float32, as the projector serves it
    assert back.shape == x.shape and back.dtype == np.float32
    np.testing.assert_allclose(back, x, rtol=6e-7, atol=0)
    assert text.split("\t")[:3] == ["0", "0", "1"]
    assert projector.format_tsv(np.array([[1.5, -0.25], [100.0, 1e-3]])) == b"1.5\t-2.5e-1\n1e2\t1e-3\n"
    with pytest.raises(ValueError, match="NaN"):
        projector.format_tsv(np.array([[1.0, np.nan]]))


def test_metadata_header_and_rows(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2, 1])
    preds = np.array([0, 2, 2, 1])
    conf = np.array([0.9, 0.51234, 1.0, 0.7], dtype=np.float32)
    text = projector.metadata_tsv(labels, ["cat", "dog\tbig", "bird"], preds, conf)
    lines = text.splitlines()
    assert lines[0] == "label\tclass\tprediction\tcorrect\tconfidence"
    assert len(lines) == 5 and text.endswith("\n")
    assert lines[2] == "1\tdog big\tbird\t0\t0.5123"                # tab in a class name made a space
    assert lines[3] == "2\tbird\tbird\t1\t1.0000"
    plain = projector.metadata_tsv(labels, ["cat", "dog", "bird"]).splitlines()
    assert plain[0] == "label\tclass" and plain[1:] == ["0\tcat", "1\tdog", "2\tbird", "1\tdog"]
    with pytest.raises(ValueError):
        projector.metadata_tsv(np.array([3]), ["a", "b"])


def test_sprite_cap_keeps_the_same_points_everywhere(tmp_path: Path) -> None:
    # 16x512 px thumbnails: a square grid of at most 8192 // 512 = 16 columns, so 256 points fit.
    n, hw = 300, (16, 512)
    assert projector.sprite_capacity(hw) == 256
    assert projector.sprite_capacity((28, 28)) == 292 ** 2
    labels = np.arange(n) % 3
    images = np.zeros((n, 1, *hw), dtype=np.uint8)
    images[:, 0, 0, :3] = np.stack([np.arange(n) % 256, np.arange(n) // 256, np.full(n, 7)], 1)  # id stamp
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 4)                                         # row id
    summary = projector.write_bundle(tmp_path, {"layer": x}, labels=labels, classes=CLASSES, images=images)
    keep = summary["points"]
    assert summary["n_points"] == len(keep) == 256 and summary["n_total"] == n
    assert keep[0] == 0 and keep[-1] == n - 1 and np.all(np.diff(keep) > 0)

    sprite = np.asarray(Image.open(tmp_path / "sprite.png"))
    assert sprite.shape == (16 * 16, 16 * 512)                          # 16 x 16 cells: width exactly 8192
    cols = sprite.shape[1] // hw[1]
    for i in range(len(keep)):                      # cell i shows the image of point keep[i]
        r, c = divmod(i, cols)
        stamp = sprite[r * hw[0], c * hw[1]: c * hw[1] + 3].astype(int)
        assert stamp[0] + 256 * stamp[1] == keep[i] and stamp[2] == 7
    rows = np.fromfile(tmp_path / "tensors" / "layer.bytes", dtype="<f4").reshape(-1, 4)
    np.testing.assert_array_equal(rows, x[keep])
    _, meta = _metadata(tmp_path / "metadata.tsv")
    assert [int(r[0]) for r in meta] == labels[keep].tolist()
    assert _parse_config(tmp_path / "projector_config.pbtxt").embeddings[0].tensor_shape == [256, 4]

    with pytest.raises(ValueError, match="8192"):
        projector.make_sprite(images[:257])


def test_max_points_and_rgb_sprite(tmp_path: Path) -> None:
    inputs = _bundle_inputs(n=40, hw=(5, 7), channels=3)
    images = inputs["images"]
    summary = projector.write_bundle(tmp_path, inputs.pop("tensors"), classes=CLASSES, max_points=11, **inputs)
    keep = summary["points"]
    assert len(keep) == 11
    img = Image.open(tmp_path / "sprite.png")
    assert img.mode == "RGB" and img.size == (4 * 7, 4 * 5)                  # square grid: 4 x 4 cells
    pixels = np.asarray(img)                                                 # (H, W, 3)
    for i, point in enumerate(keep):
        r, c = divmod(i, 4)
        np.testing.assert_array_equal(pixels[r * 5:(r + 1) * 5, c * 7:(c + 1) * 7],
                                      images[point].transpose(1, 2, 0))
    assert not pixels[2 * 5:3 * 5, 3 * 7:].any() and not pixels[3 * 5:].any()  # cells 12..16 are empty
    header, rows = _metadata(tmp_path / "metadata.tsv")
    assert len(rows) == 11 and header[-1] == "confidence"


def test_grayscale_sprite_and_no_sprite(tmp_path: Path) -> None:
    inputs = _bundle_inputs(n=9, hw=(4, 4))
    sprite = projector.make_sprite(inputs["images"])
    assert sprite.shape == (12, 12)
    np.testing.assert_array_equal(sprite[4:8, 8:12], inputs["images"][5, 0])
    inputs.pop("images")
    projector.write_bundle(tmp_path, inputs.pop("tensors"), classes=CLASSES, images=None, **inputs)
    assert not (tmp_path / "sprite.png").exists()
    assert "sprite" not in (tmp_path / "projector_config.pbtxt").read_text()
    assert not _parse_config(tmp_path / "projector_config.pbtxt").embeddings[0].HasField("sprite")


def test_one_column_layers_are_skipped(tmp_path: Path) -> None:
    labels = np.arange(6) % 3
    tensors = {"wide": np.ones((6, 3), np.float32) * np.arange(6)[:, None], "narrow": np.ones((6, 1), np.float32)}
    summary = projector.write_bundle(tmp_path, tensors, labels=labels, classes=CLASSES)
    assert list(summary["layers"]) == ["wide"] and "narrow" in summary["skipped"]
    assert [e.tensor_name for e in _parse_config(tmp_path / "projector_config.pbtxt").embeddings] == ["wide"]


def test_non_finite_values_name_the_layer(tmp_path: Path) -> None:
    bad = np.ones((6, 3), np.float32)
    bad[4, 1] = np.nan
    for fmt in ("bytes", "tsv"):
        with pytest.raises(ValueError, match="layer broken: tensor has NaN"):
            projector.write_bundle(tmp_path / fmt, {"broken": bad}, labels=np.arange(6) % 3, classes=CLASSES,
                                   tensor_format=fmt)


def test_choose_layers() -> None:
    from pipeline.stages.projector import choose_layers

    extracted = ["input", "conv1", "fc1"]
    assert choose_layers(extracted, None) == extracted
    assert choose_layers(extracted, ["fc1", "input"]) == ["input", "fc1"]
    with pytest.raises(ConfigError) as err:
        choose_layers(extracted, ["conv1", "conv9"])
    assert "conv9" in str(err.value) and "input, conv1, fc1" in str(err.value)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- stage

def _set_projector(ws: Path, section: dict) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["projector"] = section
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_stage_tsv_without_sprite_and_max_points(staged_ws: Path) -> None:
    from pipeline.config import load_params
    from pipeline.stages import projector as stage

    _set_projector(staged_ws, {"layers": ["input", "fc1"], "tensor_format": "tsv", "max_points": 50,
                               "sprite": False})
    summary = stage.run(load_params(staged_ws / "params.yaml"))
    out = staged_ws / "data" / "projector"
    extracted = [l["name"] for l in json.loads((staged_ws / "data/activations/layers.json").read_text())["layers"]]
    fc1 = f"{extracted.index('fc1') + 1:02d}_fc1"                  # its place in network order
    assert sorted(p.name for p in (out / "tensors").iterdir()) == ["01_input.tsv", f"{fc1}.tsv"]
    # the layer before the output is not among projector.layers: no extra first entry
    assert [e.tensor_name for e in _parse_config(out / "projector_config.pbtxt").embeddings] == ["01_input", fc1]
    assert not (out / "sprite.png").exists()
    keep = np.asarray(summary["points"])
    assert len(keep) == 50
    acts = np.load(staged_ws / "data" / "activations" / "fc1.npy")
    back = _tb_read_tensor(out / "tensors" / f"{fc1}.tsv", (50, acts.shape[1]))
    np.testing.assert_allclose(back, acts[keep], rtol=1e-6, atol=1e-30)
    header, rows = _metadata(out / "metadata.tsv")
    labels = np.load(staged_ws / "data" / "activations" / "labels.npy")
    assert header == ["label", "class", "prediction", "correct", "confidence"]
    assert [int(r[0]) for r in rows] == labels[keep].tolist()


@pytest.mark.slow
def test_stage_leaves_out_layers_extract_flagged_non_finite(staged_ws: Path, capfd) -> None:
    from pipeline.config import load_params
    from pipeline.stages import projector as stage

    index_path = staged_ws / "data" / "activations" / "layers.json"
    index = json.loads(index_path.read_text())
    index["nonfinite_layers"] = ["conv1"]
    index_path.write_text(json.dumps(index))
    summary = stage.run(load_params(staged_ws / "params.yaml"))
    assert "02_conv1" not in summary["layers"] and "09_fc1" in summary["layers"]
    assert "layer conv1 has NaN or inf" in capfd.readouterr().err
    names = [e.tensor_name for e in _parse_config(staged_ws / "data/projector/projector_config.pbtxt").embeddings]
    stems = [f"{i:02d}_{l['name']}" for i, l in enumerate(index["layers"], start=1) if l["name"] != "conv1"]
    assert names == ["* 12_act4 (before the output)"] + stems


@pytest.mark.slow
def test_unknown_layer_is_one_line_exit_2_and_no_output(staged_ws: Path) -> None:
    _set_projector(staged_ws, {"layers": ["fc1", "no_such_layer"]})
    proc = run_cli("projector", cwd=staged_ws, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: projector.layers: unknown layer 'no_such_layer'; valid names")
    extracted = [l["name"] for l in json.loads((staged_ws / "data/activations/layers.json").read_text())["layers"]]
    assert ", ".join(extracted) in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (staged_ws / "data" / "projector").exists()


# --------------------------------------------------------------------------- real TensorBoard

def _frontend_menu(embeddings: list[dict]) -> list[str]:
    """The projector front end's tensor menu, first entry opened (tensorboard 2.x
    projector_binary.js, ``_generateUiForNewCheckpointForRun``): 2-D tensors with more than one
    row and column; those with metadata first, then names without "/Adagrad", then more rows
    first, then by name."""
    shown = [e for e in embeddings if len(e["tensorShape"]) == 2 and min(e["tensorShape"]) > 1]
    key = lambda e: (not e.get("metadataPath"), "/Adagrad" in e["tensorName"], -e["tensorShape"][0],
                     e["tensorName"].encode("utf-16-be"))
    return [e["tensorName"] for e in sorted(shown, key=key)]


def test_frontend_menu_model() -> None:
    emb = lambda name, rows=5, meta=True: {"tensorName": name, "tensorShape": [rows, 3], "metadataPath": meta and "m"}
    menu = _frontend_menu([emb("b"), emb("a", meta=False), emb("c", rows=9), emb("x/Adagrad"), emb("d", rows=1)])
    assert menu == ["c", "b", "x/Adagrad", "a"]


@contextlib.contextmanager
def _tensorboard(logdir: Path, log_path: Path, *flags: str):
    """A real TensorBoard on 127.0.0.1 (own process group, stopped at the end); yields its base URL.
    Ready when /data/environment answers (not plugins_listing: see below)."""
    port = free_port()
    with serve([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                "--port", str(port), *flags], port, "/data/environment", log_path, name="tensorboard") as base:
        yield base


@pytest.mark.slow
def test_real_tensorboard_serves_every_layer(staged_ws: Path, tmp_path: Path) -> None:
    run_cli("projector", cwd=staged_ws)
    bundle = staged_ws / "data" / "projector"
    acts = staged_ws / "data" / "activations"
    index = json.loads((acts / "layers.json").read_text())
    layers = [l for l in index["layers"] if l["dim"] >= 2]
    n = index["n"]
    labels = np.load(acts / "labels.npy")

    with _tensorboard(bundle, tmp_path / "tensorboard.log") as base:
        api = f"{base}/data/plugin/projector"
        for _ in range(120):                                 # until the marker event file is loaded
            if json.loads(get(f"{base}/data/runs")[1]) == ["."]:
                break
            time.sleep(0.5)
        # The first listing must already show the tab active: without the marker event, the
        # plugin answers "inactive" while its thread looks for configs, and the page a user
        # opens says "No dashboards are active".
        status, body, _ = get(f"{base}/data/plugins_listing")
        assert status == 200 and json.loads(body)["projector"]["enabled"], body[:500]

        status, body, _ = get(f"{api}/runs")
        assert status == 200 and json.loads(body) == ["."]   # pbtxt at the logdir root: run "."
        status, body, _ = get(f"{api}/info?run=.")
        assert status == 200
        info = {e["tensorName"]: e for e in json.loads(body)["embeddings"]}
        # every layer under its place in the network, so the menu runs from input to output; the
        # layer before the output is listed first once more, and the projector opens on it
        stems = [f"{i:02d}_{l['name']}" for i, l in enumerate(index["layers"], start=1) if l["dim"] >= 2]
        first = f"* {stems[-2]} (before the output)"
        assert index["penultimate"] == layers[-2]["name"] == "act4" and stems[-1] == "13_logits"
        assert list(info) == [first] + stems
        assert _frontend_menu(list(info.values())) == [first] + stems
        assert info[first]["tensorPath"] == info[stems[-2]]["tensorPath"]

        for stem, layer in [(first, layers[-2])] + list(zip(stems, layers)):
            name, dim = stem, layer["dim"]
            assert info[name]["tensorShape"] == [n, dim]
            assert info[name]["sprite"]["singleImageDim"] == [28, 28]
            status, body, ctype = get(f"{api}/tensor?run=.&name={urllib.parse.quote(name)}")
            assert status == 200 and ctype.startswith("application/octet-stream"), body[:200]
            assert len(body) == n * dim * 4
            served = np.frombuffer(body, dtype="<f4").reshape(n, dim)
            np.testing.assert_array_equal(served, np.load(acts / f"{layer['name']}.npy").astype(np.float32))

            status, body, _ = get(f"{api}/metadata?run=.&name={urllib.parse.quote(name)}")
            lines = body.decode().splitlines()
            assert status == 200 and lines[0] == "label\tclass\tprediction\tcorrect\tconfidence"
            assert len(lines) == n + 1
            assert [int(line.split("\t")[0]) for line in lines[1:]] == labels.tolist()

            status, body, ctype = get(f"{api}/sprite_image?run=.&name={urllib.parse.quote(name)}")
            assert status == 200 and ctype == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
            sprite = Image.open(io.BytesIO(body))
            cols = int(np.ceil(np.sqrt(n)))
            assert sprite.size == (cols * 28, cols * 28) and max(sprite.size) <= 8192


_DATA_PANEL = """
function deep(root, sel) {
  const hit = root.querySelector(sel);
  if (hit) return hit;
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) { const h = deep(el.shadowRoot, sel); if (h) return h; }
  }
  return null;
}
const p = deep(document, 'vz-projector-data-panel');
if (!p || !p.selectedTensor || !p.tensorNames || !p.tensorNames.length) return null;
return {selected: p.selectedTensor, menu: p.tensorNames.map(t => t.name), run: p.selectedRun};
"""


@pytest.mark.slow
def test_projector_page_opens_on_the_layer_before_the_output(staged_ws: Path, tmp_path: Path, browser) -> None:
    """TensorBoard's own projector page in a real browser: which tensor it opens on, and its menu."""
    run_cli("projector", cwd=staged_ws)
    index = json.loads((staged_ws / "data" / "activations" / "layers.json").read_text())
    stems = [f"{i:02d}_{l['name']}" for i, l in enumerate(index["layers"], start=1) if l["dim"] >= 2]
    with _tensorboard(staged_ws / "data" / "projector", tmp_path / "tensorboard.log") as base:
        # the page the Projector tab shows in its iframe
        browser.open(f"{base}/data/plugin/projector/projector_binary.html")
        state = browser.wait_for(_DATA_PANEL, timeout=120)
        browser.screenshot("tensorboard_projector", full_page=False)
        errors = [e for e in browser.console_errors() if "favicon.ico" not in e]
    assert state["run"] == "."
    assert state["selected"] == "* 12_act4 (before the output)" == state["menu"][0]
    assert state["menu"][1:] == stems                            # then network order, input to logits
    assert errors == []
