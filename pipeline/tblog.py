"""Images for the training TensorBoard log: pure functions, arrays in, uint8 RGB arrays out.

TensorBoard shows an image at its own pixel size, so a 5x5 filter logged as it is covers 5
screen pixels. :func:`filter_grid` enlarges every weight to a block of pixels (nearest
neighbour: no blurring between weights) and colours it with a diverging map centred on zero.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["filter_grid", "CMAP", "MIN_CELL_PX"]

CMAP = "RdBu_r"          # diverging: negative weights blue, zero white, positive red
MIN_CELL_PX = 96         # each filter is drawn at least this many pixels wide
_PAD_PX = 4              # grey gap between filters
_PAD_RGB = (160, 160, 160)


def filter_grid(weights: np.ndarray, *, max_filters: int = 64, min_cell_px: int = MIN_CELL_PX) -> np.ndarray:
    """Filters ``(F, C, kh, kw)`` -> one RGB image ``(H, W, 3)`` uint8, filters in a near-square grid.

    One input channel (or more than three: the first is shown): the weights through :data:`CMAP`
    on one symmetric scale for the whole image (the largest absolute weight is full colour, zero
    is white), so filters compare with each other. Three input channels: the filter's own colours,
    ``0.5 + w / (2 * max|w|)`` per channel. Each weight becomes a square of
    ``ceil(min_cell_px / max(kh, kw))`` pixels. At most ``max_filters`` filters.
    """
    from matplotlib import colormaps

    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or min(w.shape) < 1:
        raise ValueError(f"weights must be (filters, channels, height, width), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weights hold NaN or infinite values")
    w = w[:max_filters]
    n, c, kh, kw = w.shape
    limit = float(np.abs(w).max()) or 1.0
    if c == 3:
        tiles = np.clip(0.5 + w.transpose(0, 2, 3, 1) / (2 * limit), 0.0, 1.0)            # (n, kh, kw, 3)
        tiles = np.rint(tiles * 255).astype(np.uint8)
    else:
        unit = np.clip(0.5 + w[:, 0] / (2 * limit), 0.0, 1.0)                                  # (n, kh, kw)
        lut = (colormaps[CMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
        tiles = lut[np.rint(unit * 255).astype(np.int64)]                                      # (n, kh, kw, 3)
    scale = max(1, math.ceil(min_cell_px / max(kh, kw)))
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)                                  # nearest neighbour
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    th, tw = kh * scale, kw * scale
    out = np.empty((rows * th + (rows + 1) * _PAD_PX, cols * tw + (cols + 1) * _PAD_PX, 3), dtype=np.uint8)
    out[:] = _PAD_RGB
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = _PAD_PX + r * (th + _PAD_PX), _PAD_PX + q * (tw + _PAD_PX)
        out[y:y + th, x:x + tw] = tiles[i]
    return out
