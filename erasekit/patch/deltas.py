"""The three shapes a parameter change can take: dense, sparse (flat indices + values) and low-rank (up @ down).

Each delta knows its parameter's shape, how to add itself (scaled) to a tensor, and the tensors it holds. Values keep
the dtype they were made or loaded in (a loaded patch holds the file's fp16 values); arithmetic is done in float32
and cast back to the parameter's dtype. How deltas are laid out in a file is ``encoding.py``'s business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class DenseDelta:
    """A full-size change ``values`` (same shape as the parameter)."""

    values: torch.Tensor
    kind = "dense"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def to_dense(self) -> torch.Tensor:
        return self.values.float()

    def scaled(self, s: float) -> DenseDelta:
        return DenseDelta(_times(self.values, s))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"dense": self.values}

    def touched(self) -> torch.Tensor | None:
        """Flat indices this delta changes; ``None`` means the whole tensor."""
        return None


@dataclass
class SparseDelta:
    """A change to a few entries: ``indices`` into the flattened parameter and their ``values``."""

    indices: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, ...]
    kind = "sparse"

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        if self.indices.ndim != 1 or self.indices.shape != self.values.shape:
            raise ValueError("A sparse delta needs 1-D indices and values of equal length.")
        numel = math.prod(self.shape)
        if self.indices.numel() and (int(self.indices.min()) < 0 or int(self.indices.max()) >= numel):
            raise ValueError(f"Sparse delta indices fall outside a parameter of shape {self.shape}.")

    def to_dense(self) -> torch.Tensor:
        out = torch.zeros(math.prod(self.shape), dtype=torch.float32, device=self.values.device)
        out[self.indices] = self.values.float()
        return out.view(self.shape)

    def scaled(self, s: float) -> SparseDelta:
        return SparseDelta(self.indices, _times(self.values, s), self.shape)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"indices": self.indices, "values": self.values}

    def touched(self) -> torch.Tensor | None:
        return self.indices

    @classmethod
    def from_dense(cls, delta: torch.Tensor, mask: torch.Tensor | None = None) -> SparseDelta:
        """Keep the nonzero entries of ``delta`` (restricted to ``mask`` if given)."""
        flat = delta.reshape(-1)
        keep = flat != 0 if mask is None else mask.reshape(-1).bool() & (flat != 0)
        idx = keep.nonzero().squeeze(1)
        return cls(idx, flat[idx].clone(), tuple(delta.shape))


@dataclass
class LowRankDelta:
    """A change ``up @ down`` reshaped to the parameter's shape (``up``: ``[out, r]``, ``down``: ``[r, in]``)."""

    up: torch.Tensor
    down: torch.Tensor
    shape: tuple[int, ...]
    kind = "lowrank"

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        if self.up.ndim != 2 or self.down.ndim != 2 or self.up.shape[1] != self.down.shape[0]:
            raise ValueError("A low-rank delta needs up [out, r] and down [r, in] with matching r.")
        if self.up.shape[0] * self.down.shape[1] != math.prod(self.shape):
            raise ValueError(f"up @ down has {self.up.shape[0] * self.down.shape[1]} entries, not {self.shape}.")

    @property
    def rank(self) -> int:
        return int(self.up.shape[1])

    def to_dense(self) -> torch.Tensor:
        return (self.up.float() @ self.down.float()).view(self.shape)

    def scaled(self, s: float) -> LowRankDelta:
        return LowRankDelta(_times(self.up, s), self.down, self.shape)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"up": self.up, "down": self.down}

    def touched(self) -> torch.Tensor | None:
        return None


Delta = DenseDelta | SparseDelta | LowRankDelta


def _times(values: torch.Tensor, s: float) -> torch.Tensor:
    """``values * s`` in at least float32, so that scaling a loaded fp16 patch and applying it at ``scale=s`` agree."""
    return values.to(torch.promote_types(values.dtype, torch.float32)) * s


def delta_from_tensors(kind: str, tensors: dict[str, torch.Tensor], shape: tuple[int, ...]) -> Delta:
    """Rebuild a delta from the tensors ``delta.tensors()`` returns."""
    if kind == "dense":
        if tuple(tensors["dense"].shape) != tuple(shape):
            raise ValueError(f"dense delta has shape {tuple(tensors['dense'].shape)}, expected {tuple(shape)}")
        return DenseDelta(tensors["dense"])
    if kind == "sparse":
        return SparseDelta(tensors["indices"].long(), tensors["values"], shape)
    if kind == "lowrank":
        return LowRankDelta(tensors["up"], tensors["down"], shape)
    raise ValueError(f"unknown delta kind {kind!r}")


def add_deltas(a: Delta, b: Delta) -> Delta:
    """The sum of two deltas of the same parameter (sparse + sparse stays sparse, anything else becomes dense)."""
    if a.shape != b.shape:
        raise ValueError(f"Cannot add deltas of shapes {a.shape} and {b.shape}.")
    if isinstance(a, SparseDelta) and isinstance(b, SparseDelta):
        dense = a.to_dense() + b.to_dense()
        touched = torch.zeros(dense.numel(), dtype=torch.bool, device=dense.device)
        touched[a.indices] = True
        touched[b.indices] = True
        return SparseDelta.from_dense(dense, touched)
    return DenseDelta(a.to_dense() + b.to_dense())


def apply_delta(param: torch.Tensor, delta: Delta, scale: float, current: torch.Tensor | None = None) -> torch.Tensor:
    """The new values of the entries ``delta`` touches (flat, for sparse deltas; full tensor otherwise).

    ``current``: the touched entries' present values when the caller already holds them (flat for a sparse delta,
    the whole tensor otherwise), so they are not read twice; the result is the same.
    """
    if isinstance(delta, SparseDelta):
        if current is None:
            current = param.detach().reshape(-1).index_select(0, delta.indices.to(param.device))
        values = delta.values.to(current.device).float()
        values = values if scale == 1.0 else scale * values  # x * 1.0 is x: skipping it changes no bit
        return (current.float() + values).to(param.dtype)
    current = param.detach() if current is None else current
    return (current.float() + scale * delta.to_dense().to(current.device)).to(param.dtype)


def all_finite(values: torch.Tensor) -> bool:
    """Whether every entry is finite. A NaN or an infinity makes the sum non-finite, so a finite sum settles it in
    one cheap pass (summed in at least float32, so half-precision weights do not overflow it); only a sum that
    overflows needs the entry-by-entry check."""
    total = values.sum(dtype=torch.promote_types(values.dtype, torch.float32))
    return bool(torch.isfinite(total)) or bool(torch.isfinite(values).all())
