"""A tiny vector pen for MiniCanvas objects: draws part labels (not colours) at the supersampled resolution.

Objects are described in their own coordinates, x to the right and y up, fitting the square [-1, 1]². A
:class:`Canvas` maps them to pixels through one similarity transform (centre, scale, rotation, optional mirror) and
rasterises every primitive as a polygon into an 8-bit *label* image: 0 is background, 1..K are the object's parts.
Styles later turn labels plus each part's natural colour into pixels, so every object works in every style.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

OUT_SIZE = 64  # side of the images MiniCanvas hands out
SUPERSAMPLE = 2  # draw at 2x and box-filter down: 4 samples per pixel for anti-aliased edges, and fast
CANVAS_SIZE = OUT_SIZE * SUPERSAMPLE

Point = tuple[float, float]


class Canvas:
    """A label image plus the transform from object coordinates to its pixels.

    Args:
        size: side of the (supersampled) canvas in pixels.
        centre: object origin in pixels (x, y).
        scale: pixels per object unit.
        angle: rotation in degrees, counter-clockwise.
        mirror: mirror the object left-right before rotating.
    """

    def __init__(self, size: int, centre: Point, scale: float, angle: float = 0.0, mirror: bool = False):
        self.size = size
        self.scale = scale
        self.image = Image.new("L", (size, size), 0)
        self._draw = ImageDraw.Draw(self.image)
        rad = math.radians(angle)
        flip = -1.0 if mirror else 1.0
        # rows map object (x, y) to pixel (u, v); the minus on y turns "up" into image rows going down
        self._m = np.array(
            [
                [flip * scale * math.cos(rad), -scale * math.sin(rad)],
                [-flip * scale * math.sin(rad), -scale * math.cos(rad)],
            ]
        )
        self._t = np.array(centre, dtype=np.float64)
        self.colours: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]

    def part(self, colour: Sequence[float]) -> int:
        """Register a part with its natural RGB colour (0-255) and return its label id."""
        if len(self.colours) >= 255:
            raise ValueError("a MiniCanvas object can have at most 254 parts")
        self.colours.append(tuple(float(c) for c in colour))
        return len(self.colours) - 1

    def to_pixels(self, points: np.ndarray) -> list[float]:
        """Map an (N, 2) array of object coordinates to a flat [u0, v0, u1, v1, ...] pixel list."""
        return (np.asarray(points, dtype=np.float64) @ self._m.T + self._t).ravel().tolist()

    def polygon(self, points: Sequence[Point] | np.ndarray, part: int) -> None:
        """Fill a polygon given by its vertices in object coordinates."""
        self._draw.polygon(self.to_pixels(points), fill=part)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, part: int, angle: float = 0.0) -> None:
        """Fill an ellipse (centre, radii, rotation in degrees) in object coordinates."""
        self.polygon(ellipse_points(cx, cy, rx, ry, angle), part)

    def rect(self, x0: float, y0: float, x1: float, y1: float, part: int) -> None:
        """Fill the axis-aligned (in object space) rectangle with corners (x0, y0) and (x1, y1)."""
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], part)

    def line(self, points: Sequence[Point] | np.ndarray, width: float, part: int, closed: bool = False) -> None:
        """Stroke a polyline of the given width (object units) with round joints."""
        pts = np.asarray(points, dtype=np.float64)
        if closed:
            pts = np.vstack([pts, pts[:1]])
        self._draw.line(self.to_pixels(pts), fill=part, width=max(1, round(width * self.scale)), joint="curve")

    def labels(self) -> np.ndarray:
        """Return the label image as an (size, size) uint8 array."""
        return np.asarray(self.image)


def ellipse_points(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 28) -> np.ndarray:
    """Vertices of an ellipse as an (n, 2) array, rotated by ``angle`` degrees about its centre."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    a = math.radians(angle)
    return np.stack([cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)], axis=1)
