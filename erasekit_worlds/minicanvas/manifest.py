"""World folders and their manifests: where the shipped MiniCanvas weights live, and checking files against sha256s.

A world folder (``erasekit world train minicanvas --out DIR``, or the shipped one) holds::

    pipeline/                    a StableDiffusionPipeline folder (from_pretrained loads it offline)
    clip/                        a transformers CLIPModel + CLIPProcessor folder
    classifiers/style.safetensors, classifiers/object.safetensors
    manifest.json                sha256 and size of every file, the recipe, seed, exclusions, timings, metrics
"""

from __future__ import annotations

import os
from pathlib import Path

from ..common import MANIFEST, copy_stage, file_table, list_files, read_manifest, sha256_file, verify_world

__all__ = ["MANIFEST", "copy_stage", "file_table", "list_files", "read_manifest", "sha256_file", "verify_manifest"]
LAYOUT = ("pipeline", "clip", "classifiers/style.safetensors", "classifiers/object.safetensors")


def weights_dir() -> Path:
    """The folder of the shipped MiniCanvas world (trained with the default recipe and seed 0).

    Example:
        >>> from erasekit_worlds.minicanvas import weights_dir
        >>> pipe = StableDiffusionPipeline.from_pretrained(weights_dir() / "pipeline")
    """
    return Path(__file__).resolve().parent / "weights"


def verify_manifest(directory: str | os.PathLike, layout: tuple[str, ...] = LAYOUT) -> list[str]:
    """Problems of a MiniCanvas world folder against its manifest, one line each (see :func:`verify_world`); an
    empty list means it matches.

    Example:
        >>> verify_manifest(weights_dir())
        []
    """
    return verify_world(directory, layout)
