"""Drawing one MiniFaces face: a cartoon head and shoulders at 128×128, box-filtered down to 64×64.

A face is drawn from two independent parts: its *attributes* (glasses, smile, hat, beard, earrings, bangs, hair
colour) and its *look* (position, size, face shape, skin tone, shades of every colour, hat and glasses style, ...).
:func:`sample_look` always draws the same number of random values, so the look of index ``i`` does not depend on its
attributes: changing one attribute of a face redraws the same person with that one thing changed.

Every attribute is drawn where it stays visible whatever the others are: bangs sit between the hat brim and the
eyebrows, the mouth is drawn on top of a beard (a smile shows teeth), lenses are lighter than any skin so glasses
show on dark skin, hair shows beside the face under a hat, and earrings are drawn last.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128  # drawing resolution
OUT_SIZE = 64  # the resolution MiniFaces hands out (2x2 box filter)

HAIR_RGB = {  # base colours of the hair values; each face shifts them a little
    "black": (28, 24, 26),
    "brown": (105, 62, 32),
    "blond": (226, 192, 104),
    "red": (186, 64, 28),
}
SKIN_LIGHT, SKIN_DARK = np.array([250, 221, 196]), np.array([88, 56, 40])
EYE_RGB = ((70, 45, 25), (60, 110, 170), (70, 120, 70), (30, 30, 30))
FRAME_RGB = ((15, 15, 18), (80, 45, 20), (25, 35, 110), (170, 20, 30), (190, 160, 60))
EARRING_RGB = ((240, 196, 40), (215, 215, 228), (230, 40, 60), (40, 200, 200))
HAT_STYLES = ("cap", "beanie", "fedora")
HAIRLINE = 0.72  # the hairline sits this many face half-heights above the face centre (bangs hang below it)


@dataclass
class Look:
    """Everything about a face that is not an attribute (all in drawing pixels / RGB 0-255)."""

    cx: float
    cy: float
    rx: float
    ry: float
    skin: np.ndarray
    hair_shift: np.ndarray
    long_hair: float  # 0 = short; up to 1 = shoulder length
    background: tuple[np.ndarray, np.ndarray]
    shirt: np.ndarray
    eye: tuple[int, int, int]
    frame: tuple[int, int, int]
    sunglasses: bool
    earring: tuple[int, int, int]
    hat_style: str
    hat: np.ndarray
    bang_teeth: int
    mouth_width: float


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255


LOOK_UNIFORMS = 32  # a look is a function of this many uniforms in [0, 1) (the last two are spare)


def sample_look(rng: np.random.Generator) -> Look:
    """Draw a look; always consumes the same random numbers (so attributes never shift it)."""
    return look_from_uniforms(rng.random(LOOK_UNIFORMS))


def look_from_uniforms(u: np.ndarray) -> Look:
    """The look that ``u`` (:data:`LOOK_UNIFORMS` numbers in ``[0, 1)``) describes: every parameter reads its own slot,
    and most move smoothly with it (the generator's render objective relies on that)."""
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (LOOK_UNIFORMS,) or not ((u >= 0) & (u < 1)).all():
        raise ValueError(f"a look takes {LOOK_UNIFORMS} numbers in [0, 1), got shape {u.shape}")
    scale = 0.88 + 0.2 * u[0]
    rx, ry = 24.0 * scale * (0.86 + 0.22 * u[1]), 30.0 * scale
    skin = SKIN_LIGHT + (SKIN_DARK - SKIN_LIGHT) * u[2] + (u[3:6] - 0.5) * 16
    bg_hue = u[6]
    bg = (
        _hsv(bg_hue, 0.1 + 0.25 * u[7], 0.62 + 0.33 * u[8]),
        _hsv(bg_hue + 0.08 * (u[9] - 0.5), 0.15, 0.5 + 0.4 * u[10]),
    )
    return Look(
        cx=SIZE / 2 + (u[11] - 0.5) * 12,
        cy=SIZE / 2 - 4 + (u[12] - 0.5) * 12,
        rx=rx,
        ry=ry,
        skin=np.clip(skin, 0, 255),
        hair_shift=(u[13:16] - 0.5) * 24,
        long_hair=float(max(0.0, u[16] * 1.6 - 0.6)),
        background=bg,
        shirt=_hsv(u[17], 0.3 + 0.5 * u[18], 0.3 + 0.6 * u[19]),
        eye=EYE_RGB[int(u[20] * len(EYE_RGB))],
        frame=FRAME_RGB[int(u[21] * len(FRAME_RGB))],
        sunglasses=bool(u[22] < 0.2),
        earring=EARRING_RGB[int(u[23] * len(EARRING_RGB))],
        hat_style=HAT_STYLES[int(u[24] * len(HAT_STYLES))],
        hat=_hsv(u[25], 0.45 + 0.5 * u[26], 0.3 + 0.6 * u[27]),
        bang_teeth=5 + int(u[28] * 4),
        mouth_width=0.5 + 0.12 * u[29],
    )


def _rgb(c) -> tuple[int, int, int]:
    return tuple(int(round(float(v))) for v in np.clip(np.asarray(c, dtype=np.float64), 0, 255))


def _box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return [cx - rx, cy - ry, cx + rx, cy + ry]


def _background(look: Look) -> Image.Image:
    top, bottom = look.background
    t = np.linspace(0.0, 1.0, SIZE, dtype=np.float32)[:, None, None]
    rows = top[None, None, :] * (1 - t) + bottom[None, None, :] * t
    return Image.fromarray(np.broadcast_to(rows, (SIZE, SIZE, 3)).round().astype(np.uint8), "RGB")


def _paste_rows(img: Image.Image, shape: Image.Image, colour, y0: float, y1: float) -> None:
    """Fill the part of mask ``shape`` between rows ``y0`` and ``y1`` with ``colour``."""
    mask = np.asarray(shape).copy()
    rows = np.arange(SIZE)
    mask[(rows < y0) | (rows >= y1)] = 0
    img.paste(_rgb(colour), (0, 0), Image.fromarray(mask, "L"))


def _ellipse_mask(cx: float, cy: float, rx: float, ry: float) -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).ellipse(_box(cx, cy, rx, ry), fill=255)
    return mask


def _hair(draw: ImageDraw.ImageDraw, look: Look, hair, cx, cy, rx, ry) -> None:
    """Hair behind the head (visible beside the face, also under a hat)."""
    bottom = cy + 0.35 * ry + look.long_hair * (ry + 12)
    draw.rounded_rectangle([cx - rx - 6, cy - ry - 6, cx + rx + 6, bottom], radius=rx * 0.9, fill=_rgb(hair))


def _face(draw: ImageDraw.ImageDraw, look: Look, cx, cy, rx, ry) -> None:
    ear = _rgb(look.skin * 0.93)
    draw.ellipse(_box(cx, cy + ry + 40, rx * 2.2, 30), fill=_rgb(look.shirt))
    draw.rectangle([cx - 0.42 * rx, cy + 0.5 * ry, cx + 0.42 * rx, cy + ry + 14], fill=_rgb(look.skin * 0.9))
    for side in (-1, 1):
        draw.ellipse(_box(cx + side * rx, cy + 2, 5.5, 8.5), fill=ear)
    draw.ellipse(_box(cx, cy, rx, ry), fill=_rgb(look.skin))


def _hair_cap(img: Image.Image, look: Look, hair, cx, cy, rx, ry) -> None:
    """The hair on top of the head, down to the hairline."""
    _paste_rows(img, _ellipse_mask(cx, cy - 2, rx + 3, ry + 4), hair, 0, cy - HAIRLINE * ry)


def _bangs(draw: ImageDraw.ImageDraw, look: Look, hair, cx, cy, rx, ry) -> None:
    """A fringe across the forehead with a zig-zag lower edge, between the hairline and the eyebrows."""
    top, low, n = cy - (HAIRLINE + 0.05) * ry, cy - 0.34 * ry, look.bang_teeth
    xs = np.linspace(cx - 0.92 * rx, cx + 0.92 * rx, 2 * n + 1)
    edge = [(float(x), low if i % 2 else low - 5) for i, x in enumerate(xs)]
    draw.polygon([(cx - 0.95 * rx, top), *edge, (cx + 0.95 * rx, top)], fill=_rgb(hair))


def _eyes(draw: ImageDraw.ImageDraw, look: Look, hair, cx, cy, rx, ry) -> None:
    brow = _rgb(np.minimum(np.asarray(hair), 150) * 0.7)
    ye = cy - 0.08 * ry
    for side in (-1, 1):
        ex = cx + side * 0.42 * rx
        draw.ellipse(_box(ex, ye, 5.0, 3.6), fill=(250, 250, 250))
        draw.ellipse(_box(ex, ye, 2.7, 2.7), fill=look.eye)
        draw.ellipse(_box(ex, ye, 1.2, 1.2), fill=(10, 10, 10))
        draw.line([(ex - 5, ye - 7), (ex + 5, ye - 7.5 - side * 0.5)], fill=brow, width=2)
    nose = _rgb(look.skin * 0.78)
    draw.line([(cx, ye + 3), (cx - 2.5, cy + 0.3 * ry), (cx + 1.5, cy + 0.32 * ry)], fill=nose, width=2)


def _beard(img: Image.Image, look: Look, hair, cx, cy, rx, ry) -> None:
    """Jaw, chin, moustache and sideburns, in a slightly darker shade of the hair."""
    shape = _ellipse_mask(cx, cy + 2, rx + 1.5, ry + 3)
    mask = np.asarray(shape).copy()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    keep = (yy > cy + 0.22 * ry) | ((np.abs(xx - cx) > 0.72 * rx) & (yy > cy - 0.15 * ry))
    mask[~keep] = 0
    img.paste(_rgb(np.asarray(hair) * 0.85), (0, 0), Image.fromarray(mask, "L"))


def _mouth(draw: ImageDraw.ImageDraw, look: Look, smile: bool, cx, cy, rx, ry) -> None:
    ym = cy + 0.5 * ry
    if smile:  # an open smile: a dark half-ellipse with a row of teeth, which reads on any skin or beard
        w = (look.mouth_width + 0.22) * rx
        draw.chord([cx - w, ym - 6, cx + w, ym + 7], 0, 180, fill=(110, 25, 35))
        draw.chord([cx - w + 2, ym - 5, cx + w - 2, ym + 3], 0, 180, fill=(248, 248, 248))
    else:
        w = look.mouth_width * rx * 0.8
        draw.line([(cx - w, ym), (cx + w, ym)], fill=(150, 60, 62), width=3)


def _glasses(img: Image.Image, look: Look, cx, cy, rx, ry) -> None:
    """Two lenses lighter (or, for sunglasses, darker) than the skin, framed, with a bridge and arms."""
    ye, draw = cy - 0.08 * ry, ImageDraw.Draw(img)
    lens = (40, 40, 50) if look.sunglasses else _rgb(look.skin * 0.45 + np.array([225, 240, 255]) * 0.55)
    for side in (-1, 1):
        ex = cx + side * 0.42 * rx
        draw.rounded_rectangle(_box(ex, ye, 9, 7), radius=3, fill=lens, outline=look.frame, width=4)
        draw.line([(ex + side * 9, ye - 2), (cx + side * (rx + 1), ye)], fill=look.frame, width=3)
    draw.line([(cx - 0.42 * rx + 9, ye - 1), (cx + 0.42 * rx - 9, ye - 1)], fill=look.frame, width=3)


def _hat(draw: ImageDraw.ImageDraw, look: Look, cx, cy, rx, ry) -> None:
    """A hat whose brim sits at the hairline, above the bangs."""
    brim, colour, dark = cy - (HAIRLINE + 0.04) * ry, _rgb(look.hat), _rgb(look.hat * 0.65)
    if look.hat_style == "cap":
        top = cy - ry - 12
        draw.chord([cx - rx - 3, top, cx + rx + 3, 2 * brim - top], 180, 360, fill=colour)  # dome down to the brim
        draw.rectangle([cx - rx - 3, brim - 3, cx + rx + 14, brim + 1], fill=dark)
    elif look.hat_style == "beanie":
        draw.rounded_rectangle([cx - rx - 3, cy - ry - 14, cx + rx + 3, brim + 1], radius=rx * 0.8, fill=colour)
        draw.rectangle([cx - rx - 3, brim - 6, cx + rx + 3, brim + 1], fill=dark)
    else:
        draw.rectangle([cx - 0.75 * rx, cy - ry - 20, cx + 0.75 * rx, brim], fill=colour)
        draw.rectangle([cx - 0.75 * rx, brim - 7, cx + 0.75 * rx, brim - 3], fill=dark)
        draw.ellipse([cx - rx - 12, brim - 4, cx + rx + 12, brim + 3], fill=colour)


def _earrings(draw: ImageDraw.ImageDraw, look: Look, cx, cy, rx, ry) -> None:
    for side in (-1, 1):
        ex, ey = cx + side * (rx + 1), cy + 0.4 * ry
        draw.line([(ex, ey - 6), (ex, ey)], fill=look.earring, width=3)
        draw.ellipse(_box(ex, ey + 2, 4.5, 4.5), fill=look.earring)


def draw_face(attributes: dict, look: Look) -> np.ndarray:
    """Draw a face with ``attributes`` (see :data:`erasekit_worlds.minifaces.ATTRIBUTES`) and ``look``.

    Returns:
        A (64, 64, 3) uint8 RGB array.
    """
    cx, cy, rx, ry = look.cx, look.cy, look.rx, look.ry
    hair = np.clip(np.asarray(HAIR_RGB[attributes["hair"]], dtype=np.float64) + look.hair_shift, 0, 255)
    img = _background(look)
    draw = ImageDraw.Draw(img)
    _hair(draw, look, hair, cx, cy, rx, ry)
    _face(draw, look, cx, cy, rx, ry)
    _hair_cap(img, look, hair, cx, cy, rx, ry)
    if attributes["bangs"]:
        _bangs(draw, look, hair, cx, cy, rx, ry)
    if attributes["beard"]:
        _beard(img, look, hair, cx, cy, rx, ry)
    _eyes(draw, look, hair, cx, cy, rx, ry)
    _mouth(draw, look, attributes["smile"], cx, cy, rx, ry)
    if attributes["glasses"]:
        _glasses(img, look, cx, cy, rx, ry)
    if attributes["hat"]:
        _hat(draw, look, cx, cy, rx, ry)
    if attributes["earrings"]:
        _earrings(draw, look, cx, cy, rx, ry)
    return np.array(img.resize((OUT_SIZE, OUT_SIZE), Image.BOX))  # a writable copy
