"""Autoencoders: shapes, tied weights, denoising targets, KL, determinism, render helpers.

Through the pipeline (fetch, train, extract, render): test_render_autoencoders.py."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import ModelConfig
from pipeline.errors import ConfigError, UserError
from pipeline.models import build_model, describe_layers, load_model, save_model
from pipeline.models.autoencoders import (AutoEncoder, TiedConvTranspose2d, TiedLinear, corrupt, decode_grid,
                                          kl_divergence, reconstruct)
from pipeline.runtime import normalizer
from pipeline.activations import penultimate_layer


SHAPES = [(1, 28, 28), (3, 32, 32)]
SMALL = {"hidden": [32, 16], "filters": 4, "latent_dim": 3}
VARIANTS = [
    {"arch": "ae"}, {"arch": "ae", "tied_weights": True},
    {"arch": "conv_ae"}, {"arch": "conv_ae", "tied_weights": True, "conv_blocks": 3, "kernel_size": 4},
    {"arch": "vae", "variant": "fc"}, {"arch": "vae", "variant": "conv"},
]


def _model(shape=(1, 28, 28), **kw) -> AutoEncoder:
    return build_model(ModelConfig(**{**SMALL, **kw}), shape, 10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
def test_reconstruction_has_the_input_shape_and_latent_is_named(kw, shape):
    model = _model(shape, **kw)
    x = torch.randn(4, *shape)
    assert model(x).shape == (4, *shape)
    assert model.task == "reconstruct" and model.output_layer == "output"
    names = [n for n, _ in model.named_layers()]
    assert len(set(names)) == len(names) and names[-1] == "output"
    assert "latent" in names and ("logvar" in names) == (kw["arch"] == "vae")
    assert penultimate_layer(model) == "latent"
    rows = {r["name"]: r for r in describe_layers(model, shape)}
    assert rows["latent"]["shape"] == [3] and rows["output"]["shape"] == [*shape]
    model.train()
    terms = model.loss_terms(x, torch.zeros(4, dtype=torch.long), noise=0.2)
    assert {"loss", "mse"} <= set(terms) and "accuracy" not in terms
    terms["loss"].backward()                               # every parameter is reachable
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("side", [27, 28, 32])
def test_conv_decoder_restores_any_input_size(side):
    for kernel, blocks in [(k, b) for k in (1, 2, 3, 4, 5, 7) for b in (1, 2, 4)] + [(side, 1), (side, 2)]:
        model = _model((1, side, side), arch="conv_ae", kernel_size=kernel, conv_blocks=blocks, hidden=[], filters=2)
        assert model(torch.randn(2, 1, side, side)).shape == (2, 1, side, side), (kernel, blocks)


def test_fc_default_hidden_and_conv_layer_names():
    ae = build_model(ModelConfig(arch="ae"), (1, 28, 28), 10)
    assert [m.out_features for n, m in ae.named_layers() if n.startswith("enc_fc")] == [512, 256]
    conv = build_model(ModelConfig(arch="conv_ae", filters=8, growth=2.0, conv_blocks=2), (1, 28, 28), 10)
    assert [n for n, _ in conv.named_layers()] == [
        "enc_conv1", "enc_act1", "enc_conv2", "enc_act2", "latent", "dec_fc1", "dec_act1",
        "dec_deconv1", "dec_act2", "output"]
    layers = dict(conv.named_layers())
    assert layers["enc_conv2"].out_channels == 16 and layers["enc_conv1"].stride == (2, 2)


def test_kernel_larger_than_image_is_a_config_error():
    with pytest.raises(ConfigError, match="model.kernel_size = 30 is larger than the 28x28 input; use at most 28"):
        _model(arch="conv_ae", kernel_size=30)


@pytest.mark.parametrize("kw,shape", [({"arch": "ae"}, (1, 28, 28)),
                                      ({"arch": "conv_ae", "conv_blocks": 2}, (3, 32, 32)),
                                      ({"arch": "vae", "variant": "fc"}, (1, 28, 28))])
def test_tied_weights_are_one_shared_parameter(kw, shape):
    untied, tied = _model(shape, **kw), _model(shape, **kw, tied_weights=True)
    n_untied = sum(p.numel() for p in untied.parameters())
    n_tied = sum(p.numel() for p in tied.parameters())
    assert n_tied < n_untied
    layers = dict(tied.named_layers())
    tied_layers = [m for m in layers.values() if isinstance(m, (TiedLinear, TiedConvTranspose2d))]
    assert tied_layers and isinstance(layers["output"], (TiedLinear, TiedConvTranspose2d))
    # The decoder's weight is the encoder's Parameter itself: editing one edits the other.
    first = layers["enc_conv1"] if "enc_conv1" in layers else layers["enc_fc1"]
    before = layers["output"].weight.detach().clone()
    with torch.no_grad():
        first.weight.add_(1.0)
    assert torch.allclose(layers["output"].weight, before + 1.0)
    # ... and is stored once (no duplicate tensors in the state dict, safetensors round trip works).
    saved = {k: v.shape for k, v in tied.state_dict().items()}
    assert not any(k.startswith("decoder.") and k.endswith(".weight") for k in saved if "bn" not in k)
    x = torch.randn(2, *shape)
    tied.eval()
    out = tied(x)
    assert out.shape == (2, *shape)


def test_tied_model_saves_and_loads(tmp_path):
    model = _model(arch="ae", tied_weights=True).eval()
    meta = {"model": ModelConfig(**SMALL, arch="ae", tied_weights=True).model_dump(),
            "input_shape": [1, 28, 28], "n_classes": 10}
    save_model(tmp_path, model, meta)
    loaded, _ = load_model(tmp_path)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))


def test_tied_decoder_gradient_reaches_the_shared_weight():
    model = _model(arch="ae", tied_weights=True, hidden=[8], latent_dim=2)
    enc = dict(model.named_layers())["enc_fc1"]
    out = dict(model.named_layers())["output"]
    out(torch.randn(4, 8)).sum().backward()                              # the decoder path alone
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0


# --- denoising --------------------------------------------------------------------------------------

def test_denoising_loss_is_measured_against_the_clean_input():
    model = _model(arch="ae").train()
    x = torch.randn(8, 1, 28, 28)
    noise = {"noise": 0.5, "noise_kind": "masking"}
    model.set_input_stats([0.1], [0.3])
    terms = model.loss_terms(x, torch.zeros(8, dtype=torch.long), **noise, generator=torch.Generator().manual_seed(3))
    noisy = corrupt(x, 0.5, "masking", model.pixel_zero, torch.Generator().manual_seed(3))
    assert not torch.equal(noisy, x)
    recon = model.decode(model.encode(noisy)[0])         # what the model saw: the corrupted input
    assert torch.allclose(terms["mse"], (recon - x).pow(2).mean(), atol=1e-6)          # target: clean x
    assert not torch.allclose(terms["mse"], (recon - noisy).pow(2).mean(), atol=1e-4)
    assert torch.allclose(terms["mse_pixels"], terms["mse"] * 0.3 ** 2, rtol=1e-5)
    # Eval mode never corrupts.
    model.eval()
    clean = model.loss_terms(x, torch.zeros(8, dtype=torch.long), **noise, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(clean["mse"], (model(x) - x).pow(2).mean(), atol=1e-6)


def test_masking_sets_pixels_to_the_background_value_across_channels():
    x = torch.randn(16, 3, 32, 32)
    background = torch.tensor([-0.5, -1.0, -2.0])
    out = corrupt(x, 0.3, "masking", background, torch.Generator().manual_seed(0))
    masked = (out != x).all(dim=1)                       # (B, H, W): every channel of a masked pixel
    assert ((out != x).any(dim=1) == masked).all()
    assert 0.25 < masked.float().mean() < 0.35
    for c in range(3):
        assert torch.all(out[:, c][masked] == background[c])
    # Without the dataset stats the per-channel batch minimum (pixel 0 for digits) stands in.
    digits = torch.full((4, 1, 8, 8), 2.0)
    digits[:, :, :4] = -0.5
    fallback = corrupt(digits, 0.9, "masking", None, torch.Generator().manual_seed(0))
    assert set(fallback.unique().tolist()) <= {-0.5, 2.0} and (fallback == -0.5).float().mean() > 0.8


def test_gaussian_noise_has_the_requested_std_and_zero_noise_is_identity():
    x = torch.zeros(64, 1, 28, 28)
    out = corrupt(x, 0.3, "gaussian", None, torch.Generator().manual_seed(0))
    assert abs(float(out.std()) - 0.3) < 0.01 and abs(float(out.mean())) < 0.01
    assert corrupt(x, 0.0, "gaussian") is x


def test_set_input_stats_gives_the_normalised_black_pixel():
    model = _model(arch="ae")
    model.set_input_stats([0.1307], [0.3081])
    normalize = normalizer([0.1307], [0.3081], "cpu")
    assert torch.allclose(model.pixel_zero, normalize(torch.zeros(1, 1, 1, 1, dtype=torch.uint8)).flatten())
    assert "pixel_zero" not in model.state_dict()        # data statistics, not weights


# --- VAE --------------------------------------------------------------------------------------------

def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert torch.equal(kl_divergence(torch.zeros(5, 2), torch.zeros(5, 2)), torch.zeros(5))
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(100, 4, generator=g) * 2, torch.randn(100, 4, generator=g) * 2
    kl = kl_divergence(mu, logvar)
    assert (kl > 0).all()
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(kl, ref, atol=1e-4)


def test_vae_loss_terms_combine_reconstruction_and_weighted_kl():
    model = _model(arch="vae").train()
    x = torch.randn(6, 1, 28, 28)
    y = torch.zeros(6, dtype=torch.long)
    for w in (0.0, 1.0, 3.0):
        t = model.loss_terms(x, y, kl_weight=w, generator=torch.Generator().manual_seed(0))
        assert float(t["kl"].detach()) >= 0
        assert torch.allclose(t["loss"], t["recon"] + w * t["kl"])
    model.eval()                                            # eval: decodes mu, no sampling
    t = model.loss_terms(x, y)
    mu, logvar = model.encode(x)
    sq = (model.decode(mu) - x).pow(2)
    assert torch.allclose(t["recon"], 0.5 * sq.flatten(1).sum(1).mean(), rtol=1e-5)
    assert torch.allclose(t["mse"], sq.mean(), rtol=1e-5)


def test_vae_latent_layer_records_mu_and_eval_decodes_mu():
    model = _model(arch="vae", variant="conv").eval()
    seen = {}
    layers = dict(model.named_layers())
    handle = layers["latent"].register_forward_hook(lambda _m, _i, out: seen.setdefault("latent", out))
    x = torch.randn(3, 1, 28, 28)
    out = model(x)
    handle.remove()
    mu, _ = model.encode(x)
    assert torch.allclose(seen["latent"], mu)
    assert torch.allclose(out, model.decode(mu))
    assert torch.equal(model(x), model(x))                 # eval is deterministic
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(model(x), out)              # training samples z around mu


def test_same_seed_same_model_and_same_sampled_loss():
    def once():
        torch.manual_seed(7)
        model = _model(arch="vae").train()
        x = torch.randn(5, 1, 28, 28)
        terms = model.loss_terms(x, None, noise=0.3, generator=torch.Generator().manual_seed(1))
        return model, terms
    (m1, t1), (m2, t2) = once(), once()
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert all(torch.equal(t1[k], t2[k]) for k in t1)
    torch.manual_seed(7)
    m3 = _model(arch="vae").train()
    t3 = m3.loss_terms(torch.randn(5, 1, 28, 28), None, noise=0.3, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(t1["loss"], t3["loss"])         # another noise draw: another loss


# --- render helpers ---------------------------------------------------------------------------------

def _identity_ae(shape=(1, 4, 4)) -> AutoEncoder:
    d = int(np.prod(shape))
    latent, out = nn.Linear(d, d), nn.Linear(d, d)
    with torch.no_grad():
        for layer in (latent, out):
            layer.weight.copy_(torch.eye(d))
            layer.bias.zero_()
    return AutoEncoder([("flatten", nn.Flatten())], latent, [("output", out), ("unflatten", nn.Unflatten(1, shape))],
                       shape)


def test_reconstruct_maps_back_to_pixels_in_unit_range():
    model = _identity_ae((3, 4, 4)).train()
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    normalize = normalizer([0.2, 0.4, 0.6], [0.3, 0.2, 0.1], "cpu")
    out = reconstruct(model, images, normalize, batch_size=2)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(out, images / 255.0, atol=1e-5)
    assert model.training                                  # mode restored
    shifted = _identity_ae((3, 4, 4))
    with torch.no_grad():
        shifted.decoder.output.bias.fill_(100.0)           # far above white: clipped to 1
    assert (reconstruct(shifted, images, normalize) == 1.0).all()


def test_decode_grid_vae_spans_prior_quantiles():
    model = _model(arch="vae", latent_dim=2)
    normalize = normalizer([0.13], [0.31], "cpu")
    grid = decode_grid(model, normalize, n=5)
    assert grid["images"].shape == (5, 5, 1, 28, 28)
    assert grid["images"].min() >= 0 and grid["images"].max() <= 1
    quantiles = [NormalDist().inv_cdf(p) for p in (0.05, 0.275, 0.5, 0.725, 0.95)]   # -1.645 .. 1.645
    np.testing.assert_allclose(grid["xs"], quantiles, atol=1e-5)
    np.testing.assert_allclose(grid["ys"], grid["xs"][::-1])
    # images[i, j] decodes (xs[j], ys[i])
    z = torch.tensor([[grid["xs"][3], grid["ys"][1]]], dtype=torch.float32)
    expected = reconstruct_pixels(model, z, normalize)
    np.testing.assert_allclose(grid["images"][1, 3], expected[0], atol=1e-5)


def reconstruct_pixels(model, z, normalize):
    with torch.no_grad():
        y = model.decode(z)
    lo = normalize(torch.zeros(1, 1, 1, 1, dtype=torch.uint8))
    hi = normalize(torch.full((1, 1, 1, 1), 255, dtype=torch.uint8))
    return ((y - lo) / (hi - lo)).clamp(0, 1).numpy()


def test_decode_grid_ae_uses_the_observed_range_and_median():
    model = _model(arch="ae", latent_dim=3)
    normalize = normalizer([0.13], [0.31], "cpu")
    latents = np.random.default_rng(0).normal([5.0, -3.0, 1.0], [2.0, 0.5, 1.0], size=(500, 3))
    grid = decode_grid(model, normalize, n=4, latents=latents, dims=(2, 0))
    assert grid["images"].shape == (4, 4, 1, 28, 28) and grid["dims"] == [2, 0]
    assert grid["xs"][0] == pytest.approx(np.quantile(latents[:, 2], 0.01), rel=1e-5)
    assert grid["xs"][-1] == pytest.approx(np.quantile(latents[:, 2], 0.99), rel=1e-5)
    assert grid["ys"][0] == pytest.approx(np.quantile(latents[:, 0], 0.99), rel=1e-5)
    with pytest.raises(UserError, match="needs the observed latents"):
        decode_grid(model, normalize)
    with pytest.raises(UserError, match=r"expected \(N, 3\)"):
        decode_grid(model, normalize, latents=latents[:, :2])
    with pytest.raises(UserError, match="model.latent_dim >= 2"):
        decode_grid(_model(arch="vae", latent_dim=1), normalize)
