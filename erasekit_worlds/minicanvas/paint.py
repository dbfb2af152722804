"""Pixel helpers shared by MiniCanvas styles: fills, outlines, noise, blurs and resampling.

Images are float32 RGB in 0-255 with shape (H, W, 3); masks are float32 in [0, 1] or bool with shape (H, W). Work is
done in place where it can be, because these run once per rendered image and rendering should stay near a millisecond.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from .canvas import CANVAS_SIZE, SUPERSAMPLE

S, SS = CANVAS_SIZE, SUPERSAMPLE
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@functools.lru_cache(maxsize=4)
def grid(size: int = S) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)`` of a ``size``² image in [0, 1), as read-only float32 arrays."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = np.meshgrid(t, t)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def flat(colour: Sequence[float], size: int = S) -> np.ndarray:
    """A (size, size, 3) float32 image of one colour."""
    out = np.empty((size, size, 3), dtype=np.float32)
    out[:] = np.asarray(colour, dtype=np.float32)
    return out


def fill(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Colour every pixel by its label's row of ``colours``: (H, W) labels, (K+1, 3) colours -> (H, W, 3)."""
    return np.take(np.asarray(colours, dtype=np.float32), labels, axis=0)


def mix(a: np.ndarray, b: np.ndarray | Sequence[float], alpha: np.ndarray | float) -> np.ndarray:
    """``a`` blended towards ``b`` by ``alpha`` (an (H, W) mask or a scalar); returns a new array."""
    alpha = np.asarray(alpha, dtype=np.float32)
    out = np.subtract(np.asarray(b, dtype=np.float32), a, dtype=np.float32)
    out *= alpha[..., None] if alpha.ndim == 2 else alpha
    out += a
    return out


def paint(img: np.ndarray, colour: Sequence[float], where: np.ndarray) -> np.ndarray:
    """Set ``img`` to ``colour`` wherever the bool mask ``where`` is true, in place; returns ``img``."""
    img[where] = np.asarray(colour, dtype=np.float32)
    return img


def edges(labels: np.ndarray, width: int = 1, both: bool = True) -> np.ndarray:
    """Bool band along every boundary between parts (and the background).

    With ``both`` the band covers ``width`` pixels on each side of a boundary; otherwise only the side that comes
    first along the shift directions, so the band is ``width`` pixels wide in total.
    """
    out = np.zeros(labels.shape, dtype=bool)
    h, w = labels.shape
    for dy, dx in ((0, width), (width, 0), (width, width), (width, -width)):
        xa, xb = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        ya, yb = slice(0, h - dy), slice(dy, h)
        diff = labels[ya, xa] != labels[yb, xb]
        out[ya, xa] |= diff
        if both:
            out[yb, xb] |= diff
    return out


def outline(labels: np.ndarray, px: float) -> np.ndarray:
    """Bool band about ``px`` *output* pixels wide along every part boundary."""
    width = px * SS
    return edges(labels, max(1, round(width / 2))) if width >= 2 else edges(labels, 1, both=False)


def silhouette(labels: np.ndarray) -> np.ndarray:
    """Labels with every part merged into one (0 background, 1 object), as uint8."""
    return (labels > 0).astype(np.uint8)


def spread(labels: np.ndarray, width: int) -> np.ndarray:
    """Labels where background pixels up to ``width`` away from a part take that part's label (a cheap dilation)."""
    out = labels.copy()
    for shift in ((width, 0), (-width, 0), (0, width), (0, -width)):
        out = np.where(out == 0, np.roll(labels, shift, (0, 1)), out)
    return out


def smooth_noise(rng: np.random.Generator, cells: int, size: int = S) -> np.ndarray:
    """Smooth value noise in [0, 1]: a ``cells``² random grid upsampled bicubically to ``size``²."""
    small = Image.fromarray(rng.random((cells, cells), dtype=np.float32))
    return np.clip(np.asarray(small.resize((size, size), Image.BICUBIC)), 0.0, 1.0)


def grain(rng: np.random.Generator, cell: int = SS, size: int = S) -> np.ndarray:
    """White noise in [0, 1) in ``cell``-pixel squares (``cell = SS`` gives one value per output pixel)."""
    small = rng.random((size // cell, size // cell), dtype=np.float32)
    return np.repeat(np.repeat(small, cell, 0), cell, 1)


def blur(mask: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian-blur a single-channel float mask in [0, 1] (through 8-bit PIL, which is fast)."""
    img = Image.fromarray((np.clip(mask, 0, 1) * 255.0).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) * np.float32(1 / 255)


def blur_rgb(img: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian-blur a float RGB image in 0-255 (through 8-bit PIL)."""
    u8 = Image.fromarray(to_uint8(img))
    return np.asarray(u8.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round and clip a float image in 0-255 to uint8."""
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def downsample(img: np.ndarray, factor: int = SS) -> np.ndarray:
    """Box-filter an (H, W[, C]) float image by an integer ``factor`` (sums of strided views: fast in numpy)."""
    out = np.zeros((img.shape[0] // factor, img.shape[1] // factor, *img.shape[2:]), dtype=np.float32)
    for i in range(factor):
        for j in range(factor):
            out += img[i::factor, j::factor]
    out *= np.float32(1 / factor**2)
    return out


def upsample(img: np.ndarray, factor: int = SS) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer ``factor``."""
    return np.repeat(np.repeat(img, factor, 0), factor, 1)


def saturate(colours: np.ndarray, amount: float) -> np.ndarray:
    """Push colours away from (``amount`` > 1) or towards (< 1) their grey level, clipped to 0-255."""
    grey = luminance(colours)[..., None]
    return np.clip(grey + (colours - grey) * np.float32(amount), 0, 255).astype(np.float32)


def luminance(colours: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of RGB colours in 0-255."""
    return np.asarray(colours, dtype=np.float32) @ _LUMA


def sample_at(labels: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Labels at positions given in *output* pixel units (arrays broadcast together), clipped to the canvas."""
    r = np.clip((np.asarray(y) * SS).astype(np.int64), 0, labels.shape[0] - 1)
    c = np.clip((np.asarray(x) * SS).astype(np.int64), 0, labels.shape[1] - 1)
    return labels[r, c]
