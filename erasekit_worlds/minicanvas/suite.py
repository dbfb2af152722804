"""The MiniCanvas suite (registered as ``"minicanvas"`` by the plugin): the shipped (or a freshly trained) MiniCanvas world as an UnlearnCanvas benchmark.

A world folder (``erasekit world train minicanvas --out DIR``, or the shipped one) holds ``pipeline/``, ``clip/``
and ``classifiers/{style,object}.safetensors``. Reference images for FID are rendered held-out dataset images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from erasekit.eval.clip import clip_loader
from erasekit.eval.suite import Suite

from .classifier import load_classifier
from .data import HELDOUT_OFFSET, HELDOUT_TEMPLATES, OBJECTS, STYLES, UNLEARNCANVAS_TEMPLATE, caption, render
from .manifest import weights_dir

REFERENCE_SEED = 0  # dataset seed of the rendered reference images


def _reference_images(n: int) -> torch.Tensor:
    """``n`` held-out MiniCanvas images spread evenly over every (style, object) pair, in ``[0, 1]``."""
    pairs = [(s, o) for s in STYLES for o in OBJECTS]
    images = [render(*pairs[i % len(pairs)], HELDOUT_OFFSET + i // len(pairs), REFERENCE_SEED) for i in range(n)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def minicanvas_suite(world_dir: str | Path | None = None) -> Suite:
    """The MiniCanvas suite from a world folder (default: the shipped world).

    Example:
        >>> suite = minicanvas_suite("worlds/minicanvas_without_ink")
        >>> erasekit.evaluate(pipe, suite, "style:Ink")
    """
    world = Path(world_dir) if world_dir else weights_dir()
    classifiers = world / "classifiers"
    if not (classifiers / "style.safetensors").is_file() or not (classifiers / "object.safetensors").is_file():
        raise ValueError(
            f"No MiniCanvas world at {world} (classifiers/style.safetensors and object.safetensors are missing). "
            "Train one with `erasekit world train minicanvas --out DIR` and pass --world DIR."
        )
    return Suite(
        name="minicanvas",
        styles=list(STYLES),
        objects=list(OBJECTS),
        style_classifier=load_classifier(classifiers / "style.safetensors"),
        object_classifier=load_classifier(classifiers / "object.safetensors"),
        template=UNLEARNCANVAS_TEMPLATE,
        heldout_templates=list(HELDOUT_TEMPLATES),
        caption_fn=caption,
        clip=clip_loader(world / "clip") if (world / "clip" / "config.json").is_file() else None,
        reference_images=_reference_images,
        info={"world": str(world)},
    )
