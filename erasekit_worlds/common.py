"""What both worlds share at run time: stable seeds, the judge classifiers' conv stage, and world folders checked against
their manifests."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "manifest.json"


def conv_stage(c_in: int, c_out: int):
    """conv3x3-BN-SiLU twice, the first with stride 2: a stage of both worlds' judge classifiers."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.SiLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.SiLU(inplace=True),
    )


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from the ``repr`` of ``parts``, identical across processes and Python versions' hash salts."""
    digest = hashlib.blake2b("\x1f".join(repr(p) for p in parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def list_files(directory: str | os.PathLike) -> list[str]:
    """Every regular file under ``directory`` except the manifest and hidden files, as sorted POSIX paths."""
    root = Path(directory)
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and rel.as_posix() != MANIFEST and not any(p.startswith(".") for p in rel.parts):
            out.append(rel.as_posix())
    return sorted(out)


def file_table(directory: str | os.PathLike) -> dict[str, dict]:
    """``{relative path: {"sha256": ..., "bytes": ...}}`` for every file of a world folder."""
    root = Path(directory)
    return {rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size} for rel in list_files(root)}


def read_manifest(directory: str | os.PathLike) -> dict:
    """The parsed ``manifest.json`` of a world folder; ValueError if it is missing or malformed."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ValueError(f"no {MANIFEST} in {directory}; is it a world folder from `erasekit world train`?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{path} has no 'files' table")
    return manifest


def verify_world(directory: str | os.PathLike, layout: tuple[str, ...] = ()) -> list[str]:
    """Check a world folder against its manifest (``layout``: the parts the world's folder must have).

    Returns:
        Problems found, one line each (missing, resized, altered or unlisted files, missing layout parts); an empty
        list means every file matches its recorded size and sha256.

    Example:
        >>> verify_world(minicanvas.weights_dir(), minicanvas.manifest.LAYOUT)
        []
    """
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
    problems += [f"missing part of the layout: {part}" for part in layout if not (root / part).exists()]
    return problems


def copy_stage(paths, entry: dict, tmp: Path, stages: dict) -> None:
    """Copy a reused stage's files (``paths``, relative to the earlier world folder ``entry["dir"]``) into ``tmp``
    and record its statistics in ``stages``, marked with where and when it was trained (a chain of reuses keeps the
    first world's date)."""
    import shutil

    for rel in paths:
        src, dst = entry["dir"] / rel, tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    for key, stats in entry["stats"].items():
        trained = stats.get("trained_created") or stats.get("reused_created") or entry["created"]
        stages[key] = {
            **stats,
            "reused_from": str(entry["dir"]),
            "reused_created": entry["created"],
            "trained_created": trained,
        }
