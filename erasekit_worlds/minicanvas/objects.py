"""MiniCanvas objects: each is one function that draws labelled parts with natural colours on a :class:`Canvas`.

Objects differ by silhouette and structure (a stick below or above a blob, wheels, petals, a sail...), because
styles are free to replace their colours. Coordinates are x right, y up, inside [-1, 1]²; the renderer places,
scales, rotates and mirrors the whole drawing. Adding an object is one decorated function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .canvas import Canvas, ellipse_points

ObjectFn = Callable[[Canvas, np.random.Generator], None]
OBJECT_FNS: dict[str, ObjectFn] = {}


def register_object(name: str) -> Callable[[ObjectFn], ObjectFn]:
    """Register an object drawer under ``name`` (a lowercase word); a bad or duplicate name fails at import."""
    if not name.isalpha() or name != name.lower():
        raise ValueError(f"object names must be one lowercase word, got {name!r}")
    if name in OBJECT_FNS:
        raise ValueError(f"object {name!r} is already registered")

    def wrap(fn: ObjectFn) -> ObjectFn:
        OBJECT_FNS[name] = fn
        return fn

    return wrap


def pick(rng: np.random.Generator, options: Sequence[Sequence[float]], jitter: float = 16.0) -> np.ndarray:
    """Choose one RGB colour from ``options`` and jitter each channel by up to ``jitter`` (0-255 scale)."""
    base = np.asarray(options[int(rng.integers(len(options)))], dtype=np.float64)
    return np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255)


BROWN = [(110, 70, 35), (130, 85, 45), (95, 60, 30)]
GREEN = [(60, 150, 50), (40, 120, 45), (90, 170, 60)]
DARK = [(35, 35, 40), (25, 25, 25)]


@register_object("apple")
def apple(c: Canvas, rng: np.random.Generator) -> None:
    """A round fruit with a dip on top, a short stem above and one leaf."""
    body = c.part(pick(rng, [(200, 30, 35), (120, 185, 55), (230, 195, 60), (170, 20, 40)]))
    c.ellipse(-0.3, 0.0, 0.6, 0.6, body)
    c.ellipse(0.3, 0.0, 0.6, 0.6, body)
    c.ellipse(0.0, -0.3, 0.62, 0.55, body)
    c.line([(0.0, 0.42), (0.1, 0.92)], 0.11, c.part(pick(rng, BROWN)))
    c.ellipse(0.36, 0.78, 0.27, 0.12, c.part(pick(rng, GREEN)), angle=25)


@register_object("house")
def house(c: Canvas, rng: np.random.Generator) -> None:
    """A square house with a triangular roof, a chimney, a door and two windows."""
    wall = c.part(pick(rng, [(235, 220, 190), (220, 200, 150), (200, 205, 215), (240, 235, 225)]))
    roof = c.part(pick(rng, [(170, 50, 40), (120, 70, 50), (80, 85, 95)]))
    c.rect(0.38, 0.3, 0.6, 0.88, c.part(pick(rng, [(150, 70, 50)])))
    c.rect(-0.7, -0.88, 0.7, 0.18, wall)
    c.polygon([(-0.92, 0.12), (0.92, 0.12), (0.0, 0.92)], roof)
    c.rect(-0.16, -0.88, 0.16, -0.28, c.part(pick(rng, BROWN)))
    window = c.part(pick(rng, [(150, 200, 235), (120, 170, 210)]))
    c.rect(-0.56, -0.32, -0.3, -0.06, window)
    c.rect(0.3, -0.32, 0.56, -0.06, window)


@register_object("tree")
def tree(c: Canvas, rng: np.random.Generator) -> None:
    """A leafy tree: a thick trunk below a lumpy round crown."""
    c.polygon([(-0.16, -0.96), (0.16, -0.96), (0.1, -0.1), (-0.1, -0.1)], c.part(pick(rng, BROWN)))
    crown = c.part(pick(rng, GREEN + [(100, 140, 40), (50, 110, 60)]))
    for x, y, r in [
        (0.0, 0.4, 0.48),
        (-0.42, 0.18, 0.36),
        (0.42, 0.18, 0.36),
        (-0.22, 0.64, 0.34),
        (0.24, 0.66, 0.32),
    ]:
        c.ellipse(x, y, r, r, crown)


@register_object("car")
def car(c: Canvas, rng: np.random.Generator) -> None:
    """A side view of a car: body with a cabin, two windows and two wheels."""
    paint = c.part(pick(rng, [(200, 40, 40), (40, 90, 190), (235, 190, 40), (60, 150, 80), (230, 230, 235)]))
    body = [(-0.95, -0.4), (0.95, -0.4), (0.95, -0.05), (0.85, 0.06), (0.48, 0.1), (0.26, 0.46)]
    body += [(-0.44, 0.46), (-0.64, 0.1), (-0.9, 0.06), (-0.95, -0.05)]
    c.polygon(body, paint)
    glass = c.part(pick(rng, [(170, 210, 230), (140, 170, 190)]))
    c.polygon([(-0.52, 0.12), (-0.06, 0.12), (-0.06, 0.37), (-0.38, 0.37)], glass)
    c.polygon([(0.03, 0.12), (0.4, 0.12), (0.22, 0.37), (0.03, 0.37)], glass)
    tyre, hub = c.part(pick(rng, DARK)), c.part(pick(rng, [(180, 180, 185)]))
    for x in (-0.55, 0.55):
        c.ellipse(x, -0.42, 0.25, 0.25, tyre)
        c.ellipse(x, -0.42, 0.1, 0.1, hub)


@register_object("fish")
def fish(c: Canvas, rng: np.random.Generator) -> None:
    """A side view of a fish: oval body, forked tail, a dorsal fin and an eye."""
    colour = pick(rng, [(240, 140, 30), (60, 120, 200), (230, 200, 60), (40, 170, 160), (200, 70, 90)])
    fin = c.part(colour * 0.75)
    c.polygon([(0.4, 0.0), (0.97, 0.46), (0.82, 0.0), (0.97, -0.46)], fin)
    c.polygon([(-0.35, 0.28), (0.15, 0.3), (-0.05, 0.6)], fin)
    c.ellipse(-0.12, 0.0, 0.66, 0.38, c.part(colour))
    c.ellipse(-0.5, 0.08, 0.08, 0.08, c.part(pick(rng, DARK)))


@register_object("bird")
def bird(c: Canvas, rng: np.random.Generator) -> None:
    """A perched bird: round body, head with a beak, a wing, a tail and two legs."""
    colour = pick(rng, [(60, 110, 200), (200, 40, 40), (230, 200, 50), (140, 100, 60), (90, 160, 90)])
    feet = c.part(pick(rng, [(230, 140, 30), (60, 50, 40)]))
    for x in (-0.08, 0.14):
        c.line([(x, -0.45), (x - 0.04, -0.9)], 0.06, feet)
    body = c.part(colour)
    c.polygon([(0.3, 0.02), (0.98, -0.28), (0.92, -0.5), (0.26, -0.3)], body)
    c.ellipse(0.05, -0.15, 0.52, 0.38, body, angle=-15)
    c.ellipse(-0.45, 0.35, 0.28, 0.28, body)
    c.polygon([(-0.66, 0.44), (-0.66, 0.25), (-0.97, 0.32)], c.part(pick(rng, [(240, 160, 30)])))
    c.ellipse(0.15, -0.1, 0.36, 0.18, c.part(colour * 0.7), angle=-20)
    c.ellipse(-0.5, 0.4, 0.06, 0.06, c.part(pick(rng, DARK)))


@register_object("flower")
def flower(c: Canvas, rng: np.random.Generator) -> None:
    """A flower: a stem with two leaves, a ring of petals and a round centre."""
    stem = c.part(pick(rng, GREEN))
    c.line([(0.0, 0.2), (0.0, -0.98)], 0.1, stem)
    c.ellipse(0.24, -0.6, 0.24, 0.09, stem, angle=30)
    c.ellipse(-0.24, -0.42, 0.24, 0.09, stem, angle=-30)
    petal = c.part(pick(rng, [(230, 90, 150), (200, 40, 50), (150, 80, 200), (240, 150, 40), (90, 120, 230)]))
    n = int(rng.integers(5, 8))
    spin = rng.uniform(0, 360 / n)
    for k in range(n):
        a = math.radians(spin + 360 * k / n)
        c.ellipse(0.38 * math.cos(a), 0.35 + 0.38 * math.sin(a), 0.3, 0.17, petal, angle=math.degrees(a))
    c.ellipse(0.0, 0.35, 0.19, 0.19, c.part(pick(rng, [(245, 210, 50), (120, 80, 30)])))


@register_object("boat")
def boat(c: Canvas, rng: np.random.Generator) -> None:
    """A sailboat: a hull, a mast with a flag, a main sail and a jib."""
    c.polygon([(-0.92, -0.45), (0.92, -0.45), (0.6, -0.85), (-0.6, -0.85)], c.part(pick(rng, BROWN + [(180, 50, 40)])))
    c.line([(0.0, -0.45), (0.0, 0.95)], 0.07, c.part(pick(rng, BROWN)))
    sail = c.part(pick(rng, [(245, 240, 225), (235, 230, 210), (240, 225, 200)]))
    c.polygon([(0.07, -0.35), (0.07, 0.88), (0.78, -0.35)], sail)
    c.polygon([(-0.07, -0.35), (-0.07, 0.68), (-0.62, -0.35)], sail)
    c.polygon([(0.03, 0.96), (0.28, 0.87), (0.03, 0.78)], c.part(pick(rng, [(210, 40, 40)])))


@register_object("cup")
def cup(c: Canvas, rng: np.random.Generator) -> None:
    """A mug on a saucer: tapered body, a ring handle on the side and the drink's surface."""
    c.ellipse(-0.05, -0.68, 0.9, 0.14, c.part(pick(rng, [(235, 235, 240), (200, 210, 220)])))
    colour = pick(rng, [(240, 240, 240), (60, 120, 200), (200, 60, 60), (240, 200, 80), (90, 170, 120)])
    mug = c.part(colour)
    c.line(ellipse_points(0.5, 0.0, 0.3, 0.28), 0.13, mug, closed=True)
    c.polygon([(-0.6, 0.55), (0.5, 0.55), (0.42, -0.62), (-0.52, -0.62)], mug)
    c.ellipse(-0.05, 0.55, 0.55, 0.09, c.part(pick(rng, [(110, 65, 35), (90, 50, 25)])))


@register_object("star")
def star(c: Canvas, rng: np.random.Generator) -> None:
    """A five-pointed star with a lighter inner star."""
    colour = pick(rng, [(245, 200, 40), (240, 140, 30), (220, 50, 50), (70, 120, 220)])
    for radius, shade in ((0.98, 1.0), (0.45, 1.25)):
        a = np.radians(90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.42)
        c.polygon(np.stack([r * np.cos(a), r * np.sin(a) - 0.05], axis=1), c.part(np.clip(colour * shade, 0, 255)))
