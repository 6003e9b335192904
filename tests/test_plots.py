"""The figure functions of pipeline.plots on small synthetic arrays: panels, marks and numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from pipeline import artifacts, plots
from pipeline.plots import classes as class_plots
from pipeline.plots import common, evolution, predictions

CLASSES = ["a", "b", "c", "d"]


def blobs(n_per: int = 25, dim: int = 2, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per)
    centres = rng.normal(scale=8.0, size=(k, dim))
    return centres[labels] + rng.normal(size=(len(labels), dim)), labels


def visible_axes(fig: Figure, *, colorbars: bool = False) -> list:
    """Visible axes, without colour bars unless asked."""
    out = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        is_cbar = getattr(ax, "_colorbar", None) is not None or ax.get_label() == "<colorbar>"
        if is_cbar == colorbars:
            out.append(ax)
    return out


def image_axes(fig: Figure) -> list:
    return [ax for ax in visible_axes(fig) if ax.images]


# -- common -----------------------------------------------------------------------------------

def test_class_colors_are_stable_and_distinct():
    ten = common.class_colors(10)
    assert ten.shape == (10, 4)
    assert np.allclose(common.class_colors(4), ten[:4])            # same colour per class everywhere
    assert len({tuple(c) for c in ten}) == 10
    assert len({tuple(c) for c in common.class_colors(15)}) == 15
    assert len({tuple(c) for c in common.class_colors(40)}) == 40


@pytest.mark.parametrize("n", [1, 2, 3, 6, 9, 13, 17, 20, 32])
def test_grid_shape_fits_with_few_empty_cells(n):
    rows, cols = common.grid_shape(n, 5)
    assert rows * cols >= n
    assert cols <= 5
    assert rows * cols - n < cols                                    # never a whole empty row


def test_display_images_grey_and_rgb():
    grey = np.zeros((3, 1, 4, 5), dtype=np.uint8)
    rgb = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    assert common.display_images(grey).shape == (3, 4, 5)
    out = common.display_images(rgb)
    assert out.shape == (2, 4, 5, 3)
    assert out[1, 2, 3, 0] == rgb[1, 0, 2, 3] and out[1, 2, 3, 2] == rgb[1, 2, 2, 3]


def test_annotate_cells_contrasts_with_the_cell():
    fig = common.new_figure(3, 3)
    ax = fig.add_subplot()
    values = np.array([[0.0, 1.0], [np.nan, 0.5]])
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1)
    assert common.annotate_cells(ax, values, image, skip_diagonal=True) == 1     # only (0, 1); NaN skipped
    assert ax.texts[0].get_color() == "white"                                     # dark blue cell


# -- embeddings -------------------------------------------------------------------------------

def test_scatter_embedding_2d_labels_every_class_at_its_median():
    coords, labels = blobs()
    fig = plots.scatter_embedding(coords, labels, CLASSES, method="tsne", layer="fc1",
                                  scores={"knn_accuracy": 0.875, "trustworthiness": 0.9})
    (ax,) = visible_axes(fig)
    texts = [t for t in ax.texts if t.get_gid() == "centroid-label"]
    assert [t.get_text() for t in texts] == CLASSES
    for k, t in enumerate(texts):
        assert np.allclose(t.get_position(), np.median(coords[labels == k], axis=0))
    assert "kNN accuracy 0.88" in ax.get_title() and "fc1" in ax.get_title()
    assert ax.get_xlabel() == "t-SNE 1" and ax.get_legend() is not None
    assert len(ax.get_legend().get_texts()) == len(CLASSES)
    assert ax.collections[0].get_rasterized()


def test_scatter_embedding_3d_uses_3d_axes():
    coords, labels = blobs(dim=3)
    fig = plots.scatter_embedding(coords, labels, CLASSES, method="umap", layer="x")
    (ax,) = visible_axes(fig)
    assert ax.name == "3d" and ax.get_zlabel() == "UMAP 3"


def test_progression_grid_has_one_panel_per_layer_with_scores():
    coords, labels = blobs()
    layers = ["input", "conv1", "act1", "pool1", "fc1", "act2", "logits"]
    maps = {name: coords + i for i, name in enumerate(layers) if name != "act1"}
    knn = {name: 0.5 + 0.05 * i for i, name in enumerate(layers)}
    fig = plots.progression_grid(layers, maps, labels, CLASSES, method="pca", knn=knn,
                                 kinds={"conv1": "Conv2d"}, skipped={"act1": "constant layer"})
    panels = visible_axes(fig)
    assert len(panels) == len(layers)
    titles = [ax.get_title() for ax in panels]
    assert titles[1].startswith("2. conv1 (Conv2d)") and "kNN acc 0.55" in titles[1]
    assert "not mapped" in panels[2].texts[0].get_text() and "constant layer" in panels[2].texts[0].get_text()
    assert not panels[2].collections                                  # nothing drawn for the skipped layer
    assert sum(len(ax.collections) for ax in panels) == len(maps)
    assert len(fig.legends) == 1


# -- weights ----------------------------------------------------------------------------------

def test_filter_montage_one_tile_per_filter_symmetric_scale():
    w = np.random.default_rng(0).normal(size=(6, 1, 5, 5))
    w[2] *= 3
    fig = plots.filter_montage(w, layer="conv1")
    (ax,) = image_axes(fig)                                 # one mosaic: a row of 6 tiles of 5 x 5, 1 px apart
    mosaic = np.ma.filled(ax.images[0].get_array().astype(float), np.nan)    # the gaps: NaN, drawn white
    assert mosaic.shape == (5, 6 * 6 - 1)
    for i in range(6):
        assert np.allclose(mosaic[:, 6 * i:6 * i + 5], w[i, 0]), i
    assert np.isnan(mosaic[:, 5::6]).all()
    lo, hi = ax.images[0].get_clim()
    assert lo == -hi == pytest.approx(-np.abs(w).max())
    assert [t.get_text() for t in ax.texts] == [f"#{i}" for i in range(6)]
    assert len(visible_axes(fig, colorbars=True)) == 1


def test_filter_montage_rgb_and_cap():
    from pipeline.plots.diagnostics import rgb_filter_tiles

    w = np.random.default_rng(0).normal(size=(70, 3, 3, 3))
    fig = plots.filter_montage(w, layer="conv1", max_filters=64)
    (ax,) = image_axes(fig)
    mosaic = np.asarray(ax.images[0].get_array())
    assert mosaic.shape == (8 * 4 - 1, 8 * 4 - 1, 3)       # 64 tiles, 8 x 8, white gaps
    tiles = rgb_filter_tiles(w[:64])
    assert np.allclose(mosaic[4 * 2:4 * 2 + 3, 4 * 5:4 * 5 + 3], tiles[2 * 8 + 5])
    assert (mosaic[3] == 1.0).all() and (mosaic[:, 3] == 1.0).all()
    assert len(ax.texts) == 64 and ax.texts[-1].get_text() == "#63"
    assert "first 64 of 70" in fig.get_suptitle()


def test_conv_weights_grid_caps_rows_and_columns():
    w = np.random.default_rng(0).normal(size=(20, 18, 3, 3))
    fig = plots.conv_weights_grid(w, layer="conv2", max_rows=16, max_cols=12)
    (ax,) = image_axes(fig)                                 # one mosaic: 16 x 12 tiles of 3 x 3, 1 px apart
    mosaic = np.ma.filled(ax.images[0].get_array().astype(float), np.nan)    # the gaps: NaN, drawn white
    assert mosaic.shape == (16 * 4 - 1, 12 * 4 - 1)
    assert np.allclose(mosaic[4 * 2:4 * 2 + 3, 4 * 5:4 * 5 + 3], w[2, 5])       # out 2, in 5
    assert np.isnan(mosaic[3, :]).all() and np.isnan(mosaic[:, 3]).all() and np.isfinite(mosaic[:3, :3]).all()
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"in {c}" for c in range(12)]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"out {r}" for r in range(16)]
    assert "first 16 of 20 filters" in fig.get_suptitle() and "first 12 of 18" in fig.get_suptitle()


def test_weight_images_named_units_reshaped_to_the_input():
    w = np.random.default_rng(0).normal(size=(4, 12))
    fig = plots.weight_images(w, (1, 3, 4), layer="logits", unit_names=CLASSES, what="class")
    tiles = image_axes(fig)
    assert [ax.get_title() for ax in tiles] == CLASSES
    assert tiles[1].images[0].get_array().shape == (3, 4)
    assert np.allclose(tiles[1].images[0].get_array(), w[1].reshape(3, 4))
    with pytest.raises(ValueError):
        plots.weight_images(w, (1, 5, 5), layer="x")


def test_filter_correlations_matches_numpy_and_handles_constant_filters():
    w = np.random.default_rng(1).normal(size=(5, 1, 3, 3))
    w[4] = 0.7                                                        # constant: no correlation defined
    corr = plots.filter_correlations(w)
    assert np.allclose(corr[:4, :4], np.corrcoef(w[:4].reshape(4, -1)))
    assert np.all(corr[4, :4] == 0) and corr[4, 4] == 1 and np.isfinite(corr).all()


def test_redundant_pairs_and_their_boxes_match_an_independent_count():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(8, 1, 5, 5))
    w[3] = 2.0 * w[0] + 0.01 * rng.normal(size=(1, 5, 5))           # near duplicate
    w[6] = -w[1]                                                      # sign-flipped duplicate
    threshold = 0.9
    flat = w.reshape(8, -1)
    expected = sum(abs(np.corrcoef(flat[i], flat[j])[0, 1]) >= threshold for i in range(8) for j in range(i + 1, 8))
    pairs = plots.redundant_pairs(plots.filter_correlations(w), threshold)
    assert len(pairs) == expected >= 2
    assert {(a, b) for a, b, _ in pairs} >= {(0, 3), (1, 6)}
    fig = plots.redundancy_figure(w, layer="conv1", threshold=threshold)
    boxes = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == "redundant-pair"]
    assert len(boxes) == expected
    assert f"{expected} near-duplicate" in fig.axes[0].get_title()


# -- predictions ------------------------------------------------------------------------------

def test_feature_maps_figure_rows_and_channel_cap():
    rng = np.random.default_rng(0)
    layers = [predictions.FeatureMaps("conv1", "Conv2d", rng.normal(size=(4, 8, 8))),
              predictions.FeatureMaps("act1", "ReLU", np.abs(rng.normal(size=(4, 8, 8)))),
              predictions.FeatureMaps("conv2", "Conv2d", rng.normal(size=(20, 4, 4)))]
    image = np.zeros((8, 8), dtype=np.uint8)
    fig = plots.feature_maps_figure(image, layers, caption="test image 3", max_channels=16)
    rows = [im for ax in fig.axes for im in ax.images if im.get_gid() == "maps-row"]
    assert len(image_axes(fig)) == 1 + 3                              # the image, then a mosaic per layer
    assert [im.get_array().shape for im in rows] == [(8, 4 * 9 - 1), (8, 4 * 9 - 1), (4, 16 * 5 - 1)]
    conv2 = np.ma.filled(rows[2].get_array().astype(float), np.nan)   # capped at 16 of 20 channels
    np.testing.assert_allclose(conv2[:, 15 * 5:15 * 5 + 4], layers[2].maps[15])
    assert np.isnan(conv2[:, 4]).all()                                # a gap between channels
    assert len(visible_axes(fig, colorbars=True)) == 3
    relu = next(im for im in rows if im.get_cmap().name.startswith("magma"))
    assert relu.get_clim()[0] == 0                                    # non-negative: sequential from 0
    labels = [[t.get_text() for t in im.axes.get_xticklabels()] for im in rows]
    assert labels == [[f"ch {c}" for c in range(4)], [], [f"ch {c}" for c in range(4, 16)]]


def test_dense_activations_figure_writes_every_value_and_boxes_the_argmax():
    rng = np.random.default_rng(0)
    values = [{"act3": rng.normal(size=30), "logits": rng.normal(size=4)} for _ in range(2)]
    cases = [predictions.DenseCase(f"case {i}", np.zeros((5, 5), np.uint8), v) for i, v in enumerate(values)]
    fig = plots.dense_activations_figure(cases, ["act3", "logits"], CLASSES, output_layer="logits")
    texts = [t for ax in fig.axes for t in ax.texts]
    assert len(texts) == 2 * (30 + 4)
    out_axes = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape == (1, 4)]
    assert len(out_axes) == 2
    for ax, v in zip(out_axes, values):
        (box,) = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert box.get_x() + 0.5 == int(np.argmax(v["logits"]))
        assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES


def test_pick_cases():
    labels = np.array([0, 1, 2, 0, 1])
    preds = np.array([0, 1, 0, 1, 1])
    conf = np.array([0.7, 0.99, 0.6, 0.4, 0.8])
    assert predictions.pick_cases(labels, preds, conf) == {"most_confident_correct": 1, "least_confident_wrong": 3}
    assert "least_confident_wrong" not in predictions.pick_cases(labels, labels, conf)


def test_confusion_matrix_matches_sklearn_and_figure_has_bars():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    cm = plots.confusion_matrix(labels, preds, 4)
    assert np.array_equal(cm, confusion_matrix(labels, preds, labels=range(4)))
    fig = plots.confusion_figure(cm, CLASSES)
    matrix_ax, bar_ax = visible_axes(fig)
    assert len(bar_ax.patches) == 4
    heights = [p.get_height() for p in bar_ax.patches]
    assert np.allclose(heights, np.diag(cm) / cm.sum(axis=1))
    assert sum(t.get_text().isdigit() for t in matrix_ax.texts) == int((cm > 0).sum())


# -- evolution --------------------------------------------------------------------------------

def _frames(n: int, points: int = 40):
    coords, labels = blobs(n_per=points // 4)
    return [coords * (0.2 + i / n) for i in range(n)], labels


def test_evolution_grid_one_panel_per_snapshot_and_cap():
    frames, labels = _frames(6)
    steps = [0, 10, 20, 30, 40, 50]
    fig = plots.evolution_grid(frames, labels, CLASSES, steps=steps, epochs=[s / 10 for s in steps],
                               accuracies=[0.1, 0.5, 0.7, 0.8, 0.9, 0.95], method="umap", layer="fc2")
    panels = visible_axes(fig)
    assert len(panels) == 6
    assert panels[0].get_title().startswith("step 0 · epoch 0.0 · acc 0.10")
    assert panels[-1].get_title().startswith("step 50")
    many, labels = _frames(30)
    fig = plots.evolution_grid(many, labels, CLASSES, steps=list(range(30)), method="pca", layer="fc2", max_panels=12)
    titles = [ax.get_title() for ax in visible_axes(fig)]
    assert len(titles) == 12 and titles[0].startswith("step 0") and titles[-1].startswith("step 29")


def test_frame_limits_zoom_only_a_collapsed_frame():
    coords, _ = blobs()
    limits = evolution.frame_limits([coords * 0.01, coords * 0.9, coords])
    assert limits[0][2] == pytest.approx(100, rel=0.01)
    assert limits[1][2] is None and limits[2][2] is None
    assert limits[1][:2] == limits[2][:2]


def test_evolution_animation_gif_has_one_frame_per_snapshot(tmp_path: Path):
    frames, labels = _frames(5)
    anim = plots.evolution_animation(frames, labels, CLASSES, steps=[0, 1, 2, 3, 4], method="tsne", layer="fc2",
                                     size=3.0)
    path = tmp_path / "evo.gif"
    artifacts.save_animation(path, anim, dpi=50, fps=4)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evo.gif"]          # no temporary file left


# -- classes ----------------------------------------------------------------------------------

def test_class_outliers_finds_the_planted_outlier_and_the_typical_point():
    x, labels = blobs(dim=5)
    members = np.flatnonzero(labels == 2)
    x[members[3]] += 50.0
    centre_idx = members[7]
    x[centre_idx] = np.delete(x[members], 7, axis=0).mean(axis=0)           # exactly the class mean
    rows = plots.class_outliers(x, labels, 4, n_outliers=3)
    row = rows[2]
    assert row.cls == 2 and row.outliers[0] == members[3] and len(row.outliers) == 3
    assert np.all(np.diff(row.distances) <= 0)                              # farthest first
    assert row.typical == centre_idx


def test_outliers_figure_grid_and_misclassified_marks():
    x, labels = blobs()
    rows = plots.class_outliers(x, labels, 4, n_outliers=3)
    images = np.zeros((len(labels), 6, 6), dtype=np.uint8)
    preds = labels.copy()
    preds[rows[0].outliers[0]] = 1
    fig = plots.outliers_figure(images, rows, CLASSES, layer="fc1", n_outliers=3, preds=preds)
    (ax,) = image_axes(fig)                                         # one axes, every image placed in it
    assert len(ax.images) == 4 * (1 + 3)
    red = [t for t in ax.texts if "→ b" in t.get_text()]
    assert len(red) == 1 and red[0].get_color() == "crimson"
    frames = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(frames) == 4 * (1 + 3) and sum(p.get_edgecolor() == to_rgba("crimson") for p in frames) == 1
    assert [t.get_text() for t in ax.texts if t.get_fontweight() == "bold"] == [CLASSES[r.cls] for r in rows]


def test_class_separation_by_hand():
    x = np.array([[0.0, 1.0], [0.0, -1.0], [4.0, 1.0], [4.0, -1.0]])
    labels = np.array([0, 0, 1, 1])
    sep = plots.class_separation(x, labels, 3)
    assert sep[0, 1] == pytest.approx(4.0)                 # centroids 4 apart, RMS radius 1
    assert sep[0, 0] == 0 and np.isnan(sep[2, 0])          # class 2 absent


def test_class_distance_grid_and_detail():
    x, labels = blobs(dim=6)
    layers = ["l1", "l2", "l3", "l4", "l5", "l6", "l7"]
    matrices = {name: plots.class_separation(x * (i + 1) + i, labels, 4) for i, name in enumerate(layers)}
    fig = plots.class_distance_grid(layers, matrices, CLASSES)
    panels = visible_axes(fig)
    assert len(panels) == len(layers)
    assert all(len(ax.collections[0].get_offsets()) == 4 for ax in panels)          # a nearest class per row
    fig = plots.class_distance_figure(matrices["l1"], CLASSES, layer="l1")
    boxes = [p for p in fig.axes[0].patches if p.get_gid() == "nearest-class"]
    m = np.where(np.eye(4, dtype=bool), np.inf, matrices["l1"])
    assert sorted((int(b.get_y() + 0.5), int(b.get_x() + 0.5)) for b in boxes) == \
        [(i, int(np.argmin(m[i]))) for i in range(4)]


def test_class_embedding_is_pca_of_the_class_vectors():
    from sklearn.decomposition import PCA

    w = np.random.default_rng(0).normal(size=(4, 12))
    coords, ratios = class_plots.class_embedding(w)
    ref = PCA(2).fit(w)
    assert np.allclose(np.abs(coords), np.abs(ref.transform(w)), atol=1e-8)
    assert np.allclose(ratios, ref.explained_variance_ratio_)
    fig = plots.class_embedding_figure(w, CLASSES, layer="logits")
    assert [t.get_text() for t in fig.axes[0].texts] == CLASSES


# -- saving -----------------------------------------------------------------------------------

def test_save_figure_is_atomic_png_and_releases_the_figure(tmp_path: Path):
    fig = plots.confusion_figure(np.eye(4, dtype=int) * 5, CLASSES)
    path = tmp_path / "sub" / "confusion.png"
    artifacts.save_figure(path, fig, dpi=60)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["confusion.png"]
    assert fig.axes == []                                                    # cleared: memory released


def test_save_figure_failure_leaves_no_file(tmp_path: Path):
    class Broken:
        def savefig(self, path, **kwargs):
            Path(path).write_bytes(b"half")
            raise RuntimeError("disk full")

        def clear(self):
            pass

    with pytest.raises(RuntimeError):
        artifacts.save_figure(tmp_path / "x.png", Broken())
    assert list(tmp_path.iterdir()) == []


def test_redundancy_figure_with_activation_correlation_boxes_both_panels():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(5, 2, 3, 3))
    act = np.eye(5)
    act[1, 4] = act[4, 1] = 0.97
    act[0, 2] = act[2, 0] = -0.93
    fig = plots.redundancy_figure(w, layer="conv2", threshold=0.9, activation_corr=act, max_shift=1, n_images=40)
    weight_pairs = len(plots.redundant_pairs(plots.filter_correlations(w), 0.9))
    titled = [ax for ax in fig.axes if "near-duplicate" in ax.get_title()]
    assert len(titled) == 2
    counts = [sum(p.get_gid() == "redundant-pair" for p in ax.patches) for ax in titled]
    assert counts == [weight_pairs, 2]
    assert "maps on 40 images" in titled[1].get_title() and "2 near-duplicate pairs" in titled[1].get_title()
    with pytest.raises(ValueError, match="activation_corr has shape"):
        plots.redundancy_figure(w, layer="conv2", threshold=0.9, activation_corr=np.eye(3))
