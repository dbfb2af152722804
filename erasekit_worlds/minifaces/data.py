"""MiniFaces data: attributes, deterministic rendering, captions, a torch ``Dataset``, image banks and a preview grid.

Conventions (relied on by the rest of erasekit):

- :data:`ATTRIBUTES` lists the attributes in label order: six binary ones (:data:`BINARY_ATTRIBUTES`) and
  ``"hair"``, whose values are :data:`HAIR_COLOURS`. A label vector is ``int64 [7]``: 0/1 for each binary attribute,
  then the hair colour's index.
- *Indicators* (:data:`INDICATORS`) are the yes/no questions the evaluation asks: the six binary attributes plus
  ``hair_black``, ``hair_brown``, ``hair_blond``, ``hair_red``.
- Each attribute is drawn independently of the others, with the probabilities of :data:`PROBABILITIES` (hair colours
  uniform), from a generator seeded by (index, seed); the look of the face (position, shape, skin, colours) from an
  independent one, so :func:`render_with` can redraw the same face with one attribute changed.
- The ``"train"`` split uses indices ``0 ..``; ``"heldout"`` uses ``HELDOUT_OFFSET + 0 ..``; they never overlap.
- Captions describe a random subset of what is present ("with glasses and blond hair") and of what is absent
  ("without a beard"), in templates such as ``"a photo of {}."``; the held-out templates are never trained on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import Dataset

from erasekit._io import atomic_path

from ..common import stable_seed
from .faces import HAIR_RGB, LOOK_UNIFORMS, OUT_SIZE, draw_face, look_from_uniforms, sample_look

IMAGE_SIZE = OUT_SIZE
HAIR_COLOURS: tuple[str, ...] = tuple(HAIR_RGB)
BINARY_ATTRIBUTES: tuple[str, ...] = ("glasses", "smile", "hat", "beard", "earrings", "bangs")
ATTRIBUTES: tuple[str, ...] = (*BINARY_ATTRIBUTES, "hair")
INDICATORS: tuple[str, ...] = (*BINARY_ATTRIBUTES, *(f"hair_{c}" for c in HAIR_COLOURS))
PROBABILITIES = {"glasses": 0.35, "smile": 0.5, "hat": 0.3, "beard": 0.3, "earrings": 0.35, "bangs": 0.4}
ATTRIBUTE_UNIFORMS = len(BINARY_ATTRIBUTES) + 1  # the attributes of a face are a function of this many uniforms
LATENT_UNIFORMS = ATTRIBUTE_UNIFORMS + LOOK_UNIFORMS  # ... and a whole face of this many (attributes, then look)
HELDOUT_OFFSET = 1_000_000  # first index of the held-out split
SPLITS = ("train", "heldout")

PHRASES = {  # (said when present, said when absent)
    "glasses": ("glasses", "without glasses"),
    "smile": ("a smile", "without a smile"),
    "hat": ("a hat", "without a hat"),
    "beard": ("a beard", "without a beard"),
    "earrings": ("earrings", "without earrings"),
    "bangs": ("bangs", "without bangs"),
}
SUBJECTS = ("a face", "a person", "someone")
TRAIN_TEMPLATES: tuple[str, ...] = (
    "{}.",
    "a photo of {}.",
    "a picture of {}.",
    "an image of {}.",
    "a portrait of {}.",
    "a drawing of {}.",
)
HELDOUT_TEMPLATES: tuple[str, ...] = ("a snapshot of {}.", "here is {}.", "a close-up of {}.", "this shows {}.")
TEMPLATE_SETS = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES}
MENTION_PRESENT, MENTION_ABSENT = 0.85, 0.5  # how often a caption names a present / an absent attribute


# ---------------------------------------------------------------------------------------------------- attributes


def sample_attributes(index: int, seed: int = 0) -> dict:
    """The attributes of face ``index`` of dataset ``seed``: each binary one drawn independently, hair uniform."""
    rng = np.random.default_rng(stable_seed("minifaces-attributes", int(index), int(seed)))
    return attributes_from_uniforms(rng.random(ATTRIBUTE_UNIFORMS))


def attributes_from_uniforms(u: np.ndarray, excluded: Sequence[str] = ()) -> dict:
    """The attributes that ``u`` (:data:`ATTRIBUTE_UNIFORMS` numbers in ``[0, 1)``) draws: binary attribute ``i`` is
    present when ``u[i] < PROBABILITIES[a]``, the hair colour is ``u[-1]`` cut into equal parts.

    ``excluded`` indicators (e.g. ``["glasses", "hair_red"]``) are never drawn: an excluded binary attribute is absent
    and the hair colour is cut from the colours left, which is the distribution of the faces
    :meth:`FaceBank.without` keeps (the attributes are independent).
    """
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (ATTRIBUTE_UNIFORMS,) or not ((u >= 0) & (u < 1)).all():
        raise ValueError(f"a face's attributes take {ATTRIBUTE_UNIFORMS} numbers in [0, 1), got {u}")
    unknown = sorted(set(excluded) - set(INDICATORS))
    if unknown:
        raise ValueError(f"unknown indicators {unknown}; use {', '.join(INDICATORS)}")
    hair = [c for c in HAIR_COLOURS if f"hair_{c}" not in excluded]
    if not hair:
        raise ValueError("every hair colour is excluded, which leaves no face; keep at least one")
    attrs = {a: bool(u[i] < PROBABILITIES[a]) and a not in excluded for i, a in enumerate(BINARY_ATTRIBUTES)}
    attrs["hair"] = hair[int(u[-1] * len(hair))]
    return attrs


def check_attributes(attrs: dict) -> dict:
    """Validate an attribute dict (every attribute, binary ones bool, hair a known colour); returns a copy."""
    if not isinstance(attrs, dict) or set(attrs) != set(ATTRIBUTES):
        got = sorted(attrs) if isinstance(attrs, dict) else type(attrs).__name__
        raise ValueError(f"attributes must be a dict with exactly the keys {list(ATTRIBUTES)}, got {got}")
    for a in BINARY_ATTRIBUTES:
        if not isinstance(attrs[a], bool | np.bool_):
            raise ValueError(f"attribute {a!r} must be True or False, got {attrs[a]!r}")
    if attrs["hair"] not in HAIR_COLOURS:
        raise ValueError(f"hair must be one of {HAIR_COLOURS}, got {attrs['hair']!r}")
    return {**{a: bool(attrs[a]) for a in BINARY_ATTRIBUTES}, "hair": attrs["hair"]}


def encode(attrs: dict) -> np.ndarray:
    """An attribute dict as the label vector ``int64 [7]`` (binary flags, then the hair colour index)."""
    attrs = check_attributes(attrs)
    return np.array([int(attrs[a]) for a in BINARY_ATTRIBUTES] + [HAIR_COLOURS.index(attrs["hair"])], np.int64)


def decode(labels: Sequence[int]) -> dict:
    """The inverse of :func:`encode`."""
    labels = [int(v) for v in labels]
    if len(labels) != len(ATTRIBUTES) or not 0 <= labels[-1] < len(HAIR_COLOURS):
        raise ValueError(f"a label vector has {len(ATTRIBUTES)} entries with a hair index < {len(HAIR_COLOURS)}")
    return {**{a: bool(v) for a, v in zip(BINARY_ATTRIBUTES, labels, strict=False)}, "hair": HAIR_COLOURS[labels[-1]]}


def indicators(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean ``[N]`` tensors, one per name of :data:`INDICATORS`, from label vectors ``[N, 7]``."""
    labels = torch.as_tensor(labels)
    out = {a: labels[:, i].bool() for i, a in enumerate(BINARY_ATTRIBUTES)}
    out.update({f"hair_{c}": labels[:, -1] == k for k, c in enumerate(HAIR_COLOURS)})
    return out


def resolve_indicator(text: str) -> str:
    """The indicator a phrase names: ``"glasses"``, ``"a smiling face"`` -> ``"smile"``, ``"blond hair"`` ->
    ``"hair_blond"``. Raises ValueError listing the valid names when nothing matches."""
    words = str(text).lower().replace("_", " ").replace(",", " ").split()
    stems = {"glasses": "glasses", "smile": "smile", "smiling": "smile", "hat": "hat", "beard": "beard"}
    stems.update({"bearded": "beard", "earrings": "earrings", "earring": "earrings", "bangs": "bangs"})
    stems.update({"fringe": "bangs", "sunglasses": "glasses", "spectacles": "glasses"})
    found = {stems[w] for w in words if w in stems}
    found |= {f"hair_{c}" for c in HAIR_COLOURS if c in words and ("hair" in words or "haired" in words)}
    if len(found) != 1:
        why = "names no" if not found else f"names several ({sorted(found)}):"
        raise ValueError(f"{text!r} {why} MiniFaces attribute; use one of {', '.join(INDICATORS)}")
    return found.pop()


def prompt_phrase(name: str) -> str:
    """The description a prompt uses for an indicator: ``"glasses"`` -> ``"a face with glasses"``, ``"hair_red"``
    -> ``"a face with red hair"`` (the zero-shot and CLIP-score prompts put it in templates)."""
    if name in PHRASES:
        return f"a face with {PHRASES[name][0]}"
    if name.startswith("hair_") and name[5:] in HAIR_COLOURS:
        return f"a face with {name[5:]} hair"
    raise ValueError(f"unknown indicator {name!r}; use one of {', '.join(INDICATORS)}")


# ---------------------------------------------------------------------------------------------------- rendering


def _check_index(index) -> int:
    if isinstance(index, bool) or int(index) != index or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    return int(index)


def render_with(attrs: dict, index: int, seed: int = 0) -> np.ndarray:
    """Face ``index``'s look (of dataset ``seed``) drawn with the given attributes; (64, 64, 3) uint8 RGB."""
    look = sample_look(np.random.default_rng(stable_seed("minifaces-look", _check_index(index), int(seed))))
    return draw_face(check_attributes(attrs), look)


def render(index: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Render face ``index`` of dataset ``seed``, deterministically.

    Returns:
        ``(image, attributes)``: a (64, 64, 3) uint8 RGB array and its attribute dict.

    Example:
        >>> image, attrs = render(0)
        >>> image.shape, sorted(attrs)[:2]
        ((64, 64, 3), ['bangs', 'beard'])
    """
    attrs = sample_attributes(_check_index(index), seed)
    return render_with(attrs, index, seed), attrs


def render_uniforms(u: np.ndarray, excluded: Sequence[str] = ()) -> tuple[np.ndarray, dict]:
    """The face that ``u`` (:data:`LATENT_UNIFORMS` numbers in ``[0, 1)``: attributes, then look) describes.

    Faces drawn with ``u`` uniform have the dataset's distribution (:func:`render` draws its ``u`` from seeded
    generators); the generator's render objective draws ``u`` from its own latent (see
    :func:`erasekit_worlds.recipes.minifaces.train_gan.latent_uniforms`). Returns ``(image, attributes)`` as :func:`render`.
    """
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (LATENT_UNIFORMS,):
        raise ValueError(f"a face takes {LATENT_UNIFORMS} numbers in [0, 1), got shape {u.shape}")
    attrs = attributes_from_uniforms(u[:ATTRIBUTE_UNIFORMS], excluded)
    return draw_face(attrs, look_from_uniforms(u[ATTRIBUTE_UNIFORMS:])), attrs


# ---------------------------------------------------------------------------------------------------- captions


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe(attrs: dict, rng: np.random.Generator, subjects: Sequence[str] = SUBJECTS) -> tuple[str, np.ndarray]:
    """A random description of a face and what it claims.

    Returns:
        ``(text, claims)``: e.g. ``"a smiling person with glasses and red hair, without a hat"`` and an ``int64 [7]``
        vector: +1 (claims present) / -1 (claims absent) / 0 (silent) per binary attribute, then the claimed hair
        index or -1.
    """
    attrs = check_attributes(attrs)
    u = rng.random(len(BINARY_ATTRIBUTES) + 4)
    claims = np.zeros(len(ATTRIBUTES), np.int64)
    claims[-1] = -1
    subject = subjects[int(u[-1] * len(subjects))]
    with_, without = [], []
    for i, a in enumerate(BINARY_ATTRIBUTES):
        present = attrs[a]
        if u[i] < (MENTION_PRESENT if present else MENTION_ABSENT):
            claims[i] = 1 if present else -1
            if a == "smile" and present and u[-2] < 0.5:  # "a smiling face" as often as "with a smile"
                subject = subject.replace("a ", "a smiling ", 1) if subject.startswith("a ") else "a smiling face"
            else:
                (with_ if present else without).append(PHRASES[a][0 if present else 1])
    if u[-3] < MENTION_PRESENT:
        with_.append(f"{attrs['hair']} hair")
        claims[-1] = HAIR_COLOURS.index(attrs["hair"])
    with_ = [with_[k] for k in rng.permutation(len(with_))]
    text = subject + (f" with {_join(with_)}" if with_ else "") + (f", {_join(without)}" if without else "")
    return text, claims


def caption(attrs: dict, template: str, rng: np.random.Generator) -> str:
    """A caption: ``template`` (e.g. ``"a photo of {}."``) filled with a random :func:`describe` text."""
    return template.format(describe(attrs, rng)[0])


def consistent(labels: torch.Tensor, claims: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` bool: does caption ``j`` (its claims ``[M, 7]``) hold for face ``i`` (labels ``[N, 7]``)?"""
    binary = labels[:, None, :-1].bool()
    said = claims[None, :, :-1]
    ok = ((said == 0) | ((said == 1) & binary) | ((said == -1) & ~binary)).all(-1)
    hair = claims[None, :, -1]
    return ok & ((hair < 0) | (hair == labels[:, None, -1]))


# ---------------------------------------------------------------------------------------------------- dataset


class MiniFacesDataset(Dataset):
    """``size`` MiniFaces faces of dataset ``seed``, rendered on the fly.

    Items are dicts: ``pixel_values`` (3×64×64 float in [-1, 1]), ``labels`` (int64 [7]), ``attributes`` (dict),
    ``caption`` (deterministic per item, from the chosen template set) and ``index``.

    Example:
        >>> ds = MiniFacesDataset(size=8, split="heldout", templates="heldout")
        >>> ds[0]["caption"]
    """

    def __init__(self, size: int = 10_000, seed: int = 0, split: str = "train", templates: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if templates not in TEMPLATE_SETS:
            raise ValueError(f"unknown templates {templates!r}; valid choices: {', '.join(TEMPLATE_SETS)}")
        if not isinstance(size, int) or not 1 <= size <= HELDOUT_OFFSET:
            raise ValueError(f"size must be an int in [1, {HELDOUT_OFFSET}], got {size!r}")
        self.size, self.seed, self.templates = size, int(seed), TEMPLATE_SETS[templates]
        self.offset = 0 if split == "train" else HELDOUT_OFFSET

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        if not -self.size <= i < self.size:
            raise IndexError(f"item {i} out of range for a dataset of {self.size}")
        index = self.offset + i % self.size
        image, attrs = render(index, self.seed)
        rng = np.random.default_rng(stable_seed("minifaces-caption", index, self.seed))
        template = self.templates[int(rng.integers(len(self.templates)))]
        pixels = torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)
        return {
            "pixel_values": pixels,
            "labels": torch.from_numpy(encode(attrs)),
            "attributes": attrs,
            "caption": caption(attrs, template, rng),
            "index": index,
        }


@dataclass
class FaceBank:
    """Rendered faces ``[N, 3, 64, 64]`` uint8 with their label vectors ``[N, 7]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str) -> FaceBank:
        return FaceBank(self.images.to(device), self.labels.to(device))

    def floats(self, index: torch.Tensor) -> torch.Tensor:
        """Images ``index`` as float ``[B, 3, 64, 64]`` in ``[0, 1]``."""
        return self.images[index].float().div_(255.0)

    def without(self, excluded: Sequence[str]) -> FaceBank:
        """Only the faces for which no indicator in ``excluded`` holds (e.g. ``["glasses", "hair_red"]``)."""
        keep = torch.ones(len(self), dtype=torch.bool, device=self.labels.device)
        flags = indicators(self.labels)
        for name in excluded:
            keep &= ~flags[name]
        return FaceBank(self.images[keep], self.labels[keep])

    def frequencies(self) -> dict[str, float]:
        """Share of faces for which each indicator holds."""
        return {k: round(float(v.float().mean()), 4) for k, v in indicators(self.labels).items()}


def render_bank(size: int, seed: int, split: str, desc: str = "rendering faces") -> FaceBank:
    """Render ``size`` faces of ``split`` into memory (about 12 KB each)."""
    from tqdm.auto import tqdm

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    offset = 0 if split == "train" else HELDOUT_OFFSET
    images = np.empty((size, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    labels = np.empty((size, len(ATTRIBUTES)), dtype=np.int64)
    for i in tqdm(range(size), desc=desc, unit="img", disable=None, mininterval=2.0):
        images[i], attrs = render(offset + i, seed)
        labels[i] = encode(attrs)
    return FaceBank(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels))


SHORT = {"glasses": "G", "smile": "S", "hat": "H", "beard": "Bd", "earrings": "E", "bangs": "Bg"}  # grid tags


def preview_grid(path: str | os.PathLike, seed: int = 0, count: int = 32, columns: int = 8, zoom: int = 2) -> Path:
    """Save a PNG grid of the first ``count`` training faces, each tagged with its attributes (:data:`SHORT`)."""
    if count < 1 or columns < 1 or zoom < 1:
        raise ValueError("count, columns and zoom must be >= 1")
    cell, label = IMAGE_SIZE * zoom, 12
    rows = -(-count // columns)
    grid = Image.new("RGB", (columns * (cell + 2), rows * (cell + label + 2)), (255, 255, 255))
    draw, font = ImageDraw.Draw(grid), ImageFont.load_default()
    for i in range(count):
        image, attrs = render(i, seed)
        r, c = divmod(i, columns)
        x, y = c * (cell + 2), r * (cell + label + 2)
        grid.paste(Image.fromarray(image).resize((cell, cell), Image.NEAREST), (x, y))
        tags = " ".join(SHORT[a] for a in BINARY_ATTRIBUTES if attrs[a]) + " " + attrs["hair"]
        draw.text((x + 2, y + cell), tags, fill=(0, 0, 0), font=font)
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return Path(path)
