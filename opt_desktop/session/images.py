"""Heatmaps as PNG bytes without Qt: numpy for the colours, Pillow for the encoding."""

from __future__ import annotations

import io

import numpy as np

# Viridis as a degree-6 polynomial per channel (Matt Zucker's CC0 fit of matplotlib's map; error < 1%).
_VIRIDIS = np.array([
    [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
    [0.1050930431085774, 1.404613529898575, 1.384590162594685],
    [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
    [-4.634230498983486, -5.799100973351585, -19.33244095627987],
    [6.228269936347081, 14.17993336680509, 56.69055260068105],
    [4.776384997670288, -13.74514537774601, -65.35303263337234],
    [-5.435455855934631, 4.645852612178535, 26.3124352495832],
])
MISSING_RGB = (224, 224, 224)  # cells with no value (NaN)


def viridis(t: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB (..., 3); NaN -> MISSING_RGB."""
    t = np.asarray(t, np.float64)
    x = np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0)[..., None]
    rgb = np.zeros(x.shape[:-1] + (3,))
    for coefficients in _VIRIDIS[::-1]:  # Horner's scheme
        rgb = rgb * x + coefficients
    out = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    out[np.isnan(t)] = MISSING_RGB
    return out


def value_range(data: np.ndarray) -> tuple[float, float]:
    finite = np.asarray(data, np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


def heatmap_png(data: np.ndarray, cell: tuple[int, int] = (8, 8), max_size: int = 1600,
                vmin: float | None = None, vmax: float | None = None) -> bytes:
    """(rows, cols) values -> PNG, row 0 at the top, each cell `cell` (w, h) pixels (smaller when the
    image would be wider or taller than max_size). Colours span [vmin, vmax] (default: the data's range)."""
    from PIL import Image

    data = np.asarray(data, np.float64)
    lo, hi = value_range(data)
    lo = lo if vmin is None else vmin
    hi = hi if vmax is None else vmax
    scaled = (data - lo) / (hi - lo) if hi > lo else np.where(np.isnan(data), np.nan, 0.5)
    rows, cols = data.shape
    w = max(1, min(cell[0], max_size // max(cols, 1)))
    h = max(1, min(cell[1], max_size // max(rows, 1)))
    image = Image.fromarray(viridis(scaled), "RGB").resize((cols * w, rows * h), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def colorbar_png(width: int = 160, height: int = 10) -> bytes:
    """The colour scale itself, low values on the left."""
    return heatmap_png(np.linspace(0.0, 1.0, width)[None, :], cell=(1, height))
