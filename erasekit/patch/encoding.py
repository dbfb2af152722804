"""How one delta is laid out in a patch file, and the checks that read it back.

A delta's *kind* (dense, sparse, low-rank) says which entries of its parameter it touches; its *encoding* says how
its numbers are stored. The writer picks, per tensor, the encoding with the fewest bytes:

- ``dense``: every entry (``<key>::dense``, the parameter's shape);
- ``indices``: the flat indices of the stored entries, strictly increasing, in the narrowest integer type that can
  hold them (``<key>::indices``), and their values (``<key>::values``);
- ``bitmask``: one bit per entry of the parameter, least significant bit first (``<key>::bitmask``, uint8), and the
  values of the set bits in index order (``<key>::values``);
- ``lowrank``: ``<key>::up`` and ``<key>::down``.

Every encoding reads back exactly the values it was given in the storage dtype (see :func:`storage_dtype`). The one
deliberate widening: a sparse delta that touches so much of its tensor that storing every entry is smaller comes back
touching every entry, with +0 on the ones it did not touch. docs/reference/patch-format.md is the full specification.
"""

from __future__ import annotations

import logging
import math

import torch

from .deltas import Delta, DenseDelta, LowRankDelta, SparseDelta

logger = logging.getLogger(__name__)

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
# fp16 is what the shipped worlds and Stable Diffusion checkpoints are served in; see the patch-format reference
DEFAULT_DTYPE = torch.float16
INDEX_DTYPES = (torch.uint8, torch.int16, torch.int32, torch.int64)
# the tensors each encoding stores, as "<key>::<part>"
PARTS = {
    "dense": ("dense",),
    "indices": ("indices", "values"),
    "bitmask": ("bitmask", "values"),
    "lowrank": ("up", "down"),
}
# the encodings each kind may use, in the order that breaks ties of size
KIND_ENCODINGS = {
    "dense": ("dense", "indices", "bitmask"),
    "sparse": ("indices", "bitmask", "dense"),
    "lowrank": ("lowrank",),
}
_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def storage_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """The dtype delta values are rounded to when saved: ``None`` (fp16), ``"float32"``, ``"float16"``,
    ``"bfloat16"`` (or ``"fp32"``, ``"fp16"``, ``"bf16"``, or the torch dtypes)."""
    if dtype is None:
        return DEFAULT_DTYPE
    if isinstance(dtype, torch.dtype) and dtype in STORAGE_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and _ALIASES.get(dtype, dtype) in STORAGE_DTYPES:
        return STORAGE_DTYPES[_ALIASES.get(dtype, dtype)]
    raise ValueError(f"Patch values are stored as float32, float16 or bfloat16; got dtype={dtype!r}.")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def index_dtype(numel: int) -> torch.dtype:
    """The narrowest integer type that holds every flat index of a tensor with ``numel`` entries."""
    return next(d for d in INDEX_DTYPES if numel - 1 <= torch.iinfo(d).max)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` (bool, any shape) as bytes, one bit per entry, least significant bit first, padding bits zero."""
    flat = mask.reshape(-1).to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)])
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_bits(bits: torch.Tensor, numel: int) -> torch.Tensor:
    """The inverse of :func:`pack_bits`: a flat bool tensor of ``numel`` entries."""
    return (bits.reshape(-1, 1) & _BIT_WEIGHTS).ne(0).reshape(-1)[:numel]


def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


def _sizes(numel: int, count: int, value_size: int) -> dict[str, int]:
    return {
        "dense": numel * value_size,
        "indices": count * (index_dtype(numel).itemsize + value_size),
        "bitmask": -(-numel // 8) + count * value_size,
    }


def choose_encoding(kind: str, numel: int, count: int, value_size: int) -> tuple[str, int]:
    """The smallest encoding ``kind`` may use for ``count`` stored values out of ``numel``, and its byte count."""
    sizes = _sizes(numel, count, value_size)
    best = min(KIND_ENCODINGS[kind], key=lambda e: (sizes[e], KIND_ENCODINGS[kind].index(e)))
    return best, sizes[best]


# ---- writing --------------------------------------------------------------------------------------------------------
def _stored_dtype(values: torch.Tensor, target: torch.dtype) -> torch.dtype:
    """Values wider than ``target`` are rounded to it; narrower or equally wide ones are kept as they are (widening
    gains nothing and fp16 <-> bf16 can lose bits either way)."""
    if not values.is_floating_point():
        raise ValueError(f"Delta values must be floating point, not {values.dtype}.")
    return target if values.dtype.itemsize > target.itemsize else values.dtype


def _rounded(key: str, tensors: list[torch.Tensor], target: torch.dtype) -> tuple[list[torch.Tensor], torch.dtype]:
    """``tensors`` in their storage dtype; a tensor fp16 cannot hold (|value| > 65504) stays float32."""
    if len({t.dtype for t in tensors}) > 1:  # low-rank factors of two dtypes: promotion is exact
        common = tensors[0].dtype
        for t in tensors[1:]:
            common = torch.promote_types(common, t.dtype)
        tensors = [t.to(common) for t in tensors]
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise ValueError(f"The delta of {key} contains NaN or Inf; refusing to save it (fix the erasure first).")
    stored = _stored_dtype(tensors[0], target)
    out = [t.detach().to(stored).cpu() for t in tensors]
    if not all(bool(torch.isfinite(t).all()) for t in out):
        logger.warning("%s: values beyond the range of %s are kept in float32.", key, dtype_name(stored))
        stored = _stored_dtype(tensors[0], torch.float32)
        out = [t.detach().to(stored).cpu() for t in tensors]
        if not all(bool(torch.isfinite(t).all()) for t in out):
            raise ValueError(f"The delta of {key} overflows float32; refusing to save it (fix the erasure first).")
    return out, stored


def _nonzero_bits(values: torch.Tensor) -> torch.Tensor:
    """Entries whose bits are not all zero (-0.0 counts as a value; +0.0 does not)."""
    return values.reshape(-1).view(_SAME_SIZE_INT[values.element_size()]) != 0


def _sorted_sparse(key: str, delta: SparseDelta) -> tuple[torch.Tensor, torch.Tensor]:
    idx, vals = delta.indices.reshape(-1).long().cpu(), delta.values.reshape(-1)
    if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
        idx, order = torch.sort(idx, stable=True)
        vals = vals[order.to(vals.device)]
        if bool((idx[1:] == idx[:-1]).any()):
            raise ValueError(f"The sparse delta of {key} lists an index twice; sum the duplicates first.")
    return idx, vals


def encode(key: str, delta: Delta, dtype: torch.dtype) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(header entry, {part: tensor})`` for one delta, in the smallest encoding its kind allows."""
    shape, numel = list(delta.shape), _numel(delta.shape)
    if isinstance(delta, LowRankDelta):
        (up, down), stored = _rounded(key, [delta.up, delta.down], dtype)
        entry = {"kind": "lowrank", "shape": shape, "encoding": "lowrank", "dtype": dtype_name(stored)}
        return entry, {"up": up.contiguous(), "down": down.contiguous()}
    if isinstance(delta, SparseDelta):
        idx, vals = _sorted_sparse(key, delta)
        (values,), stored = _rounded(key, [vals], dtype)
    elif isinstance(delta, DenseDelta):
        (dense,), stored = _rounded(key, [delta.values], dtype)
        keep = _nonzero_bits(dense)
        idx, values = keep.nonzero().squeeze(1), dense.reshape(-1)[keep]
    else:
        raise TypeError(f"{key}: cannot save a delta of type {type(delta).__name__}.")
    encoding, _ = choose_encoding(delta.kind, numel, idx.numel(), stored.itemsize)
    entry = {"kind": delta.kind, "shape": shape, "encoding": encoding, "dtype": dtype_name(stored)}
    if encoding == "dense":
        full = dense if isinstance(delta, DenseDelta) else values.new_zeros(numel).index_put_((idx,), values)
        return entry, {"dense": full.reshape(shape).contiguous()}
    entry["count"] = int(idx.numel())
    if encoding == "indices":
        return entry, {"indices": idx.to(index_dtype(numel)), "values": values.contiguous()}
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[idx] = True
    return entry, {"bitmask": pack_bits(mask), "values": values.contiguous()}


def encoded_nbytes(delta: Delta, dtype: torch.dtype) -> int:
    """The bytes of tensor data :func:`encode` writes for ``delta`` (values that overflow fp16 aside)."""
    if isinstance(delta, LowRankDelta):
        size = max(_stored_dtype(delta.up, dtype).itemsize, _stored_dtype(delta.down, dtype).itemsize)
        return (delta.up.numel() + delta.down.numel()) * size
    size = _stored_dtype(delta.values, dtype).itemsize
    if isinstance(delta, SparseDelta):
        count = int(delta.indices.numel())  # duplicates are refused when saving
    else:
        count = int(_nonzero_bits(delta.values.to(_stored_dtype(delta.values, dtype))).sum())
    return choose_encoding(delta.kind, _numel(delta.shape), count, size)[1]


# ---- reading ----------------------------------------------------------------------------------------------------------
def _finite(part: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{part} holds {bad} NaN/Inf value{'s' * (bad != 1)}")


def _check_indices(idx: torch.Tensor, numel: int) -> torch.Tensor:
    """Flat int64 indices, in range and strictly increasing."""
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
        raise ValueError(f"an index lies outside the parameter's {numel} entries")
    if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
        raise ValueError("indices must be strictly increasing (an index is repeated or out of order)")
    return idx


def _check_bitmask(bits: torch.Tensor, numel: int, count: int) -> torch.Tensor:
    mask = unpack_bits(bits, bits.numel() * 8)
    if bool(mask[numel:].any()):
        raise ValueError("padding bits after the last entry of the bitmask are set")
    ones = int(mask.sum())
    if ones != count:
        raise ValueError(f"the bitmask has {ones} bits set but {count} values are stored")
    return mask[:numel].nonzero().squeeze(1)


def decode(entry: dict, tensors: dict[str, torch.Tensor], version: int = 2) -> Delta:
    """Rebuild a delta from a (checked) header entry and its tensors; checks the values themselves.

    Raises:
        ValueError: NaN/Inf values, indices out of range or out of order, a bitmask that disagrees with the values.
    """
    kind, encoding, shape = entry["kind"], entry["encoding"], tuple(entry["shape"])
    numel = _numel(shape)
    for part in PARTS[encoding]:
        if part not in ("indices", "bitmask"):
            _finite(part, tensors[part])
    if encoding == "lowrank":
        return LowRankDelta(tensors["up"], tensors["down"], shape)
    if encoding == "dense":
        dense = tensors["dense"].reshape(shape)
        if kind == "dense":
            return DenseDelta(dense)
        return SparseDelta(torch.arange(numel), dense.reshape(-1), shape)
    values = tensors["values"]
    if encoding == "indices":
        idx = tensors["indices"].long()
        if version == 1:  # format 1 wrote a sparse delta's entries in the order it held them
            order = torch.argsort(idx, stable=True)
            idx, values = idx[order], values[order]
        idx = _check_indices(idx, numel)
    else:
        idx = _check_bitmask(tensors["bitmask"], numel, values.numel())
    if kind == "sparse":
        return SparseDelta(idx, values, shape)
    return DenseDelta(values.new_zeros(numel).index_put_((idx,), values).reshape(shape))
