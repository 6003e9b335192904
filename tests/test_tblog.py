"""The training TensorBoard log: filter images large and in a diverging colour map, every epoch
reachable through a real TensorBoard server (with the --samples_per_plugin flag the README gives)."""

from __future__ import annotations

import io
import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import tblog
from tests.conftest import run_cli, write_params
from tests.servers import get
from tests.test_projector import _tensorboard


def test_filter_grid_enlarges_each_weight_and_maps_sign_to_colour() -> None:
    w = np.zeros((6, 1, 5, 5))
    w[0, 0, 0, 0], w[0, 0, 4, 4] = -2.0, 2.0                    # full blue, full red
    w[1, 0, 2, 2] = 1.0                                         # half red
    img = tblog.filter_grid(w)
    scale = -(-tblog.MIN_CELL_PX // 5)                         # ceil(96 / 5) = 20 px per weight
    cell = 5 * scale
    assert img.dtype == np.uint8 and img.shape == (2 * cell + 3 * 4, 3 * cell + 4 * 4, 3)   # 2 x 3 grid
    first = img[4:4 + cell, 4:4 + cell].astype(int)
    blue, red, white = first[0, 0], first[-1, -1], first[cell // 2, cell // 2]
    assert blue[2] > blue[0] + 60                               # negative: blue
    assert red[0] > red[2] + 60                                 # positive: red
    assert (white > 240).all()                                  # zero: white
    # nearest neighbour: each weight is a flat block of scale x scale pixels
    assert (first[:scale, :scale] == blue).all() and (first[-scale:, -scale:] == red).all()
    assert not (first[scale, scale] == blue).all()
    # one scale for the whole image: the half-size weight of filter 2 is a paler red
    second = img[4:4 + cell, 8 + cell:8 + 2 * cell].astype(int)
    half = second[2 * scale, 2 * scale]
    assert half[0] > half[2] and half[1] > red[1]


def test_filter_grid_rgb_filters_and_bad_input() -> None:
    w = np.zeros((4, 3, 3, 3))
    w[0, 0] = 1.0                                               # pure red input weights
    img = tblog.filter_grid(w, min_cell_px=30)
    assert img.shape == (2 * 30 + 12, 2 * 30 + 12, 3)
    assert tuple(img[5, 5]) == (255, 128, 128)
    with pytest.raises(ValueError, match="shape"):
        tblog.filter_grid(np.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match="NaN"):
        tblog.filter_grid(np.full((1, 1, 2, 2), np.nan))


@pytest.mark.slow
def test_every_epoch_of_the_filter_images_through_tensorboard(workspace: Path, tmp_path: Path) -> None:
    epochs = 12                                                 # more than TensorBoard's default 10 images
    write_params(workspace, {"data": {"n_train": 300, "n_test": 100}, "train": {"epochs": epochs}})
    run_cli("fetch", cwd=workspace)
    run_cli("train", cwd=workspace)
    logdir = workspace / "logs" / "train"
    assert not (workspace / "data" / "model" / "tensorboard").exists()      # events stay out of DVC outputs

    # the README's command (images=0 would keep none with the Rust data server; the default keeps 10)
    with _tensorboard(logdir, tmp_path / "tb.log", "--samples_per_plugin", "images=1000") as base:
        api = f"{base}/data/plugin/images"
        for _ in range(120):
            tags = json.loads(get(f"{api}/tags")[1])
            if tags.get("tensorboard", {}).get("filters/first_layer"):
                break
            import time
            time.sleep(0.5)
        query = urllib.parse.urlencode({"run": "tensorboard", "tag": "filters/first_layer", "sample": 0})
        status, body, _ = get(f"{api}/images?{query}")
        assert status == 200
        entries = json.loads(body)
        assert [e["step"] for e in entries] == list(range(1, epochs + 1))     # every epoch, none sampled away
        status, png, ctype = get(f"{base}/data/plugin/images/individualImage?{entries[-1]['query']}")
        assert status == 200 and ctype == "image/png"
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    # LeNet: 6 filters of 5x5 in a 3 x 2 grid, each at least 96 px: large enough to see
    assert img.shape[1] >= 3 * tblog.MIN_CELL_PX and img.shape[0] >= 2 * tblog.MIN_CELL_PX
    reddish = (img[..., 0] - img[..., 2] > 60).mean()
    bluish = (img[..., 2] - img[..., 0] > 60).mean()
    assert reddish > 0.02 and bluish > 0.02                     # both signs, in the diverging map
