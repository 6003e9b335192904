"""Figures of the analyses added for issue 17 A: filters over training, dataset montage,
thumbnail map, feature maps of two images (pure functions on synthetic arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import artifacts
from pipeline.plots import filters as fp


def _snapshots(n: int, shape=(6, 1, 5, 5), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=shape)
    return [base * (0.1 + k) for k in range(n)]


def test_mosaic_places_tiles_with_gaps():
    tiles = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)
    out = fp.mosaic(tiles)
    assert out.shape == (5, 8) and np.isnan(out[2]).all() and np.isnan(out[:, 2]).all()
    np.testing.assert_array_equal(out[3:5, 6:8], tiles[1, 2])


def test_filter_tiles_first_layer_rows_and_deeper_layer_out_by_in():
    w = np.arange(20 * 1 * 3 * 3, dtype=float).reshape(20, 1, 3, 3)
    tiles, rows, cols = fp.filter_tiles(w, first_layer=True, max_cols=8)
    assert tiles.shape == (3, 8, 3, 3) and rows == ["#0", "#8", "#16"]
    np.testing.assert_array_equal(tiles[1, 2], w[10, 0])                 # row-major: filter 8 + 2
    assert np.isnan(tiles[2, 4:]).all() and not np.isnan(tiles[2, :4]).any()
    deep = np.random.default_rng(0).normal(size=(16, 6, 5, 5))
    tiles, rows, cols = fp.filter_tiles(deep, first_layer=False, max_out=8, max_in=4)
    assert tiles.shape == (8, 4, 5, 5) and rows[3] == "out 3" and cols[2] == "in 2"
    np.testing.assert_array_equal(tiles[5, 3], deep[5, 3])                # one kernel slice, not a mean
    rgb, _, _ = fp.filter_tiles(np.ones((4, 3, 2, 2)), first_layer=True)
    assert rgb.shape == (1, 4, 2, 2, 3)


def test_filter_evolution_figure_one_block_per_snapshot_on_one_shared_scale():
    frames = _snapshots(5)
    steps = [0, 1, 2, 4, 7]
    fig = fp.filter_evolution_figure(frames, steps=steps, epochs=[0, 0.1, 0.2, 0.4, 0.7],
                                     accuracies=[0.1, 0.2, 0.3, 0.5, 0.9], layer="conv1", first_layer=True)
    blocks = [sub for sub in fig.subfigs[0].subfigs if sub.axes]
    assert [b._suptitle.get_text().split(" · ")[0] for b in blocks] == [f"step {s}" for s in steps]
    vmax = max(np.abs(f).max() for f in frames)
    images = [im for b in blocks for ax in b.axes for im in ax.images]
    assert {im.get_clim() for im in images} == {(-vmax, vmax)}             # one scale for every snapshot
    assert len(images) == 5 and images[0].get_array().shape == (5, 6 * 6 - 1)   # 6 tiles of 5 px, 1 px gaps
    np.testing.assert_allclose(images[-1].get_array()[:, 6:11], frames[-1][1, 0])  # filter 1, last snapshot
    assert "one symmetric colour scale" in fig._suptitle.get_text()
    capped = fp.filter_evolution_figure(_snapshots(20), steps=list(range(20)), layer="conv1", first_layer=True,
                                        max_frames=4)
    titles = [b._suptitle.get_text() for b in capped.subfigs[0].subfigs if b.axes]
    assert titles[0].startswith("step 0") and titles[-1].startswith("step 19") and len(titles) == 4
    with pytest.raises(ValueError, match="differ in shape"):
        fp.filter_evolution_figure([np.ones((2, 1, 3, 3)), np.ones((3, 1, 3, 3))], steps=[0, 1], layer="c",
                                   first_layer=True)


def test_filter_evolution_deeper_layer_per_input_channel_and_gif(tmp_path: Path):
    frames = _snapshots(3, shape=(4, 3, 3, 3))
    fig = fp.filter_evolution_figure(frames, steps=[0, 2, 4], layer="conv2", first_layer=False)
    blocks = [b for b in fig.subfigs[0].subfigs if b.axes]
    assert len(blocks) == 3
    block = blocks[1].axes[0].images[0].get_array()
    assert block.shape == (4 * 4 - 1, 3 * 4 - 1)                          # 4 filters x 3 input channels
    np.testing.assert_allclose(block[4:7, 8:11], frames[1][1, 2])          # out 1, in 2: one kernel slice
    assert [t.get_text() for t in blocks[0].axes[0].get_yticklabels()] == ["out 0", "out 1", "out 2", "out 3"]
    assert "4 filters x 3 input channels" in fig._suptitle.get_text()
    anim = fp.filter_evolution_animation(frames, steps=[0, 2, 4], layer="conv2", first_layer=False)
    path = tmp_path / "filters.gif"
    artifacts.save_animation(path, anim, dpi=40, fps=4)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
        first = np.asarray(gif.convert("RGB"))
        gif.seek(2)
        last = np.asarray(gif.convert("RGB"))
    assert np.abs(first.astype(int) - last.astype(int)).sum() > 0         # the weights grew: frames differ


# -- thumbnail map and montage ----------------------------------------------------------------

from pipeline.plots import atlas  # noqa: E402


def test_atlas_cells_pick_the_point_nearest_each_cell_centre_brute_force():
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 10, size=(300, 2))
    xy[7] = [np.nan, 1.0]
    cells, rows, (x0, x1, y0, y1) = atlas.atlas_cells(xy, 6, trim=0.0)
    ok = np.isfinite(xy).all(axis=1)
    assert x0 == pytest.approx(np.nanmin(xy[ok, 0])) and y1 == pytest.approx(np.nanmax(xy[ok, 1]))
    w, h = (x1 - x0) / 6, (y1 - y0) / 6
    expected = {}
    for i in np.flatnonzero(ok):
        col = min(int((xy[i, 0] - x0) // w), 5)
        row = min(int((xy[i, 1] - y0) // h), 5)
        centre = np.array([x0 + (col + 0.5) * w, y0 + (row + 0.5) * h])
        d = np.linalg.norm((xy[i] - centre) / [w, h])
        if (col, row) not in expected or d < expected[(col, row)][0]:
            expected[(col, row)] = (d, i)
    got = {(int(c), int(r)): int(i) for (c, r), i in zip(cells, rows)}
    assert got == {cell: i for cell, (_, i) in expected.items()}
    assert 7 not in rows


def test_thumbnail_map_one_thumbnail_per_occupied_cell():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    xy = np.array([[0, 0], [10, 0], [5, 8]])[labels] + rng.normal(size=(120, 2))
    images = rng.integers(0, 255, size=(120, 8, 8), dtype=np.uint8)
    fig = atlas.thumbnail_map(xy, images, labels, ["a", "b", "c"], method="umap", layer="act4", grid=8)
    thumbs = [im for im in fig.axes[0].images if im.get_gid() == "thumbnail"]
    cells, rows, _ = atlas.atlas_cells(xy, 8)
    assert len(thumbs) == len(cells) > 3
    np.testing.assert_array_equal(thumbs[0].get_array(), images[rows[0]])
    assert "act4" in fig.axes[0].get_title() and "UMAP" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="must match"):
        atlas.thumbnail_map(xy, images[:5], labels, ["a", "b", "c"], method="pca", layer="x")


def test_dataset_montage_rows_are_classes_with_their_first_images():
    labels = np.array([1, 0, 1, 2, 0, 1, 1])
    images = (np.arange(7)[:, None, None] * np.ones((1, 4, 4))).astype(np.uint8)
    fig = atlas.dataset_montage(images, labels, ["zero", "one", "two"], per_class=3, dataset="toy")
    rows = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(rows) == 3 and rows[0].shape == (4, 3 * 5 - 1)
    firsts = [[row[0, j * 5] for j in range(3)] for row in rows]
    assert firsts[1] == [0, 2, 5] and firsts[2][0] == 3 and firsts[0][:2] == [1, 4]
    assert np.ma.is_masked(firsts[0][2]) or np.isnan(firsts[0][2])      # class 0 has two images: one cell empty
    assert [ax.get_ylabel() for ax in fig.axes] == ["zero\n(2)", "one\n(4)", "two\n(1)"]
    assert "toy" in fig._suptitle.get_text()
    counted = atlas.dataset_montage(images, labels, ["zero", "one", "two"], per_class=3, counts=[200, 300, 100])
    assert [ax.get_ylabel() for ax in counted.axes] == ["zero\n(200)", "one\n(300)", "two\n(100)"]


# -- feature maps of two images -----------------------------------------------------------------

from pipeline.plots import predictions  # noqa: E402


def test_feature_maps_comparison_rows_per_case_and_shared_scale_per_layer():
    rng = np.random.default_rng(0)

    def layers(scale):
        return [predictions.FeatureMaps("conv1", "Conv2d", scale * rng.normal(size=(4, 6, 6))),
                predictions.FeatureMaps("act1", "ReLU", scale * np.abs(rng.normal(size=(4, 6, 6)))),
                predictions.FeatureMaps("conv2", "Conv2d", scale * rng.normal(size=(20, 3, 3)))]
    img = np.zeros((6, 6), dtype=np.uint8)
    cases = [predictions.MapsCase("confident", "true a", img, layers(1.0)),
             predictions.MapsCase("unsure", "true b", img, layers(3.0))]
    fig = predictions.feature_maps_comparison(cases, max_channels=8)
    rows = [im for ax in fig.axes for im in ax.images if im.get_gid() == "maps-row"]
    assert len(rows) == 3 * 2
    conv2 = [im for im in rows if im.get_array().shape == (3, 8 * 4 - 1)]   # capped at 8 channels of 3x3
    assert len(conv2) == 2 and conv2[0].get_clim() == conv2[1].get_clim()  # one scale for both images
    vmax = max(np.abs(c.layers[2].maps[:8]).max() for c in cases)
    assert conv2[0].get_clim() == (-vmax, vmax)
    np.testing.assert_allclose(conv2[1].get_array()[:, 4:7], cases[1].layers[2].maps[1])
    relu = [im for im in rows if im.get_cmap().name.startswith("magma")]
    assert len(relu) == 2 and relu[0].get_clim()[0] == 0
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel() in ("confident", "unsure")]
    assert labels == ["confident", "unsure"] * 3
    assert "unsure: true b" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="same layers"):
        predictions.feature_maps_comparison([cases[0], predictions.MapsCase("x", "y", img, layers(1.0)[:2])])


# -- explained variance with and without sphereize in the PCA panels ---------------------------

from pipeline.plots import embeddings  # noqa: E402


def test_variance_note_and_progression_panels_show_both_explained_variances():
    scores = {"explained_variance_plain": 0.4512, "explained_variance_sphereized": 0.3071}
    assert embeddings.variance_note(scores) == "EV 0.45 · sphereized 0.31"
    assert embeddings.variance_note({"explained_variance_plain": 0.4}) == ""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 10)
    maps = {"input": rng.normal(size=(20, 2)), "fc1": rng.normal(size=(20, 2))}
    fig = embeddings.progression_grid(["input", "fc1"], maps, labels, ["a", "b"], method="pca",
                                      knn={"input": 0.5, "fc1": 0.9}, notes={"fc1": embeddings.variance_note(scores)})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles[0].endswith("kNN acc 0.50") and titles[1].endswith("kNN acc 0.90\nEV 0.45 · sphereized 0.31")
    single = embeddings.scatter_embedding(maps["fc1"], labels, ["a", "b"], method="pca", layer="fc1",
                                          scores={"knn_accuracy": 0.9, **scores})
    assert "EV 0.45 · sphereized 0.31" in single.axes[0].get_title()
