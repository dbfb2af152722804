"""The MiniFaces suite (registered as ``"minifaces"`` by the plugin): what judges a MiniFaces generator.

Example:
    >>> suite = erasekit.eval.get_suite("minifaces")          # the shipped world
    >>> report = erasekit.eval.evaluate_gan("minifaces", patch, "glasses", suite=suite)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from erasekit.eval.clip import clip_loader
from erasekit.eval.gan import GanSuite

from .classifier import load_attribute_classifier
from .data import HAIR_COLOURS, HELDOUT_OFFSET, HELDOUT_TEMPLATES, INDICATORS, prompt_phrase, render, resolve_indicator
from .manifest import weights_dir


def minifaces_suite(world_dir: str | Path | None = None) -> GanSuite:
    """The MiniFaces suite from a world folder (default: the shipped world): its attribute classifier, its CLIP and
    held-out renders as FID references."""
    world = Path(world_dir) if world_dir else weights_dir()
    path = world / "classifier" / "attributes.safetensors"
    if not path.is_file():
        raise ValueError(
            f"No MiniFaces world at {world} ({path.relative_to(world)} is missing). Train one with "
            "`erasekit world train minifaces --out DIR` and pass that folder."
        )

    def reference(n: int) -> torch.Tensor:
        images = [render(HELDOUT_OFFSET + i, 0)[0] for i in range(n)]
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255

    return GanSuite(
        name="minifaces",
        classifier=load_attribute_classifier(path),
        indicators=list(INDICATORS),
        resolve=resolve_indicator,
        prompts=lambda name: [t.format(prompt_phrase(name)) for t in HELDOUT_TEMPLATES],
        groups={f"hair_{c}": "hair" for c in HAIR_COLOURS},
        clip=clip_loader(world / "clip") if (world / "clip" / "config.json").is_file() else None,
        reference_images=reference,
        info={"world": str(world)},
    )
