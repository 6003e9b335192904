"""Autoencoders: fully connected (``ae``), convolutional (``conv_ae``) and variational (``vae``).

Every model maps the normalised image (B, C, H, W) to a code ``latent`` (B, latent_dim) and back
to a reconstruction of the same shape, *in the same normalised units* (linear output, no sigmoid:
the input range is ``(0 - mean) / std .. (1 - mean) / std`` per channel, and :func:`reconstruct`
maps back to [0, 1] pixels). ``forward`` returns the reconstruction tensor, so hooks and shapes
stay simple; the VAE's mean and log-variance come from :meth:`AutoEncoder.encode`.

Layer names (what extract hooks), e.g. ``ae`` with hidden [512, 256]::

    enc_fc1 enc_act1 enc_fc2 enc_act2 latent dec_fc1 dec_act1 dec_fc2 dec_act2 output

``output`` (linear, no activation) is the image (B, C, H, W) for every variant.

``conv_ae`` / ``vae`` with ``variant: conv``: ``enc_conv{i}`` (stride 2, padding k//2, filters
``filters * growth**i``) ``[enc_bn{i}]`` ``enc_act{i}``, optional dense ``enc_fc{j}``, ``latent``,
then ``dec_fc*`` back to the conv features and transposed convs ``dec_deconv{i}`` to ``output``,
with output padding chosen so that the output is exactly the input size (28, 32, odd sizes).
A VAE adds ``logvar`` after ``latent``; ``latent`` is the mean mu, and in eval mode the decoder
decodes mu (training samples z = mu + sigma * eps, the reparameterisation trick).

Losses (:meth:`AutoEncoder.loss_terms`, per-batch means; labels are never used):

- ``mse``: mean squared reconstruction error per pixel and channel **in normalised units**;
  ``mse_pixels``: the same in [0, 1] pixel units (mse x std^2 per channel), once the dataset's
  mean/std are known (:meth:`AutoEncoder.set_input_stats`, which the train loop calls).
- ``ae`` / ``conv_ae``: ``loss = mse``.
- ``vae``: ``loss = recon + train.kl_weight * kl`` where ``recon`` is the Gaussian negative
  log-likelihood per image with unit variance in normalised units (0.5 x sum of squared errors
  over the C*H*W values, constants dropped) and ``kl`` = KL(q(z|x) || N(0, I)) summed over the
  latent dimensions, both averaged over the batch (nats per image).

Denoising (``train.noise`` > 0, training mode only; the loss always compares with the CLEAN input):
``masking`` sets a random fraction ``noise`` of the pixel positions (all channels of a pixel
together) to the normalised value of a black pixel, ``(0 - mean) / std`` - the background of
digit images - rather than to normalised 0, which would be the dataset's mean grey. Before
``set_input_stats`` the per-channel minimum of the batch stands in for it (the same value
whenever the batch holds a black pixel). ``gaussian`` adds N(0, noise^2) in normalised units.

``model.tied_weights`` makes every decoder layer use the transposed weight of its mirror in the
encoder (one shared Parameter, stored once; decoder biases are separate).

Defaults: ``model.hidden`` null means [512, 256] for the fully connected models (a 2-D VAE of this
size reaches latent kNN accuracy ~0.66-0.71 on the 4,000 mnist-5k digits in the default 25 epochs;
deeper or narrower stacks did no better) and no dense layers between the conv features and
``latent`` for the conv ones; activation relu. ``batch_norm`` applies to conv blocks, ``dropout``
follows dense hidden activations; ``padding`` and ``pool`` do not apply (strided convolutions).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.config import ModelConfig
from pipeline.errors import ConfigError, UserError
from pipeline.models.common import Network, check_kernel, conv_out, eval_mode, make_activation
from pipeline.runtime import normalized_batches, normalizer

__all__ = [
    "AutoEncoder", "LinearToImage", "TiedLinear", "TiedConvTranspose2d", "build_ae", "build_conv_ae", "build_vae",
    "kl_divergence", "corrupt", "reconstruct", "denoise", "decode_grid", "DEFAULT_HIDDEN",
]

DEFAULT_HIDDEN = [512, 256]              # fc encoder sizes when model.hidden is null (decoder mirrored)
_RESHAPES = (nn.Flatten, nn.Unflatten, nn.Dropout)   # not extracted: reshapes / identity at inference


class TiedLinear(nn.Module):
    """``y = x @ W_src + b``: a Linear whose weight is the transpose of ``source``'s (shared, not copied).

    ``source`` is held in a tuple so it is not registered twice: the weight lives once in the
    state dict (under the encoder's name), and gradients from both uses add up on it.
    """

    def __init__(self, source: nn.Linear, out_shape: Sequence[int] | None = None):
        super().__init__()
        self._source = (source,)
        self.in_features, self.out_features = source.out_features, source.in_features
        self.out_shape = tuple(out_shape) if out_shape is not None else None   # e.g. (C, H, W) for `output`
        self.bias = nn.Parameter(torch.zeros(source.in_features))

    @property
    def weight(self) -> torch.Tensor:                                  # (in_src, out_src) = (out, in)
        return self._source[0].weight.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:               # (B, out_src) -> (B, in_src)
        y = F.linear(x, self._source[0].weight.t(), self.bias)
        return y if self.out_shape is None else y.unflatten(1, self.out_shape)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tied"


class LinearToImage(nn.Linear):
    """A Linear layer whose output is reshaped to an image: (B, in) -> (B, C, H, W)."""

    def __init__(self, in_features: int, out_shape: Sequence[int]):
        super().__init__(in_features, math.prod(out_shape))
        self.out_shape = tuple(out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y.unflatten(1, self.out_shape)


class TiedConvTranspose2d(nn.Module):
    """The transposed convolution of ``source`` (a Conv2d) with its very weight; own bias."""

    def __init__(self, source: nn.Conv2d, output_padding: int):
        super().__init__()
        self._source = (source,)
        self.output_padding = (output_padding, output_padding)
        self.bias = nn.Parameter(torch.zeros(source.in_channels))

    @property
    def weight(self) -> torch.Tensor:                                  # (F_out_src, C_in_src, k, k)
        return self._source[0].weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:               # (B, F, h, w) -> (B, C, H, W)
        src = self._source[0]
        return F.conv_transpose2d(x, src.weight, self.bias, stride=src.stride, padding=src.padding,
                                  output_padding=self.output_padding)

    def extra_repr(self) -> str:
        src = self._source[0]
        return (f"{src.out_channels}, {src.in_channels}, kernel_size={src.kernel_size}, stride={src.stride}, "
                f"padding={src.padding}, output_padding={self.output_padding}, tied")


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over the latent dims: (B, D) -> (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def _randn(shape: Sequence[int], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, 1) noise; drawn on the CPU from ``generator`` when given (any device), else the global RNG."""
    if generator is None:
        return torch.randn(tuple(shape), device=like.device, dtype=like.dtype)
    return torch.randn(tuple(shape), generator=generator).to(device=like.device, dtype=like.dtype)


def _rand(shape: Sequence[int], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.rand(tuple(shape), device=like.device)
    return torch.rand(tuple(shape), generator=generator).to(like.device)


def corrupt(x: torch.Tensor, noise: float, kind: str, background: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """The denoising input: ``x`` (B, C, H, W, normalised) with ``noise`` applied; ``x`` is untouched.

    ``masking``: each pixel position is replaced by ``background`` (C,) with probability ``noise``
    (default: the per-channel minimum of the batch); ``gaussian``: adds ``noise`` * N(0, 1).
    """
    if noise <= 0:
        return x
    if kind == "gaussian":
        return x + noise * _randn(x.shape, x, generator)
    if kind != "masking":
        raise ValueError(f"unknown noise kind {kind!r}; use masking or gaussian")
    b, c, h, w = x.shape
    fill = background if background is not None else x.detach().amin(dim=(0, 2, 3))
    mask = _rand((b, 1, h, w), x, generator) < noise                      # (B, 1, H, W), shared by channels
    return torch.where(mask, fill.to(x.dtype).view(1, c, 1, 1), x)


class AutoEncoder(Network):
    """``encoder`` (B, C, H, W) -> (B, features); ``latent`` (the code, or the VAE's mean);
    optional ``logvar`` head (VAE); ``decoder`` (B, latent_dim) -> (B, C, H, W)."""

    task = "reconstruct"
    output_layer = "output"

    def __init__(self, encoder: Sequence[tuple[str, nn.Module]], latent: nn.Linear,
                 decoder: Sequence[tuple[str, nn.Module]], input_shape: tuple[int, int, int],
                 logvar: nn.Linear | None = None):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.encoder = nn.Sequential(OrderedDict(encoder))
        self.latent = latent
        self.logvar = logvar
        self.decoder = nn.Sequential(OrderedDict(decoder))
        self.latent_dim = latent.out_features
        # Set by set_input_stats (not saved with the weights: they belong to the data, see model.json).
        self.register_buffer("pixel_zero", None, persistent=False)   # (C,) normalised value of pixel 0
        self.register_buffer("pixel_std", None, persistent=False)    # (C,) dataset std in [0, 1] units

    @property
    def variational(self) -> bool:
        return self.logvar is not None

    def set_input_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """The dataset normalisation (per channel, [0, 1] units): masking value and pixel-unit MSE."""
        ref = next(self.parameters())
        m = torch.tensor(list(mean), dtype=torch.float32, device=ref.device)
        s = torch.tensor(list(std), dtype=torch.float32, device=ref.device).clamp_min(1e-6)
        self.pixel_zero = -m / s
        self.pixel_std = s

    def named_layers(self) -> list[tuple[str, nn.Module]]:
        enc = [(n, m) for n, m in self.encoder.named_children() if not isinstance(m, _RESHAPES)]
        dec = [(n, m) for n, m in self.decoder.named_children() if not isinstance(m, _RESHAPES)]
        heads = [("latent", self.latent)] + ([("logvar", self.logvar)] if self.logvar is not None else [])
        return enc + heads + dec

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, H, W) -> mu (B, D) and logvar (B, D) for a VAE (None otherwise)."""
        h = self.encoder(x)
        return self.latent(h), (self.logvar(h) if self.logvar is not None else None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:               # (B, D) -> (B, C, H, W)
        return self.decoder(z)

    def sample(self, mu: torch.Tensor, logvar: torch.Tensor | None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + exp(logvar / 2) * eps in training mode (VAE); mu otherwise."""
        if logvar is None or not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * _randn(mu.shape, mu, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:             # (B, C, H, W) -> (B, C, H, W)
        mu, logvar = self.encode(x)
        return self.decode(self.sample(mu, logvar))

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, *, noise: float = 0.0, noise_kind: str = "masking",
                   kl_weight: float = 1.0, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x_in = corrupt(x, noise, noise_kind, self.pixel_zero, generator) if self.training else x
        mu, logvar = self.encode(x_in)
        recon = self.decode(self.sample(mu, logvar, generator))      # (B, C, H, W)
        sq = (recon - x).pow(2)                                        # against the CLEAN input
        terms: dict[str, torch.Tensor] = {}
        if logvar is not None:
            nll = 0.5 * sq.flatten(1).sum(dim=1).mean()
            kl = kl_divergence(mu, logvar).mean()
            terms.update(loss=nll + kl_weight * kl, recon=nll, kl=kl)
        else:
            terms["loss"] = sq.mean()
        terms["mse"] = sq.mean().detach() if logvar is not None else terms["loss"]
        if self.pixel_std is not None:
            terms["mse_pixels"] = (sq.detach() * self.pixel_std.view(1, -1, 1, 1).pow(2)).mean()
        return terms


# --- builders -------------------------------------------------------------------------------------

def _hidden(cfg: ModelConfig, default: list[int]) -> list[int]:
    return list(cfg.hidden) if cfg.hidden is not None else list(default)


def _dense_decoder(chain: list[nn.Linear], tied: bool, act: str, dropout: float,
                   output_shape: tuple[int, int, int] | None) -> list[tuple[str, nn.Module]]:
    """Mirror of the encoder's dense ``chain`` [fc1, ..., fcJ, latent]: latent_dim -> ... -> chain[0].in.

    Layers are ``dec_fc{i}`` + ``dec_act{i}``; with ``output_shape`` the last one is ``output``
    (linear, no activation, reshaped to the image (B, C, H, W)).
    """
    layers: list[tuple[str, nn.Module]] = []
    mirrored = list(reversed(chain))
    for i, src in enumerate(mirrored, start=1):
        if output_shape is not None and i == len(mirrored):
            out = TiedLinear(src, output_shape) if tied else LinearToImage(src.out_features, output_shape)
            layers.append(("output", out))
            break
        fc = TiedLinear(src) if tied else nn.Linear(src.out_features, src.in_features)
        layers += [(f"dec_fc{i}", fc), (f"dec_act{i}", make_activation(act))]
        if dropout:
            layers.append((f"dec_drop{i}", nn.Dropout(dropout)))
    return layers


def _dense_encoder(width: int, hidden: list[int], act: str, dropout: float,
                   first_act: int = 1) -> tuple[list[tuple[str, nn.Module]], list[nn.Linear], int]:
    layers: list[tuple[str, nn.Module]] = []
    chain: list[nn.Linear] = []
    for j, size in enumerate(hidden, start=1):
        fc = nn.Linear(width, size)
        chain.append(fc)
        layers += [(f"enc_fc{j}", fc), (f"enc_act{first_act + j - 1}", make_activation(act))]
        if dropout:
            layers.append((f"enc_drop{j}", nn.Dropout(dropout)))
        width = size
    return layers, chain, width


def _fc(cfg: ModelConfig, input_shape: tuple[int, int, int], variational: bool) -> AutoEncoder:
    act = cfg.activation or "relu"
    pixels = math.prod(input_shape)
    hidden = _hidden(cfg, DEFAULT_HIDDEN)
    enc, chain, width = _dense_encoder(pixels, hidden, act, cfg.dropout)
    latent = nn.Linear(width, cfg.latent_dim)
    logvar = nn.Linear(width, cfg.latent_dim) if variational else None
    dec = _dense_decoder(chain + [latent], cfg.tied_weights, act, cfg.dropout, output_shape=input_shape)
    return AutoEncoder([("flatten", nn.Flatten()), *enc], latent, dec, input_shape, logvar)


def _conv(cfg: ModelConfig, input_shape: tuple[int, int, int], variational: bool) -> AutoEncoder:
    c, h, w = input_shape
    k = cfg.kernel_size
    act = cfg.activation or "relu"
    check_kernel(k, min(h, w), "input", f"use at most {min(h, w)}")
    pad = k // 2
    enc: list[tuple[str, nn.Module]] = []
    convs: list[nn.Conv2d] = []
    sizes = [(h, w)]                                       # map size before each block, then the last
    in_ch = c
    for i in range(cfg.conv_blocks):
        out_ch = max(1, round(cfg.filters * cfg.growth ** i))
        conv = nn.Conv2d(in_ch, out_ch, k, stride=2, padding=pad)
        convs.append(conv)
        n = i + 1
        enc.append((f"enc_conv{n}", conv))                 # (B, out_ch, ceil-ish(size / 2), ...)
        if cfg.batch_norm:
            enc.append((f"enc_bn{n}", nn.BatchNorm2d(out_ch)))
        enc.append((f"enc_act{n}", make_activation(act)))
        sizes.append((conv_out(sizes[-1][0], k, pad, 2), conv_out(sizes[-1][1], k, pad, 2)))
        in_ch = out_ch
    fh, fw = sizes[-1]
    features = in_ch * fh * fw
    enc.append(("flatten", nn.Flatten()))                  # (B, F * fh * fw)
    dense, chain, width = _dense_encoder(features, _hidden(cfg, []), act, cfg.dropout,
                                         first_act=cfg.conv_blocks + 1)
    enc += dense
    latent = nn.Linear(width, cfg.latent_dim)
    logvar = nn.Linear(width, cfg.latent_dim) if variational else None
    dec = _dense_decoder(chain + [latent], cfg.tied_weights, act, cfg.dropout, output_shape=None)
    dec.append(("unflatten", nn.Unflatten(1, (in_ch, fh, fw))))
    n_act = len(chain) + 1
    for i, conv in enumerate(reversed(convs), start=1):
        src_h, src_w = sizes[len(convs) - i]               # the size this block must restore
        # ConvTranspose2d: out = (in - 1) * 2 - 2 * pad + k + output_padding; output_padding in {0, 1}.
        op_h = src_h - ((sizes[len(convs) - i + 1][0] - 1) * 2 - 2 * pad + k)
        op_w = src_w - ((sizes[len(convs) - i + 1][1] - 1) * 2 - 2 * pad + k)
        if op_h != op_w or op_h not in (0, 1):   # pragma: no cover - impossible for square inputs
            raise ConfigError(f"model.kernel_size = {k} cannot be mirrored on the {h}x{w} input; use an odd kernel")
        if cfg.tied_weights:
            deconv: nn.Module = TiedConvTranspose2d(conv, op_h)
        else:
            deconv = nn.ConvTranspose2d(conv.out_channels, conv.in_channels, k, stride=2, padding=pad,
                                        output_padding=op_h)
        if i == len(convs):
            dec.append(("output", deconv))                 # (B, C, H, W), linear
            break
        n_act += 1
        dec.append((f"dec_deconv{i}", deconv))
        if cfg.batch_norm:
            dec.append((f"dec_bn{i}", nn.BatchNorm2d(conv.in_channels)))
        dec.append((f"dec_act{n_act}", make_activation(act)))
    return AutoEncoder(enc, latent, dec, input_shape, logvar)


def build_ae(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> AutoEncoder:
    """Fully connected autoencoder: hidden sizes ``model.hidden`` (default DEFAULT_HIDDEN), mirrored."""
    return _fc(cfg, input_shape, variational=False)


def build_conv_ae(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> AutoEncoder:
    """Strided-conv encoder, dense ``latent``, transposed-conv decoder back to the input shape."""
    return _conv(cfg, input_shape, variational=False)


def build_vae(cfg: ModelConfig, input_shape: tuple[int, int, int], n_classes: int) -> AutoEncoder:
    """Variational autoencoder, fully connected or convolutional (``model.variant``)."""
    if cfg.variant == "conv":
        return _conv(cfg, input_shape, variational=True)
    return _fc(cfg, input_shape, variational=True)


# --- helpers for render ---------------------------------------------------------------------------

def _inverse(normalize: Callable[[torch.Tensor], torch.Tensor], channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (offset, scale) with pixel = (normalised - offset) / scale, read off the
    (affine) ``normalize`` itself: offset = normalize(0), scale = normalize(255) - normalize(0)."""
    lo = normalize(torch.zeros((1, channels, 1, 1), dtype=torch.uint8))
    hi = normalize(torch.full((1, channels, 1, 1), 255, dtype=torch.uint8))
    return lo, hi - lo


@torch.inference_mode()
def _decode_to_pixels(model: AutoEncoder, z: torch.Tensor, normalize: Callable, batch_size: int) -> np.ndarray:
    offset, scale = _inverse(normalize, model.input_shape[0])
    device = offset.device
    out = []
    for start in range(0, len(z), batch_size):
        y = model.decode(z[start:start + batch_size].to(device))
        out.append(((y - offset) / scale).clamp(0, 1).float().cpu())
    return torch.cat(out).numpy()


def reconstruct(model: AutoEncoder, images_u8: np.ndarray | torch.Tensor, normalize: Callable,
                batch_size: int = 256) -> np.ndarray:
    """Reconstructions of ``images_u8`` (N, C, H, W uint8) as float32 (N, C, H, W) pixels in [0, 1].

    Eval mode (a VAE decodes its mean); the output is mapped back from normalised units with the
    inverse of ``normalize`` and clipped to [0, 1]. The model's mode is restored.
    """
    images = torch.as_tensor(np.asarray(images_u8) if not torch.is_tensor(images_u8) else images_u8)
    c = model.input_shape[0]
    offset, scale = _inverse(normalize, c)
    out = []
    with eval_mode(model), torch.inference_mode():
        for _, x in normalized_batches(images, normalize, batch_size):
            out.append(((model(x) - offset) / scale).clamp(0, 1).float().cpu())
    if not out:
        return np.zeros((0, *model.input_shape), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32)


def _to_pixels(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised (N, C, H, W) tensor -> float32 pixels in [0, 1] (the inverse of runtime.normalizer)."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).clamp_min(1e-6)
    return (x.float().cpu() * s + m).clamp(0, 1).numpy().astype(np.float32)


def denoise(model: AutoEncoder, images_u8: np.ndarray, *, mean: Sequence[float], std: Sequence[float],
            noise: float, noise_kind: str, seed: int, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(noisy input, denoised output) pixels in [0, 1], (N, C, H, W) each: the training noise
    (:func:`corrupt` with ``noise``/``noise_kind``, black-pixel background, a generator seeded with
    ``seed``) applied to ``images_u8`` (N, C, H, W uint8) normalised with ``mean``/``std``, then the
    model in eval mode (restored afterwards)."""
    model.set_input_stats(mean, std)
    generator = torch.Generator().manual_seed(seed)
    noisy, out = [], []
    with eval_mode(model), torch.inference_mode():
        for _, x in normalized_batches(images_u8, normalizer(mean, std, "cpu"), batch_size):
            x_noisy = corrupt(x, noise, noise_kind, model.pixel_zero, generator)
            noisy.append(_to_pixels(x_noisy, mean, std))
            out.append(_to_pixels(model(x_noisy), mean, std))
    return np.concatenate(noisy), np.concatenate(out)


def decode_grid(model: AutoEncoder, normalize: Callable, *, n: int = 15, latents: np.ndarray | None = None,
                dims: tuple[int, int] = (0, 1), quantile: float = 0.01,
                batch_size: int = 256) -> dict[str, Any]:
    """Decode a regular n x n grid over two latent dimensions (the 2-D manifold view).

    VAE: the grid runs over the N(0, 1) quantiles 0.05 .. 0.95 of each dimension (the prior),
    other dimensions held at 0. AE: it spans the observed range of ``latents`` (N, latent_dim),
    e.g. data/activations/latent.npy, from its ``quantile`` to ``1 - quantile`` quantile (outliers
    do not stretch the grid), other dimensions held at their median.

    Returns ``images`` float32 (n, n, C, H, W) pixels in [0, 1], where ``images[i, j]`` decodes
    x = ``xs[j]`` (increasing to the right) and y = ``ys[i]`` (decreasing downwards, as in a
    scatter plot), plus ``xs``, ``ys`` and ``dims``.
    """
    d = model.latent_dim
    if d < 2:
        raise UserError(f"the latent manifold grid needs model.latent_dim >= 2 (it is {d}); "
                        f"train with model.latent_dim = 2")
    if len(set(dims)) != 2 or not all(0 <= i < d for i in dims):
        raise UserError(f"decode_grid dims {tuple(dims)} must be two different latent dimensions in 0..{d - 1}")
    if n < 2:
        raise ValueError("decode_grid needs n >= 2 points per side")
    base = np.zeros(d, dtype=np.float64)
    if model.variational:
        probs = torch.linspace(0.05, 0.95, n, dtype=torch.float64)
        axes = [torch.special.ndtri(probs).numpy()] * 2
    else:
        if latents is None:
            raise UserError("decode_grid of a plain autoencoder needs the observed latents "
                            "(data/activations/latent.npy) to know the latent range")
        latents = np.asarray(latents, dtype=np.float64).reshape(len(latents), -1)
        if latents.shape[1] != d or not len(latents):
            raise UserError(f"latents have shape {latents.shape}; expected (N, {d}) from this model's `latent` layer")
        base = np.median(latents, axis=0)
        axes = [np.linspace(*np.quantile(latents[:, i], [quantile, 1 - quantile]), n) for i in dims]
    xs, ys = axes[0], axes[1][::-1].copy()
    z = np.tile(base, (n, n, 1))                                             # (n, n, D)
    z[:, :, dims[0]] = xs[None, :]
    z[:, :, dims[1]] = ys[:, None]
    with eval_mode(model):
        images = _decode_to_pixels(model, torch.from_numpy(z.reshape(n * n, d)).float(), normalize, batch_size)
    return {"images": images.reshape(n, n, *model.input_shape).astype(np.float32),
            "xs": xs.astype(np.float32), "ys": ys.astype(np.float32), "dims": [int(i) for i in dims]}
