"""Autoencoder figures: the pure plot functions on small arrays, and render on tiny real pipelines
(a 2-D VAE; a denoising conv autoencoder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import artifacts, paths
from pipeline.plots import autoencoders as ae
from tests.conftest import run_cli, run_in_process, write_params

PNG = b"\x89PNG\r\n\x1a\n"
CLASSES = [str(k) for k in range(4)]


def image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


def pixels(n: int, c: int = 1, side: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(n, c, side, side)).astype(np.float32)


def test_pick_per_class_is_class_major_and_takes_the_first_rows() -> None:
    labels = np.array([2, 0, 1, 0, 2, 0, 1, 3])
    assert ae.pick_per_class(labels, 4, 2).tolist() == [1, 3, 2, 6, 0, 4, 7]     # class 3 has one row
    assert ae.pick_per_class(labels, 5, 1).tolist() == [1, 2, 0, 7]             # class 4 has none


def test_to_display_and_pixel_mse() -> None:
    x = pixels(3, 1)
    shown = ae.to_display(x)
    assert shown.shape == (3, 6, 6) and shown.dtype == np.uint8
    assert np.array_equal(shown, np.round(x[:, 0] * 255).astype(np.uint8))
    assert ae.to_display(pixels(2, 3)).shape == (2, 6, 6, 3)
    assert ae.pixel_mse(x, x) == 0.0
    assert ae.pixel_mse(np.zeros(4), np.full(4, 0.5)) == pytest.approx(0.25)


@pytest.mark.parametrize("channels", [1, 3])
def test_reconstruction_figure_has_one_panel_per_image_and_row(channels: int) -> None:
    labels = np.repeat(np.arange(4), 2)                                          # 2 per class, class-major
    rows = [(name, ae.to_display(pixels(8, channels, seed=k))) for k, name in
            enumerate(["clean", "noisy input", "denoised output"])]
    fig = ae.reconstruction_figure(rows, labels, CLASSES, title="MSE 0.1")
    panels = image_axes(fig)
    assert len(panels) == 8 * 3
    assert {ax.get_title() for ax in panels} >= set(CLASSES)                     # columns named by class
    row_names = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert row_names.count("noisy input") == 2                                   # one label per group of rows
    assert "MSE 0.1" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="every row needs 8 images"):
        ae.reconstruction_figure([("input", rows[0][1][:5])], labels, CLASSES, title="x")


def test_progress_figure_rows_are_snapshots_with_step_epoch_and_mse() -> None:
    labels = np.arange(4)
    inputs = ae.to_display(pixels(4))
    frames = [ae.to_display(pixels(4, seed=s)) for s in range(5)]
    fig = ae.progress_figure(inputs, frames, labels, CLASSES, steps=[0, 3, 6, 9, 10], epochs=[0, 1, 2, 3, 3.3],
                             mses=[0.1, 0.08, 0.05, 0.04, 0.039], mse_images=12)
    assert len(image_axes(fig)) == 4 * (1 + 5)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "step 10\nepoch 3.3\nMSE 0.0390" in texts
    capped = ae.progress_figure(inputs, frames * 4, labels, CLASSES, steps=list(range(20)), epochs=[None] * 20,
                                mses=[None] * 20, max_rows=6)
    assert len(image_axes(capped)) == 4 * (1 + 6)
    assert "6 of 20 snapshots" in capped._suptitle.get_text()


def test_progress_gif_has_one_frame_per_snapshot(tmp_path: Path) -> None:
    labels = np.arange(4)
    frames = [ae.to_display(np.full((4, 1, 6, 6), s / 6, dtype=np.float32)) for s in range(7)]
    anim = ae.progress_animation(ae.to_display(pixels(4)), frames, labels, CLASSES, steps=list(range(0, 70, 10)),
                                 epochs=[s / 2 for s in range(7)], mses=[0.1] * 7)
    path = tmp_path / "progress.gif"
    artifacts.save_animation(path, anim, dpi=40)
    with Image.open(path) as gif:
        assert gif.n_frames == 7
        first = np.asarray(gif.convert("L"), dtype=float)
        gif.seek(6)
        last = np.asarray(gif.convert("L"), dtype=float)
    assert np.abs(first - last).mean() > 1.0                                     # the frames differ


def test_mosaic_places_grid_cell_i_j_at_row_i_column_j() -> None:
    grid = np.zeros((3, 4, 1, 2, 5))
    for i in range(3):
        for j in range(4):
            grid[i, j] = 10 * i + j
    tiled = ae.mosaic(grid)
    assert tiled.shape == (6, 20)
    assert tiled[2 * 2, 5 * 3] == 23 and tiled[0, 19] == 3
    assert ae.mosaic(np.zeros((2, 2, 3, 4, 4))).shape == (8, 8, 3)


def test_manifold_figure_shows_the_grid_and_the_codes() -> None:
    rng = np.random.default_rng(0)
    grid = rng.uniform(size=(5, 5, 1, 6, 6))
    xs, ys = np.linspace(-1, 1, 5), np.linspace(1, -1, 5)
    z = rng.normal(size=(40, 2))
    labels = rng.integers(0, 4, size=40)
    fig = ae.manifold_figure(grid, xs, ys, latents=z, labels=labels, classes=CLASSES, variational=True)
    mosaic_ax, scatter_ax = fig.axes[:2]
    assert mosaic_ax.images[0].get_array().shape == (30, 30)
    assert [t.get_text() for t in mosaic_ax.get_xticklabels()][0] == "-1.00"
    points = [c for c in scatter_ax.collections if c.get_gid() == "grid-points"]
    assert len(points) == 1 and len(points[0].get_offsets()) == 25
    alone = ae.manifold_figure(grid, xs, ys)
    assert len([ax for ax in alone.axes if ax.images]) == 1


def test_latent_figure_draws_prior_circles_only_for_a_vae() -> None:
    z = np.random.default_rng(0).normal(size=(30, 2))
    labels = np.arange(30) % 4
    vae = ae.latent_figure(z, labels, CLASSES, variational=True)
    plain = ae.latent_figure(z, labels, CLASSES, variational=False)
    circles = lambda fig: [p for p in fig.axes[0].patches if p.get_gid() == "prior-circle"]  # noqa: E731
    assert len(circles(vae)) == 2 and not circles(plain)
    labels_drawn = [t.get_text() for t in vae.axes[0].texts if t.get_gid() == "centroid-label"]
    assert labels_drawn == CLASSES
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        ae.latent_figure(np.zeros((5, 3)), labels[:5], CLASSES)


def test_pixel_stats_match_numpy_in_chunks() -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(37, 3, 5, 4), dtype=np.uint8)
    mean, std = ae.pixel_stats(x, chunk=8)
    assert np.allclose(mean, x.mean(axis=0) / 255.0)
    assert np.allclose(std, x.std(axis=0) / 255.0)


@pytest.mark.parametrize("channels, panels", [(1, 2), (3, 8)])
def test_mean_std_figure_panels(channels: int, panels: int) -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(10, channels, 8, 8), dtype=np.uint8)
    fig = ae.mean_std_figure(*ae.pixel_stats(x), dataset="toy", n_images=10)
    assert len(image_axes(fig)) == panels
    assert "toy" in fig._suptitle.get_text() and "10 training images" in fig._suptitle.get_text()


# --- render on tiny real pipelines ------------------------------------------------------------------

AE_BASE = {"data": {"n_train": 300, "n_test": 100}, "train": {"epochs": 2, "snapshot_every": 3},
           "extract": {"n_samples": 100}, "render": {"dpi": 50}}
CASES = {
    "vae": {"model": {"arch": "vae", "latent_dim": 2, "hidden": [32]}},
    "conv_ae": {"model": {"arch": "conv_ae", "filters": 4, "kernel_size": 3, "latent_dim": 8},
                "train": {"noise": 0.3}},
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("ae_prepared")
    write_params(ws, AE_BASE)
    with pytest.MonkeyPatch.context() as mp:
        run_in_process(ws, mp, ("fetch",))
    return ws / paths.PREPARED


def index_penultimate(ws: Path) -> str:
    return json.loads((ws / paths.ACTIVATIONS / "layers.json").read_text())["penultimate"]


@pytest.fixture(scope="module", params=list(CASES))
def ae_run(request: pytest.FixtureRequest, prepared: Path,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    """fetch (shared) -> train -> extract [-> reduce pca] in process, then render through the CLI, once
    per case: (case, workspace, render's stderr)."""
    from tests.conftest import deep_update

    case = request.param
    ws = tmp_path_factory.mktemp(f"ae_{case}")
    write_params(ws, deep_update(AE_BASE, CASES[case]))
    shutil.copytree(prepared, ws / paths.PREPARED)
    mapped = case == "conv_ae"                        # the reduce maps of a wider code (the 2-D one is drawn as is)
    with pytest.MonkeyPatch.context() as mp:
        run_in_process(ws, mp, ("train",), ("extract",), *([("reduce", "pca")] if mapped else []))
    proc = run_cli("render", cwd=ws)
    return case, ws, proc.stderr


@pytest.mark.slow
def test_train_and_extract_for_autoencoders(ae_run: tuple[str, Path, str]) -> None:
    case, ws, _ = ae_run
    latent_dim = CASES[case]["model"]["latent_dim"]
    n = AE_BASE["extract"]["n_samples"]
    act = ws / paths.ACTIVATIONS
    latent = np.load(act / "latent.npy", allow_pickle=False)
    assert latent.shape == (n, latent_dim) and np.isfinite(latent).all() and latent.std() > 0
    assert np.load(act / "output.npy").shape == (n, 784)              # flattened (1, 28, 28)
    index = json.loads((act / "layers.json").read_text())
    assert [r["shape"] for r in index["layers"] if r["name"] == "output"] == [[1, 28, 28]]
    for absent in ("logits.npy", "preds.npy", "confidence.npy"):
        assert not (act / absent).exists()
    assert index["task"] == "reconstruct" and index["penultimate"] == "latent"
    assert index["snapshot_layers"] == ["latent"]
    metrics = json.loads((ws / paths.TRAIN_METRICS / "metrics.json").read_text())
    assert metrics["task"] == "reconstruct" and metrics["accuracy"] is None
    assert "per_class_accuracy" not in metrics
    for split in ("train", "test"):
        assert "accuracy" not in metrics[split]
        assert metrics[split]["mse"] > 0 and metrics[split]["mse_pixels"] < metrics[split]["mse"]
    if case == "vae":
        assert metrics["test"]["kl"] >= 0 and {"recon", "kl"} <= set(metrics["train"])
    meta = json.loads((ws / paths.MODEL / "model.json").read_text())
    assert meta["task"] == "reconstruct" and meta["output_layer"] == "output"


@pytest.mark.slow
def test_render_autoencoder_pipeline(ae_run: tuple[str, Path, str]) -> None:
    case, ws, stderr = ae_run
    mapped = case == "conv_ae"
    assert "Traceback" not in stderr

    figures = ws / paths.FIGURES
    files = {p.name for p in figures.iterdir()}
    expected = {"reconstructions.png", "reconstruction_progress.png", "reconstruction_progress.gif",
                "dataset_mean_std.png", "class_distances.png", "outliers_" + index_penultimate(ws) + ".png"}
    if mapped:
        expected |= {"scatter_pca_latent.png", "progression_pca.png"}
    if case == "vae":
        expected |= {"latent.png", "manifold.png", "weights_enc_fc1.png"}
        assert "denoising.png" not in files
    else:
        expected |= {"denoising.png", "filters_enc_conv1.png", "feature_maps.png"}
        assert "manifold.png" not in files and "latent.png" not in files               # 8-D code: maps only
    assert expected <= files
    assert not files & {"confusion.png", "dense_activations.png", "class_embedding.png"}   # classifier views
    for name in files:
        head = (figures / name).read_bytes()[:8]
        assert head == PNG if name.endswith(".png") else head[:6] == b"GIF89a", name

    snapshots = json.loads((ws / paths.MODEL / "snapshots" / "index.json").read_text())["snapshots"]
    with Image.open(figures / "reconstruction_progress.gif") as gif:
        assert gif.n_frames == len(snapshots) >= 3
    metrics = json.loads((ws / paths.RENDER_METRICS).read_text())
    train_metrics = json.loads((ws / paths.TRAIN_METRICS / "metrics.json").read_text())
    # render's MSE over the extracted test images vs train's over the whole (100-image) test split
    assert metrics["reconstruction"]["mse_pixels"] == pytest.approx(train_metrics["test"]["mse_pixels"], rel=0.05)
    steps = [row["step"] for row in metrics["snapshot_mse_pixels"]]
    assert steps == [row["step"] for row in snapshots]
    mses = [row["mse_pixels"] for row in metrics["snapshot_mse_pixels"]]
    assert mses[-1] < mses[0]                                                     # training helped
    if case == "conv_ae":
        den = metrics["denoising"]
        assert den["noise"] == 0.3 and den["noisy_mse_pixels"] > 0
