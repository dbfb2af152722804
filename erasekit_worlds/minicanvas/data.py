"""MiniCanvas data: names, captions, deterministic rendering, a torch ``Dataset`` and an UnlearnCanvas-style export.

MiniCanvas is an UnlearnCanvas (arXiv 2402.11846) in miniature: every object drawn in every style at 64×64.

Conventions (relied on by the rest of erasekit):

- ``STYLES[0] == "Photo"``, the plain style, playing the role of UnlearnCanvas' ``Seed_Images``. Its captions name
  it like any other style: ``"A apple image in Photo style."``.
- ``style_id`` / ``object_id`` are positions in the global :data:`STYLES` / :data:`OBJECTS`, whatever subset a
  dataset holds, so classifier heads stay aligned across subsets and exclusions.
- Captions write object names in lowercase and style names as listed (``"Pop Art"``); ``{a_object}`` in a template
  is the object with its indefinite article (``"an apple"``). The first letter of a caption is capitalised.
- An image depends on (style, object, index, seed) only. Its *content* (placement, rotation, mirroring, natural
  colours) comes from a generator seeded by (object, index, seed) and its *stylisation* from one seeded by all four,
  so ``render(s, o, i)`` for every style ``s`` is a stylisation of the same scene, as UnlearnCanvas stylises the same
  seed photos. Seeds are derived with BLAKE2b, never Python's salted ``hash()``.
- The ``"train"`` split uses indices ``0 .. per_pair-1``; ``"heldout"`` uses ``HELDOUT_OFFSET + 0 ..``, so the two
  never share an image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import Dataset

from erasekit._io import atomic_path, write_json

from ..common import stable_seed
from .canvas import CANVAS_SIZE, OUT_SIZE, Canvas
from .objects import OBJECT_FNS
from .paint import downsample, to_uint8
from .styles import STYLE_FNS

logger = logging.getLogger(__name__)

STYLES: tuple[str, ...] = tuple(STYLE_FNS)
OBJECTS: tuple[str, ...] = tuple(OBJECT_FNS)
PHOTO = "Photo"
IMAGE_SIZE = OUT_SIZE
HELDOUT_OFFSET = 1_000_000  # first image index of the held-out split; train indices stay below it

UNLEARNCANVAS_TEMPLATE = "A {object} image in {style} style."
TRAIN_TEMPLATES: tuple[str, ...] = (
    UNLEARNCANVAS_TEMPLATE,
    "A picture of {a_object} in {style} style.",
    "{style} style image of {a_object}.",
    "An image of {a_object}, {style} style.",
    "{a_object} rendered in {style} style.",
    "A {style} style picture of {a_object}.",
    "{style} style, {object}.",
)
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "{style} artwork showing {a_object}.",
    "A {object} depicted with a {style} look.",
    "Here is {a_object} made the {style} way.",
    "{a_object}, as done in {style}.",
)
TEMPLATE_SETS = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES}
SPLITS = ("train", "heldout")


# ---------------------------------------------------------------------------------------------------- names


def _lookup(name: str, valid: Sequence[str], kind: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be a string, got {type(name).__name__}")
    key = name.strip().replace("_", " ").lower()
    for v in valid:
        if v.lower() == key:
            return v
    raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")


def resolve_style(name: str) -> str:
    """Return the canonical style name for ``name`` (case-insensitive, ``_`` accepted for spaces).

    Example:
        >>> resolve_style("pop_art")
        'Pop Art'
    """
    return _lookup(name, STYLES, "style")


def resolve_object(name: str) -> str:
    """Return the canonical (lowercase) object name for ``name``, case-insensitively; raise ValueError if unknown."""
    return _lookup(name, OBJECTS, "object")


def style_folder(style: str) -> str:
    """Folder name of a style in the UnlearnCanvas layout: spaces become underscores (``"Pop_Art"``)."""
    return resolve_style(style).replace(" ", "_")


def parse_exclude(exclude: Iterable[str] | str | None) -> tuple[set[str], set[str]]:
    """Parse ``["style:Watercolor", "object:apple"]`` into ``(styles, objects)`` sets of canonical names.

    Raises ValueError naming the valid kinds and names on any typo.
    """
    if exclude is None:
        return set(), set()
    if isinstance(exclude, str):
        exclude = [exclude]
    styles, objects = set(), set()
    for item in exclude:
        kind, sep, name = str(item).partition(":")
        kind = kind.strip().lower()
        if not sep or kind not in ("style", "object"):
            raise ValueError(f"bad exclude entry {item!r}: write 'style:<name>' or 'object:<name>'")
        if kind == "style":
            styles.add(resolve_style(name))
        else:
            objects.add(resolve_object(name))
    return styles, objects


# ---------------------------------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def caption(style: str, obj: str, template: str = UNLEARNCANVAS_TEMPLATE) -> str:
    """Fill a caption template with a style and an object.

    Args:
        style: style name (any case; spaces or underscores).
        obj: object name (any case).
        template: a format string using ``{style}``, ``{object}`` and/or ``{a_object}`` (object with its article).

    Returns:
        The caption, first letter capitalised.

    Example:
        >>> caption("pop art", "Apple")
        'A apple image in Pop Art style.'
    """
    style, obj = resolve_style(style), resolve_object(obj)
    try:
        text = template.format(style=style, object=obj, a_object=_article(obj))
    except (KeyError, IndexError) as err:
        raise ValueError(f"template {template!r} may only use {{style}}, {{object}} and {{a_object}}") from err
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------------- rendering


def _place(rng: np.random.Generator) -> Canvas:
    """A canvas with a random placement: 60-84% of the frame, shifted up to 8%, tilted up to 15°, maybe mirrored."""
    centre = CANVAS_SIZE / 2 + rng.uniform(-0.08, 0.08, 2) * CANVAS_SIZE
    scale = rng.uniform(0.3, 0.42) * CANVAS_SIZE
    return Canvas(CANVAS_SIZE, tuple(centre), scale, angle=rng.uniform(-15, 15), mirror=bool(rng.random() < 0.5))


def render(style: str, obj: str, index: int, seed: int = 0) -> np.ndarray:
    """Render one MiniCanvas image, deterministically from (style, object, index, seed).

    Args:
        style: a name from :data:`STYLES` (case-insensitive).
        obj: a name from :data:`OBJECTS` (case-insensitive).
        index: image number within the (style, object) pair; any non-negative int.
        seed: dataset seed.

    Returns:
        A (64, 64, 3) uint8 RGB array.

    Example:
        >>> render("Watercolor", "apple", 0).shape
        (64, 64, 3)
    """
    style, obj = resolve_style(style), resolve_object(obj)
    if int(index) != index or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    content = np.random.default_rng(stable_seed("content", obj, int(index), int(seed)))
    canvas = _place(content)
    OBJECT_FNS[obj](canvas, content)
    look = np.random.default_rng(stable_seed("style", style, obj, int(index), int(seed)))
    img = STYLE_FNS[style](canvas.labels(), np.asarray(canvas.colours, dtype=np.float32), look)
    if img.shape[0] != OUT_SIZE:
        img = downsample(img, img.shape[0] // OUT_SIZE)
    return to_uint8(img)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """A (64, 64, 3) uint8 image as a (3, 64, 64) float32 tensor in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(127.5).sub(1.0)


# ---------------------------------------------------------------------------------------------------- dataset


class MiniCanvasDataset(Dataset):
    """Every (style, object) pair of MiniCanvas, ``per_pair`` images each, rendered on the fly.

    Args:
        styles: styles to include (default: all of :data:`STYLES`).
        objects: objects to include (default: all of :data:`OBJECTS`).
        per_pair: images per (style, object) pair (UnlearnCanvas has 20).
        seed: dataset seed (images and caption choices follow from it).
        split: ``"train"`` (indices from 0) or ``"heldout"`` (indices from :data:`HELDOUT_OFFSET`), disjoint.
        templates: caption templates, ``"train"`` or ``"heldout"`` (paraphrases never seen in training).
        exclude: entries like ``"style:Watercolor"`` / ``"object:apple"`` to drop, e.g. for the
            retrained-without-the-concept gold standard.
        transform: optional callable applied to the ``pixel_values`` tensor.

    Items are dicts: ``pixel_values`` (3×64×64 float in [-1, 1]), ``caption`` (a template chosen deterministically per
    item), ``style``, ``object``, ``style_id``, ``object_id`` (positions in the global :data:`STYLES` /
    :data:`OBJECTS`) and ``index`` (the image index passed to :func:`render`).

    Example:
        >>> ds = MiniCanvasDataset(objects=["apple", "house"], per_pair=2, exclude=["style:Neon"])
        >>> ds[0]["caption"], ds[0]["pixel_values"].shape
        ('Photo style image of an apple.', torch.Size([3, 64, 64]))
    """

    def __init__(
        self,
        styles: Sequence[str] | None = None,
        objects: Sequence[str] | None = None,
        per_pair: int = 20,
        seed: int = 0,
        split: str = "train",
        templates: str = "train",
        exclude: Iterable[str] | str | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if templates not in TEMPLATE_SETS:
            raise ValueError(f"unknown templates {templates!r}; valid choices: {', '.join(TEMPLATE_SETS)}")
        if not isinstance(per_pair, int) or not 1 <= per_pair <= HELDOUT_OFFSET:
            raise ValueError(f"per_pair must be an int in [1, {HELDOUT_OFFSET}], got {per_pair!r}")
        if isinstance(styles, str) or isinstance(objects, str):
            raise TypeError("styles and objects take lists of names, e.g. styles=['Watercolor']")
        drop_styles, drop_objects = parse_exclude(exclude)
        self.styles = [s for s in _unique(map(resolve_style, styles or STYLES)) if s not in drop_styles]
        self.objects = [o for o in _unique(map(resolve_object, objects or OBJECTS)) if o not in drop_objects]
        if not self.styles or not self.objects:
            raise ValueError("this selection and exclude leave no (style, object) pair")
        self.per_pair, self.seed, self.split, self.transform = per_pair, int(seed), split, transform
        self.templates = TEMPLATE_SETS[templates]
        start = 0 if split == "train" else HELDOUT_OFFSET
        self.indices = range(start, start + per_pair)

    def __len__(self) -> int:
        return len(self.styles) * len(self.objects) * self.per_pair

    def item_key(self, i: int) -> tuple[str, str, int]:
        """The (style, object, image index) of item ``i``."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for a dataset of {len(self)}")
        i %= len(self)
        pair, k = divmod(i, self.per_pair)
        s, o = divmod(pair, len(self.objects))
        return self.styles[s], self.objects[o], self.indices[k]

    def __getitem__(self, i: int) -> dict:
        style, obj, index = self.item_key(i)
        pixels = to_tensor(render(style, obj, index, self.seed))
        if self.transform is not None:
            pixels = self.transform(pixels)
        pick = np.random.default_rng(stable_seed("caption", style, obj, index, self.seed)).integers(
            len(self.templates)
        )
        return {
            "pixel_values": pixels,
            "caption": caption(style, obj, self.templates[int(pick)]),
            "style": style,
            "object": obj,
            "style_id": STYLES.index(style),
            "object_id": OBJECTS.index(obj),
            "index": index,
        }


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------- files


def export_unlearncanvas(
    out_dir: str | os.PathLike,
    per_pair: int = 20,
    seed: int = 0,
    styles: Sequence[str] | None = None,
    objects: Sequence[str] | None = None,
) -> Path:
    """Write MiniCanvas in the UnlearnCanvas folder layout: ``out_dir/<Style_Folder>/<object>/<idx>.png``.

    Style folders replace spaces with underscores (``Pop_Art``; ``Photo`` plays UnlearnCanvas' ``Seed_Images``);
    object folders are the lowercase object names; ``<idx>`` runs over ``0 .. per_pair-1`` and is the ``index`` given
    to :func:`render`. Every file is written atomically, plus ``out_dir/minicanvas.json`` describing the export.

    Returns:
        ``Path(out_dir)``.
    """
    from tqdm.auto import tqdm

    ds = MiniCanvasDataset(styles, objects, per_pair=per_pair, seed=seed)
    out = Path(out_dir)
    pairs = [(s, o) for s in ds.styles for o in ds.objects]
    for style, obj in tqdm(pairs, desc="minicanvas export", unit="pair", disable=None):
        for idx in range(per_pair):
            with atomic_path(out / style_folder(style) / obj / f"{idx}.png") as tmp:
                Image.fromarray(render(style, obj, idx, seed)).save(tmp, format="PNG")
    meta = {"world": "minicanvas", "seed": seed, "per_pair": per_pair, "styles": ds.styles, "objects": ds.objects}
    meta["style_folders"] = {s: style_folder(s) for s in ds.styles}
    meta["caption_template"] = UNLEARNCANVAS_TEMPLATE
    write_json(out / "minicanvas.json", meta)
    logger.info("exported %d MiniCanvas images to %s", len(pairs) * per_pair, out)
    return out


def preview_grid(
    path: str | os.PathLike,
    seed: int = 0,
    index: int = 0,
    zoom: int = 2,
    styles: Sequence[str] | None = None,
    objects: Sequence[str] | None = None,
) -> Path:
    """Save a labelled PNG grid (rows = styles, columns = objects) of image ``index``, ``zoom``-times enlarged."""
    styles = [resolve_style(s) for s in styles or STYLES]
    objects = [resolve_object(o) for o in objects or OBJECTS]
    cell, gap, left, top = IMAGE_SIZE * zoom, 2, 90, 16
    grid = Image.new("RGB", (left + len(objects) * (cell + gap), top + len(styles) * (cell + gap)), (255, 255, 255))
    draw, font = ImageDraw.Draw(grid), ImageFont.load_default()
    for c, obj in enumerate(objects):
        draw.text((left + c * (cell + gap) + 4, 2), obj, fill=(0, 0, 0), font=font)
    for r, style in enumerate(styles):
        y = top + r * (cell + gap)
        draw.text((4, y + cell // 2 - 6), style, fill=(0, 0, 0), font=font)
        for c, obj in enumerate(objects):
            tile = Image.fromarray(render(style, obj, index, seed)).resize((cell, cell), Image.NEAREST)
            grid.paste(tile, (left + c * (cell + gap), y))
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return Path(path)
