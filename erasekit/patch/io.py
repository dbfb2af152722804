"""Patch files: one ``.safetensors`` file, tensors named ``"<key>::<part>"``, metadata as JSON in the header.

Each delta is stored in the smallest exact encoding for its tensor (see ``encoding.py``), its values rounded to the
storage dtype (fp16 by default). Reading checks the whole file before building a patch: the safetensors framing, the
erasekit header and metadata, every tensor's dtype and shape against its delta's encoding, a SHA-256 of the tensor
bytes, then the values (finite, indices in range and increasing, bitmask counts). Any failure is a one-line
``ValueError`` that names the fix. The format is specified in docs/reference/patch-format.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .. import __version__
from .._io import save_safetensors
from .checks import (
    DAMAGED,
    FORMAT_VERSION,
    HEADER_KEY,
    FormatProblem,
    check_layout,
    check_metadata,
    erasekit_header,
    read_safetensors_header,
)
from .encoding import decode, dtype_name, encode, storage_dtype
from .patch import ErasurePatch

__all__ = ["FORMAT_VERSION", "HEADER_KEY", "load_patch", "read_metadata", "save_patch"]


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors in name order: each name's UTF-8 bytes, then the tensor's raw bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu().reshape(-1)
        h.update(name.encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def save_patch(patch: ErasurePatch, path: str | Path, dtype: str | torch.dtype | None = None) -> Path:
    """Save ``patch`` to ``path`` atomically (a temporary file renamed into place).

    Args:
        patch: the patch to write.
        path: a ``.safetensors`` file name.
        dtype: what delta values are rounded to: ``None`` (float16), ``"float32"`` (exact: the file reads back the
            in-memory values bit for bit), ``"float16"`` or ``"bfloat16"``. Values already narrower are kept as they
            are; a tensor fp16 cannot hold stays float32. Recorded in the header.

    Returns:
        ``path``.

    Raises:
        ValueError: a wrong suffix or dtype, a delta with NaN/Inf or duplicated indices, malformed metadata.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Patch files end in .safetensors; got {path.name!r}.")
    target = storage_dtype(dtype)
    meta = dict(patch.metadata)
    meta.setdefault("erasekit_version", __version__)
    try:
        check_metadata(json.loads(json.dumps(meta, default=str)))
    except FormatProblem as err:
        raise ValueError(f"Cannot save the patch: {err}; fix patch.metadata.") from err
    tensors, layout = {}, {}
    for key, delta in patch.deltas.items():
        if "." not in key or "::" in key:
            raise ValueError(f"Patch keys are '<component>.<parameter>' without '::'; got {key!r}.")
        layout[key], parts = encode(key, delta, target)
        tensors.update({f"{key}::{part}": t for part, t in parts.items()})
    header = {
        "format_version": FORMAT_VERSION,
        "dtype": dtype_name(target),
        "deltas": layout,
        "metadata": meta,
        "sha256": _digest(tensors),
    }
    return save_safetensors(tensors, path, metadata={HEADER_KEY: json.dumps(header, default=str), "format": "pt"})


def _checked_header(path: Path) -> tuple[dict, dict[str, dict]]:
    """The erasekit header and the entries of its deltas, after every check that needs no tensor data."""
    if not path.is_file():
        raise ValueError(f"No patch file at {path}; check the path (`erasekit erase --out FILE` writes one).")
    try:
        st_header = read_safetensors_header(path)
        header = erasekit_header(st_header)
        return header, check_layout(header, st_header)
    except FormatProblem as err:
        raise ValueError(f"Cannot load patch {path}: {err}; {err.fix}.") from err


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for a file that changed under us
        why = " ".join(str(err).split())
        raise ValueError(f"Cannot load patch {path}: safetensors cannot read it ({why}); {DAMAGED}.") from err


def load_patch(path: str | Path, verify: bool = True) -> ErasurePatch:
    """Load a patch written by :meth:`ErasurePatch.save` (any format version up to this erasekit's).

    Args:
        path: the ``.safetensors`` patch file.
        verify: compare the tensor bytes with the SHA-256 in the header (a corrupted file is refused).

    Returns:
        The patch; its delta values keep the dtype they were stored in.

    Raises:
        ValueError: one line naming the fix: the file is missing, truncated, corrupted, malformed, from a newer
            erasekit, or not an erasekit patch. Nothing is built from a file that fails any check.

    Example:
        >>> patch = erasekit.load_patch("vangogh.safetensors")
        >>> patch.metadata["method"], patch.metadata["concept"]
    """
    path = Path(path)
    header, entries = _checked_header(path)
    tensors = _read_tensors(path)
    if verify and header["sha256"] != _digest(tensors):
        raise ValueError(
            f"Cannot load patch {path}: its tensor data does not match the SHA-256 in its header (corrupted); "
            f"{DAMAGED} (verify=False skips this check)."
        )
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        key, part = name.split("::", 1)
        grouped.setdefault(key, {})[part] = t
    deltas = {}
    for key, entry in entries.items():
        parts = grouped.get(key, {})
        try:
            deltas[key] = decode(entry, parts, header["format_version"])
        except ValueError as err:
            raise ValueError(f"Cannot load patch {path}: delta {key!r}: {err}; {DAMAGED}.") from err
    return ErasurePatch(deltas, header["metadata"])


def read_metadata(path: str | Path) -> dict:
    """The header of a patch file (format version, storage dtype, delta layout, metadata) without its tensors.

    The same checks as :func:`load_patch` run, except those that need the tensor data.
    """
    return _checked_header(Path(path))[0]
