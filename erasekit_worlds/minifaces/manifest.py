"""MiniFaces world folders: where the shipped weights live, and checking a folder against its manifest.

A world folder (``erasekit world train minifaces --out DIR``, or the shipped one) holds::

    generator.safetensors               the StyleGAN2 (erasekit format, fp16; ``load_generator`` reads it)
    clip/                               a transformers CLIPModel + CLIPProcessor folder (the world's own CLIP)
    classifier/attributes.safetensors   the attribute classifier
    samples.png                         the first 64 seeds of the generator, for a look
    manifest.json                       sha256 and size of every file, recipe, seed, timings, metrics
"""

from __future__ import annotations

import os
from pathlib import Path

from ..common import verify_world

GENERATOR = "generator.safetensors"
CLASSIFIER = "classifier/attributes.safetensors"
LAYOUT = (GENERATOR, "clip", CLASSIFIER)


def weights_dir() -> Path:
    """The folder of the shipped MiniFaces world (default recipe, seed 0).

    Example:
        >>> handle = erasekit.load_model("minifaces")     # reads weights_dir() / "generator.safetensors"
    """
    return Path(__file__).resolve().parent / "weights"


def verify_manifest(directory: str | os.PathLike) -> list[str]:
    """Problems of a world folder against its manifest (missing, resized, altered or unlisted files, missing parts
    of the layout), one line each; an empty list means it matches."""
    return verify_world(directory, LAYOUT)
