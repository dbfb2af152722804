"""Weight quantization round trips for the quantization attack ("Downgrade to Upgrade": an erasure whose weight
updates are smaller than a quantization bin is undone when the patched model is quantized).

Every function returns the *dequantized* tensor (what a weight-only quantized model computes with) in the input's
dtype, so a round trip is ``w -> quantize_roundtrip(w, fmt)``. The formats:

- ``fp16`` / ``bf16``: a cast down and back;
- ``int8``: symmetric per-output-channel (dim 0) weight-only int8, scale = absmax / 127;
- ``nf4``: 4-bit group-wise quantization on the NormalFloat code book of QLoRA (arXiv 2305.14314): groups of
  ``group_size`` consecutive values, scale = the group's absmax, each value rounded to the nearest of 16 levels.
"""

from __future__ import annotations

import math

import torch

FORMATS = ("fp16", "bf16", "int8", "nf4")
NF4_GROUP = 64  # values per NF4 group (QLoRA's block size)
_MANTISSA = {"fp16": 10, "bf16": 7}
_MIN_EXP = {"fp16": -14, "bf16": -126}


def nf4_levels() -> torch.Tensor:
    """The 16 NormalFloat levels in ``[-1, 1]``, sorted: quantiles of N(0, 1) with an exact zero, normalised so
    the extremes are ±1 (8 positive levels, 7 negative, and 0; arXiv 2305.14314, Appendix E).

    Example:
        >>> levels = nf4_levels()
        >>> float(levels[0]), float(levels[7]), float(levels[-1])
        (-1.0, 0.0, 1.0)
    """
    normal = torch.distributions.Normal(0.0, 1.0)
    offset = 0.5 * ((1 - 1 / 30) + (1 - 1 / 32))  # the two halves' outermost quantile, averaged
    pos = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (levels / levels.abs().max()).float()


def _rows(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)


def int8_roundtrip(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``(dequantized w, per-row scale [rows])``; the bin width is the scale."""
    rows = _rows(w.float())
    scale = rows.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny) / 127
    q = torch.round(rows / scale[:, None]).clamp(-127, 127)
    return (q * scale[:, None]).reshape(w.shape).to(w.dtype), scale


def nf4_roundtrip(w: torch.Tensor, group_size: int = NF4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-wise 4-bit NormalFloat: ``(dequantized w, per-group absmax [groups])``. The last group is padded with
    zeros (which never change a group's absmax)."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    flat = w.float().reshape(-1)
    pad = (-len(flat)) % group_size
    groups = torch.nn.functional.pad(flat, (0, pad)).reshape(-1, group_size)
    absmax = groups.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny)
    levels = nf4_levels().to(flat.device)
    normed = groups / absmax[:, None]
    mids = (levels[1:] + levels[:-1]) / 2  # nearest level = how many midpoints lie below
    codes = torch.bucketize(normed, mids)
    out = (levels[codes] * absmax[:, None]).reshape(-1)[: len(flat)]
    return out.reshape(w.shape).to(w.dtype), absmax


def float_roundtrip(w: torch.Tensor, fmt: str) -> torch.Tensor:
    """A cast to fp16 or bf16 and back."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[fmt]
    return w.to(dtype).to(w.dtype)


def quantize_roundtrip(w: torch.Tensor, fmt: str, group_size: int = NF4_GROUP) -> torch.Tensor:
    """``w`` after quantization to ``fmt`` (one of :data:`FORMATS`) and back, in ``w``'s dtype.

    Example:
        >>> w = torch.randn(8, 16)
        >>> bool(((quantize_roundtrip(w, "int8") - w).abs() <= w.abs().amax(1, keepdim=True) / 254 + 1e-7).all())
        True
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown quantization format {fmt!r}; choose from {', '.join(FORMATS)}.")
    if fmt in _MANTISSA:
        return float_roundtrip(w, fmt)
    if fmt == "int8":
        return int8_roundtrip(w)[0]
    return nf4_roundtrip(w, group_size)[0]


def bin_width(w: torch.Tensor, fmt: str, group_size: int = NF4_GROUP) -> torch.Tensor:
    """The width of the quantization bin each entry of ``w`` falls in (same shape as ``w``, fp32).

    fp16/bf16: the spacing of representable numbers at ``|w|`` (subnormal spacing below the normal range); int8:
    the row's scale; nf4: the distance between the two levels around the entry, times the group's absmax.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown quantization format {fmt!r}; choose from {', '.join(FORMATS)}.")
    x = w.float()
    if fmt in _MANTISSA:
        exponent = torch.floor(torch.log2(x.abs().clamp_min(torch.finfo(torch.float32).tiny)))
        exponent = exponent.clamp_min(_MIN_EXP[fmt])
        return torch.exp2(exponent - _MANTISSA[fmt])
    if fmt == "int8":
        _, scale = int8_roundtrip(x)
        return scale[:, None].expand(_rows(x).shape).reshape(x.shape).clone()
    flat = x.reshape(-1)
    pad = (-len(flat)) % group_size
    groups = torch.nn.functional.pad(flat, (0, pad)).reshape(-1, group_size)
    absmax = groups.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny)
    levels = nf4_levels().to(x.device)
    gaps = levels[1:] - levels[:-1]
    below = (torch.bucketize(groups / absmax[:, None], levels) - 1).clamp(0, len(gaps) - 1)
    return (gaps[below] * absmax[:, None]).reshape(-1)[: len(flat)].reshape(x.shape)


def delta_bin_ratio(base: torch.Tensor, delta: torch.Tensor, fmt: str, group_size: int = NF4_GROUP) -> dict:
    """How a patch's delta compares to the quantization bins of the patched weight ``base + delta``.

    Returns ``median_ratio`` (median over the changed entries of ``|delta| / bin width``), ``below_half_bin`` (the
    fraction of changed entries whose ``|delta|`` is under half a bin, which rounding can erase), ``retained`` (the
    share of the delta that survives quantizing both weights: the projection of ``Q(base + delta) - Q(base)`` on
    ``delta`` over ``|delta|²``: 1 when it survives on average, 0 when quantization undoes it; rounding is unbiased
    over many entries, so look at ``entries_moved`` too: the fraction of changed entries whose quantized value differs
    from the quantized base, i.e. where the patch survives at all) and ``changed``.

    Example:
        >>> w = torch.zeros(4, 64); w[:, 0] = 1.0                      # int8 bin width 1/127 on every row
        >>> round(delta_bin_ratio(w, torch.full((4, 64), 1e-4), "int8")["retained"], 6)
        0.0
    """
    patched = base.float() + delta.float()
    changed = delta.reshape(-1) != 0
    if not bool(changed.any()):
        nan = math.nan
        return {"median_ratio": nan, "below_half_bin": nan, "retained": nan, "entries_moved": nan, "changed": 0}
    ratio = (delta.float().abs() / bin_width(patched, fmt, group_size)).reshape(-1)[changed]
    moved = quantize_roundtrip(patched, fmt, group_size).double() - quantize_roundtrip(base.float(), fmt, group_size)
    d = delta.double()
    return {
        "median_ratio": float(ratio.median()),
        "below_half_bin": float((ratio < 0.5).float().mean()),
        "retained": float((moved * d).sum() / d.square().sum()),
        "entries_moved": float((moved.reshape(-1)[changed] != 0).float().mean()),
        "changed": int(changed.sum()),
    }
