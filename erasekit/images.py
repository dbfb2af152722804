"""Image grids with optional row/column labels, saved atomically as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ._io import atomic_path

LABEL_WIDTH = 160  # pixels reserved for row labels
LABEL_HEIGHT = 16  # pixels reserved for column labels


def to_pil(image: torch.Tensor) -> Image.Image:
    """A ``[3, H, W]`` float image in ``[0, 1]`` as a PIL image."""
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def grid(
    images: torch.Tensor,
    ncol: int,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    pad: int = 2,
    mark_rows: Sequence[int] = (),
) -> Image.Image:
    """Lay ``images`` (``[N, 3, H, W]``, row-major) out in ``ncol`` columns; ``mark_rows`` get a red frame."""
    n, _, h, w = images.shape
    nrow = -(-n // ncol)
    left = LABEL_WIDTH if row_labels else 0
    top = LABEL_HEIGHT if col_labels else 0
    canvas = Image.new("RGB", (left + ncol * (w + pad) + pad, top + nrow * (h + pad) + pad), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas.paste(to_pil(images[i]), (left + pad + c * (w + pad), top + pad + r * (h + pad)))
    for r, label in enumerate(row_labels or []):
        draw.text((4, top + pad + r * (h + pad) + h // 2 - 6), str(label)[:26], fill="black", font=font)
    for c, label in enumerate(col_labels or []):
        draw.text((left + pad + c * (w + pad) + 2, 2), str(label)[:12], fill="black", font=font)
    for r in mark_rows:
        y = top + r * (h + pad)
        draw.rectangle([left, y, canvas.width - 1, y + h + 2 * pad - 1], outline="red", width=2)
    return canvas


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Save a PIL image as PNG, atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
