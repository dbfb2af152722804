"""MiniCanvas styles: each is one function that turns an object's part labels and natural colours into pixels.

A style gets the supersampled label image (0 = background, 1..K = parts), the (K+1, 3) natural part colours (row 0
unused) and a random generator, and returns float RGB in 0-255, either at the supersampled size or already at the
output size (styles built from cells, like Pixel and Mosaic). Styles differ in what a small CNN sees at 64 px:
palette, paper or background pattern, fill texture, line treatment and quantisation.

``"Photo"`` is registered first, so it is ``STYLES[0]``: plain natural colours, smooth shading, no texture and no
outlines (UnlearnCanvas' ``Seed_Images``). Adding a style is one decorated function.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from .canvas import OUT_SIZE
from .objects import pick
from .paint import (
    SS,
    blur,
    blur_rgb,
    downsample,
    fill,
    flat,
    grain,
    grid,
    luminance,
    mix,
    outline,
    paint,
    sample_at,
    saturate,
    silhouette,
    smooth_noise,
    spread,
    upsample,
)

StyleFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
STYLE_FNS: dict[str, StyleFn] = {}
N = OUT_SIZE


def register_style(name: str) -> Callable[[StyleFn], StyleFn]:
    """Register a style under ``name`` (capitalised words, e.g. ``"Pop Art"``); bad or duplicate names fail at import."""
    if not all(w.isalpha() and w[0].isupper() for w in name.split(" ")):
        raise ValueError(f"style names must be capitalised words separated by single spaces, got {name!r}")
    if name in STYLE_FNS:
        raise ValueError(f"style {name!r} is already registered")

    def wrap(fn: StyleFn) -> StyleFn:
        STYLE_FNS[name] = fn
        return fn

    return wrap


SKIES = [(150, 190, 230), (200, 215, 230), (225, 215, 195), (175, 200, 215)]
GROUNDS = [(120, 150, 90), (190, 175, 150), (150, 150, 155), (215, 205, 185)]


@register_style("Photo")
def photo(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Plain natural colours, a smooth sky-to-ground background and soft directional light; no lines, no texture."""
    x, y = grid()
    top, bottom = pick(rng, SKIES, 12), pick(rng, GROUNDS, 12)
    t = np.clip((y[:, :1] - rng.uniform(0.45, 0.8)) * 6.0 + 0.5, 0.0, 1.0)  # a soft horizon
    background = (top + (bottom - top) * t[..., None]).astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    shade = 1.0 + 0.44 * ((x - 0.5) * np.float32(np.cos(a)) + (y - 0.5) * np.float32(np.sin(a)))
    obj = fill(labels, colours)
    obj *= shade[..., None]
    return np.where((labels > 0)[..., None], obj, background)


@register_style("Watercolor")
def watercolor(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Washes on white paper: blotchy, lightened pigment, darker pooled rims and softly bleeding borders."""
    paper = flat(pick(rng, [(250, 247, 238), (245, 245, 240)], 4), N)
    wash = pick(rng, [(150, 190, 230), (230, 180, 170), (190, 220, 180), (220, 200, 230)], 15)
    paper = mix(paper, wash, 0.3 * smooth_noise(rng, 4, N))  # a faint background wash
    pigment = saturate(colours, 0.9) * 0.7 + 255 * 0.3
    pigment[0] = 255.0  # background absorbs nothing
    absorb = 255.0 - fill(labels, pigment)
    density = 0.55 + 0.45 * smooth_noise(rng, 8) + 0.7 * outline(labels, 1)
    absorb *= density[..., None]
    absorb = blur_rgb(downsample(absorb), 0.8) * np.float32(1 / 255)
    return paper * (1.0 - np.clip(absorb, 0.0, 1.0))


@register_style("Sketch")
def sketch(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Graphite on white paper: a doubled, slightly offset dark outline and diagonal hatching, denser where dark."""
    x, y = grid()
    period, phase = 4 * SS * rng.uniform(0.9, 1.1), rng.uniform(0, 8 * SS)
    u, v = (x + y) * (N * SS) + phase, (x - y) * (N * SS) + phase
    darkness = np.clip(1.0 - luminance(colours) / 255.0, 0.0, 1.0)
    darkness[0] = 0.0
    dark = np.take(darkness, labels)
    hatch = (u % period < 1.2 * SS) * (0.35 + 0.5 * dark) + (v % period < SS) * (dark > 0.45) * 0.5
    hatch *= labels > 0
    shifted = np.roll(outline(labels, 0.5), rng.integers(-SS, SS + 1, 2), (0, 1))
    lines = np.maximum(np.maximum(hatch, 0.9 * outline(labels, 1)), 0.5 * shifted)
    graphite = np.full(3, rng.uniform(40, 70), dtype=np.float32)
    return mix(flat(np.full(3, rng.uniform(236, 250))), graphite, np.clip(lines, 0, 1))


RETRO = [(90, 200, 250), (40, 40, 70), (120, 220, 130), (160, 110, 220), (250, 170, 200)]


@register_style("Pixel")
def pixel(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Retro pixel art: 3-pixel cells, a posterised saturated palette, a black outline and a flat background."""
    cell = 3
    centres = np.arange(-(-N // cell)) * cell + cell / 2
    cells = sample_at(labels, centres[:, None], centres[None, :])
    palette = np.round(saturate(colours, 1.5) / 85.0) * 85.0  # four levels per channel
    palette[0] = pick(rng, RETRO, 0)
    obj = cells > 0
    ring = ~obj & (np.roll(obj, 1, 0) | np.roll(obj, -1, 0) | np.roll(obj, 1, 1) | np.roll(obj, -1, 1))
    img = paint(fill(cells, palette), (15, 15, 15), ring)
    return upsample(img, cell)[:N, :N]


NEON = [(40, 240, 255), (255, 50, 220), (120, 255, 60), (255, 230, 40), (255, 90, 90)]


@register_style("Neon")
def neon(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Neon tubes on a near-black wall: the silhouette in one colour, inner lines in another, white cores, halos."""
    first, second = rng.choice(len(NEON), 2, replace=False)
    tube = outline(labels, 1)
    which = np.where(outline(silhouette(labels), 1), 0, 1)
    light = fill(which, np.array([NEON[first], NEON[second]], dtype=np.float32))
    glow = np.clip(blur(tube.astype(np.float32), 2.5 * SS) * 1.8, 0, 1)
    img = flat(rng.uniform(5, 25, 3)) + light * glow[..., None]
    img = np.where(tube[..., None], light, img)
    return mix(img, (255, 255, 255), 0.45 * tube)


TILES = [(225, 215, 195), (205, 205, 195), (200, 215, 220), (230, 205, 185)]  # pale stone, like Roman floors


@register_style("Mosaic")
def mosaic(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stone tiles in staggered rows with dark grout: jittered colours, pale ground, dark tiles ringing the figure."""
    rows, cols = N // 4, N // 4 + 1
    r, c = np.arange(rows)[:, None], np.arange(cols)[None, :]
    offset = (r % 2) * 2  # odd rows shift by half a tile
    tiles = sample_at(labels, r * 4 + 2.0, c * 4 - offset + 2.0)
    obj = tiles > 0
    ring = ~obj & (np.roll(obj, 1, 0) | np.roll(obj, -1, 0) | np.roll(obj, 1, 1) | np.roll(obj, -1, 1))
    palette = saturate(colours, 1.4)
    palette[0] = pick(rng, TILES, 8)
    colour = fill(tiles, palette) + rng.uniform(-12, 12, (rows, cols, 3)).astype(np.float32)
    paint(colour, (35, 30, 30), ring)
    y, x = np.mgrid[0:N, 0:N]
    shift = (y // 4 % 2) * 2
    img = colour[y // 4, (x + shift) // 4]
    grout = (y % 4 == 3) | ((x + shift) % 4 == 3)
    return paint(img, np.full(3, rng.uniform(70, 100)), grout)


POP = np.array([(230, 30, 45), (250, 215, 20), (30, 90, 210), (245, 110, 180), (30, 170, 90), (250, 250, 250)])


@register_style("Pop Art")
def pop_art(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Comic-book print: flat primary colours, thick black outlines and a halftone-dot background."""
    x, y = grid()
    vivid = saturate(colours, 2.0)  # each part takes the bold primary nearest its (exaggerated) natural colour
    palette = POP[((vivid[:, None, :] - POP[None]) ** 2).sum(-1).argmin(1)].astype(np.float32)
    back, dots = rng.choice(len(POP) - 1, 2, replace=False)
    palette[0] = POP[back]
    period = 4 * SS
    px, py = x * (N * SS), y * (N * SS)
    dy = py % period - period / 2
    dx = (px + (py // period % 2) * (period / 2)) % period - period / 2
    halftone = (dx * dx + dy * dy < (0.3 * period) ** 2) & (labels == 0)
    img = paint(fill(labels, palette), POP[dots] * 0.85, halftone)
    return paint(img, (10, 10, 10), outline(labels, 2))


@functools.lru_cache(maxsize=2)
def _neighbour_seeds(n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every output pixel, the padded-grid indices of the 3×3 seed cells around it, and their real cell ids."""
    size = N / n
    y, x = np.mgrid[0:N, 0:N] + 0.5
    gy, gx = (y // size).astype(np.int64), (x // size).astype(np.int64)
    offsets = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)]
    padded = np.stack([(gy + 1 + di) * (n + 2) + gx + 1 + dj for di, dj in offsets])
    real = np.stack([(gy + di) * n + gx + dj for di, dj in offsets])
    return padded, real


def voronoi(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi cells of a jittered ``n``×``n`` seed grid over the output image: (cell index, squared distance)."""
    seeds = np.full((n + 2, n + 2, 2), -1e4, dtype=np.float32)  # a border of far-away seeds
    seeds[1:-1, 1:-1] = (np.stack(np.mgrid[0:n, 0:n], -1) + rng.uniform(0.1, 0.9, (n, n, 2))) * (N / n)
    padded, real = _neighbour_seeds(n)  # on a jittered grid the nearest seed lies in a neighbouring grid cell
    y, x = np.mgrid[0:N, 0:N].astype(np.float32) + 0.5
    flat_seeds = seeds.reshape(-1, 2)
    d = (y - flat_seeds[padded, 0]) ** 2 + (x - flat_seeds[padded, 1]) ** 2
    k = d.argmin(0)[None]
    return np.take_along_axis(real, k, 0)[0], np.take_along_axis(d, k, 0)[0]


GLASS = np.array([(230, 190, 90), (120, 170, 230), (150, 210, 150), (200, 160, 220), (240, 230, 200)])


@register_style("Stained Glass")
def stained_glass(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A church window: Voronoi panes of jewel-toned glass, brighter at their centres, held by dark lead lines."""
    n = 6
    cell, dist = voronoi(rng, n)
    y, x = np.mgrid[0:N, 0:N].astype(np.float32) + 0.5
    glow = 1.15 - 0.35 * np.sqrt(dist) / np.float32(N / n)
    small = sample_at(labels, y, x)
    pane = cell * 256 + small
    lead = np.zeros(pane.shape, dtype=bool)
    lead[:, 1:] |= pane[:, 1:] != pane[:, :-1]
    lead[1:, :] |= pane[1:, :] != pane[:-1, :]
    tint = (GLASS[rng.integers(len(GLASS), size=n * n)] + rng.uniform(-25, 25, (n * n, 3))).astype(np.float32)
    img = np.where((small > 0)[..., None], fill(small, saturate(colours, 1.8) * 0.85), tint[cell]) * glow[..., None]
    img += rng.uniform(-12, 12, (n * n, 3)).astype(np.float32)[cell]
    img = upsample(paint(img, (30, 30, 30), lead))
    return paint(img, (25, 25, 30), outline(labels, 1.5))


@register_style("Blueprint")
def blueprint(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A technical drawing: thin white lines for every part outline on deep blue paper with a faint grid."""
    x, y = grid()
    ox, oy = rng.integers(0, 16 * SS, 2)
    gx, gy = (x * (N * SS) + ox).astype(np.int64), (y * (N * SS) + oy).astype(np.int64)
    minor = (gx % (4 * SS) == 0) | (gy % (4 * SS) == 0)
    major = (gx % (16 * SS) < SS) | (gy % (16 * SS) < SS)
    img = mix(flat(pick(rng, [(25, 65, 150), (20, 55, 125), (35, 80, 165)], 10)), (200, 220, 255), 0.12 * minor)
    img = mix(img, (200, 220, 255), 0.25 * major + 0.12 * (labels > 0))
    return paint(img, (235, 242, 255), outline(labels, 1))


@register_style("Crayon")
def crayon(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A child's crayon drawing: waxy streaky strokes with paper showing through, a heavy outline, a scribbled sky."""
    x, y = grid()
    a = rng.uniform(0, np.pi)
    across = ((x * np.cos(a) + y * np.sin(a)) * (1.5 * N)).astype(np.int64)
    streak = rng.random(4 * N, dtype=np.float32)[across % (4 * N)]
    noise = grain(rng)
    cover = np.clip((0.55 * streak + 0.45 * noise - 0.3) * 3.0, 0, 1)
    palette = saturate(colours, 1.4)
    img = mix(flat(pick(rng, [(252, 250, 243), (245, 240, 225)], 4)), fill(labels, palette), cover * (labels > 0))
    band = (y < rng.uniform(0.1, 0.2)) | (y > rng.uniform(0.85, 0.93))  # scribbled strips at the top and bottom
    sky = pick(rng, [(120, 170, 240), (250, 200, 80), (160, 220, 120)], 15)
    img = mix(img, sky, cover * 0.7 * (band & (labels == 0)))
    line = outline(labels, 1.5) & (noise > 0.25)
    return mix(img, fill(spread(labels, SS * 2), palette * 0.55), line)


@register_style("Ink")
def ink(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """East-Asian ink wash on beige rice paper: grey-to-black washes, darker rims and a red seal stamp."""
    paper = flat(pick(rng, [(236, 224, 196), (228, 218, 190)], 6))
    paper *= (0.96 + 0.04 * smooth_noise(rng, 48))[..., None]
    density = np.clip(1.15 - luminance(colours) / 255.0, 0.35, 0.95)
    density[0] = 0.0
    wash = np.take(density, labels) * (0.8 + 0.3 * smooth_noise(rng, 6))
    wash = np.maximum(wash, 0.95 * outline(labels, 1))
    img = mix(paper, (20, 18, 22), np.clip(wash, 0, 1))
    # the artist's seal: a small vermilion square in a bottom corner
    side, margin = 6 * SS, int(rng.integers(SS, 3 * SS))
    top = N * SS - side - margin
    left = margin if rng.random() < 0.5 else N * SS - side - margin
    img[top : top + side, left : left + side] = pick(rng, [(195, 40, 30)], 10)
    img[top + 2 * SS : top + side - 2 * SS, left + SS : left + side - SS] = (235, 200, 190)
    return img
