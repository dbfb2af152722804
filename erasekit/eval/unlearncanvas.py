"""The real UnlearnCanvas benchmark (arXiv 2402.11846): its dataset folder layout and classifier checkpoints.

Dataset layout: ``DATA/<Style>/<object>/<idx>.jpg``; the folder ``Seed_Images`` holds the un-stylised photos and is
the style ``"Photo"`` here. Classifiers: timm ``vit_large_patch16_224`` with a new linear head, one for styles and
one for objects, as ``CLASSIFIERS/style.{safetensors,pth}`` and ``CLASSIFIERS/object.{safetensors,pth}``. The head's
class order is ``CLASSIFIERS/labels.json`` (``{"styles": [...], "objects": [...]}``) when present, otherwise the
sorted folder names of the dataset. ``.pth`` files load with ``torch.load(weights_only=True)``, which never runs code.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .clip import clip_loader
from .suite import Suite, register_suite

logger = logging.getLogger(__name__)

SEED_IMAGES = "Seed_Images"
PHOTO = "Photo"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def scan_dataset(data_dir: str | Path) -> dict[tuple[str, str], list[Path]]:
    """``{(style, object): [image paths]}`` of an UnlearnCanvas-layout folder (``Seed_Images`` -> ``Photo``)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"No UnlearnCanvas dataset folder at {data_dir}.")
    out: dict[tuple[str, str], list[Path]] = {}
    for style_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        style = PHOTO if style_dir.name == SEED_IMAGES else style_dir.name
        for obj_dir in sorted(p for p in style_dir.iterdir() if p.is_dir()):
            files = sorted(
                (p for p in obj_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                key=lambda p: (len(p.stem), p.stem),
            )
            if files:
                out[(style, obj_dir.name)] = files
    if not out:
        raise ValueError(f"{data_dir} has no <style>/<object>/<idx>.jpg images.")
    return out


def load_images(paths: list[Path], size: int | None = None) -> torch.Tensor:
    """Images as ``[N, 3, H, W]`` in ``[0, 1]`` (resized to ``size`` if given)."""
    out = []
    for p in paths:
        img = Image.open(p).convert("RGB")
        if size:
            img = img.resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    return torch.stack(out).float() / 255


class TimmClassifier(nn.Module):
    """A timm model applied to ``[0, 1]`` images: resized to its input size and normalised with its mean/std."""

    def __init__(self, model: nn.Module, labels: list[str]):
        super().__init__()
        self.model, self.labels = model.eval(), list(labels)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        embed_size = getattr(getattr(model, "patch_embed", None), "img_size", None)  # honours img_size overrides
        self.input_size = tuple(embed_size or cfg.get("input_size", (3, 224, 224))[1:])
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.5, 0.5, 0.5))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.5, 0.5, 0.5))).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=self.input_size, mode="bicubic", align_corners=False).clamp(0, 1)
        return self.model((x - self.mean) / self.std)


def _read_state_dict(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:
        raise ValueError(
            f"{path} could not be read as a plain state dict ({err}). Convert it to safetensors, or "
            "pass trust_pickle=True (--trust-pickle) if you trust its source."
        ) from err
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_timm_classifier(
    path: str | Path,
    labels: list[str],
    arch: str = "vit_large_patch16_224",
    trust_pickle: bool = False,
    **model_kwargs,
) -> TimmClassifier:
    """A timm classifier with a ``len(labels)``-way head, weights from a checkpoint (no download)."""
    import timm

    path = Path(path)
    model = timm.create_model(arch, pretrained=False, num_classes=len(labels), **model_kwargs)
    state = _read_state_dict(path, trust_pickle)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        missing, unexpected = [str(err).splitlines()[1].strip()], []
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit timm {arch} with {len(labels)} classes: missing/mismatched "
            f"{missing[:3]}, unexpected {unexpected[:3]}. Check --classifier-arch and labels.json."
        )
    return TimmClassifier(model, labels)


def _checkpoint(directory: Path, name: str) -> Path:
    for suffix in (".safetensors", ".pth", ".pt"):
        if (directory / f"{name}{suffix}").is_file():
            return directory / f"{name}{suffix}"
    raise ValueError(f"No {name} classifier in {directory}: expected {name}.safetensors or {name}.pth.")


@register_suite("unlearncanvas")
def unlearncanvas_suite(
    data_dir: str | Path,
    classifiers_dir: str | Path,
    clip_dir: str | Path | None = None,
    arch: str = "vit_large_patch16_224",
    trust_pickle: bool = False,
    image_size: int | None = None,
    **model_kwargs,
) -> Suite:
    """The UnlearnCanvas suite over a dataset folder and its two classifier checkpoints.

    Example:
        >>> suite = unlearncanvas_suite("/data/UnlearnCanvas", "/data/uc_classifiers", clip_dir="/models/clip")
        >>> erasekit.evaluate(pipe, suite, "style:Van_Gogh", patch=patch)
    """
    index = scan_dataset(data_dir)
    classifiers_dir = Path(classifiers_dir)
    styles = sorted({s for s, _ in index})
    objects = sorted({o for _, o in index})
    labels = {"styles": styles, "objects": objects}
    if (classifiers_dir / "labels.json").is_file():
        labels.update(json.loads((classifiers_dir / "labels.json").read_text()))
    style_clf = load_timm_classifier(
        _checkpoint(classifiers_dir, "style"), labels["styles"], arch, trust_pickle, **model_kwargs
    )
    object_clf = load_timm_classifier(
        _checkpoint(classifiers_dir, "object"), labels["objects"], arch, trust_pickle, **model_kwargs
    )

    def reference_images(n: int) -> torch.Tensor:
        pairs = sorted(index)
        paths = [index[pairs[i % len(pairs)]][(i // len(pairs)) % len(index[pairs[i % len(pairs)]])] for i in range(n)]
        return load_images(paths, image_size)

    return Suite(
        name="unlearncanvas",
        styles=styles,
        objects=objects,
        style_classifier=style_clf,
        object_classifier=object_clf,
        clip=clip_loader(clip_dir) if clip_dir else None,
        reference_images=reference_images,
        info={
            "data_dir": str(data_dir),
            "classifiers_dir": str(classifiers_dir),
            "arch": arch,
            "images": sum(len(v) for v in index.values()),
        },
    )
