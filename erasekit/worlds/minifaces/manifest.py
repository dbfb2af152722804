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

from ..minicanvas.manifest import list_files, read_manifest, sha256_file

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
    root = Path(directory)
    try:
        manifest = read_manifest(root)
    except ValueError as err:
        return [str(err)]
    problems, listed = [], manifest["files"]
    for rel, entry in sorted(listed.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif path.stat().st_size != entry.get("bytes"):
            problems.append(f"size differs: {rel} has {path.stat().st_size} bytes, manifest says {entry.get('bytes')}")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"sha256 differs: {rel} (altered or corrupted)")
    problems += [f"not in manifest: {rel}" for rel in list_files(root) if rel not in listed]
    problems += [f"missing part of the layout: {part}" for part in LAYOUT if not (root / part).exists()]
    return problems
