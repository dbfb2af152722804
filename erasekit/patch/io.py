"""Patch files: one ``.safetensors`` file, tensors named ``"<key>::<part>"``, metadata as JSON in the header.

The header also carries a SHA-256 of the tensor bytes, so a corrupted (not only a truncated) file is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .. import __version__
from .._io import save_safetensors
from .deltas import delta_from_tensors
from .patch import ErasurePatch

HEADER_KEY = "erasekit_patch"
FORMAT_VERSION = 1


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu().reshape(-1)
        h.update(name.encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_patch(patch: ErasurePatch, path: str | Path) -> Path:
    """Save ``patch`` to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Patch files end in .safetensors; got {path.name!r}.")
    tensors, layout = {}, {}
    for key, delta in patch.deltas.items():
        layout[key] = {"kind": delta.kind, "shape": list(delta.shape)}
        for part, t in delta.tensors().items():
            tensors[f"{key}::{part}"] = t
    meta = dict(patch.metadata)
    meta.setdefault("erasekit_version", __version__)
    header = {"format_version": FORMAT_VERSION, "deltas": layout, "metadata": meta, "sha256": _digest(tensors)}
    return save_safetensors(tensors, path, metadata={HEADER_KEY: json.dumps(header, default=str), "format": "pt"})


def _read(path: Path, with_tensors: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header_text = (f.metadata() or {}).get(HEADER_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except Exception as err:  # safetensors raises its own error types for truncated or garbled files
        raise ValueError(
            f"{path} is not a readable safetensors file (truncated or corrupted?): {err}. Re-create or re-download it."
        ) from err
    if header_text is None:
        raise ValueError(
            f"{path} is a safetensors file but not an erasekit patch (no '{HEADER_KEY}' header). "
            "To use a LoRA file, load it with pipe.load_lora_weights instead."
        )
    try:
        header = json.loads(header_text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} has a malformed erasekit header: {err}.") from err
    return header, tensors


def load_patch(path: str | Path, verify: bool = True) -> ErasurePatch:
    """Load a patch written by :meth:`ErasurePatch.save`.

    Raises:
        ValueError: the file is missing, truncated, corrupted (checksum), or not an erasekit patch.

    Example:
        >>> patch = erasekit.load_patch("vangogh.safetensors")
        >>> patch.metadata["method"], patch.metadata["concept"]
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No patch file at {path}.")
    header, tensors = _read(path)
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer erasekit (format {header['format_version']}); upgrade.")
    if verify and header.get("sha256") != _digest(tensors):
        raise ValueError(f"{path} is corrupted: its tensor data does not match the checksum in its header.")
    deltas, used = {}, set()
    for key, info in header.get("deltas", {}).items():
        parts = {n.split("::", 1)[1]: t for n, t in tensors.items() if n.split("::", 1)[0] == key}
        used |= {f"{key}::{p}" for p in parts}
        try:
            deltas[key] = delta_from_tensors(info["kind"], parts, tuple(info["shape"]))
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path} is malformed at {key!r}: {err}.") from err
    if set(tensors) - used:
        raise ValueError(f"{path} is malformed: tensors {sorted(set(tensors) - used)[:3]} belong to no delta.")
    return ErasurePatch(deltas, header.get("metadata", {}))


def read_metadata(path: str | Path) -> dict:
    """The header of a patch file (layout + metadata) without loading its tensors into a patch."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No patch file at {path}.")
    header, _ = _read(path, with_tensors=False)
    return header
