"""``quantize``: the patched weights round-tripped through fp16, bf16, int8 and 4-bit quantization.

"Downgrade to Upgrade" (and the LLM unlearning results it follows) shows that quantizing an unlearned model can
restore what was removed: when the weight updates are smaller than a quantization bin, rounding sends the patched
weight and the base weight to the same value. This attack quantizes every weight of the components the patch touches
(fp16/bf16: every floating tensor; int8 per output channel and NF4-like 4-bit groups: weight matrices and convolution
kernels, as weight-only quantizers do), measures the concept rate after each format, and reports per tensor how the
patch's |delta| compares to the bin width of its format and how much of the delta survives rounding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ..methods.config import option
from ..ops.quantize import FORMATS, NF4_GROUP, delta_bin_ratio, quantize_roundtrip
from .base import Attack, AttackConfig, AttackContext, register_attack, weights

logger = logging.getLogger(__name__)


@dataclass
class QuantizeConfig(AttackConfig):
    formats: list = option(list(FORMATS), "formats to round-trip through: fp16, bf16, int8 (per channel), nf4")
    group_size: int = option(NF4_GROUP, "values per 4-bit group (QLoRA uses 64)")

    def __post_init__(self):
        super().__post_init__()
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ValueError(f"quantize formats must be a non-empty list of {', '.join(FORMATS)}; got {self.formats}.")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}.")


def quantizable(name: str, tensor: torch.Tensor, fmt: str) -> bool:
    """Whether a weight-only quantizer of ``fmt`` touches this tensor (int8/nf4: matrices and kernels only)."""
    if not tensor.is_floating_point():
        return False
    return fmt in ("fp16", "bf16") or tensor.ndim >= 2


def quantized_values(handle, components: list[str], fmt: str, group_size: int) -> dict[str, torch.Tensor]:
    """The quantized-then-dequantized values of every quantizable tensor of ``components``."""
    out = {}
    for key, p in handle.named_parameters().items():
        if key.split(".", 1)[0] in components and quantizable(key, p, fmt):
            out[key] = quantize_roundtrip(p.detach().float(), fmt, group_size)
    return out


@register_attack("quantize")
class Quantize(Attack):
    """Concept rate after weight quantization, and the patch's |delta| relative to the bin width per tensor."""

    config_class = QuantizeConfig
    kinds = ("diffusion", "stylegan")
    summary = "round-trip the patched weights through fp16/bf16/int8/4-bit; concept rate after each"

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        cfg = self.config
        components = ctx.patch.components
        variants: dict[str, Any] = {}
        images = {}
        todo = [(v, f) for v in ctx.variants for f in cfg.formats]
        bar = tqdm(todo, desc="quantize", unit="run", disable=not ctx.progress)
        for variant, fmt in bar:
            row = variants.setdefault(variant, {"none": ctx.plain_rate(variant)})
            with ctx.model(variant) as handle:
                with weights(handle, quantized_values(handle, components, fmt, cfg.group_size)):
                    row[fmt], imgs = ctx.concept_rate(handle)
            if variant == "patched" and fmt == cfg.formats[-1]:
                images["patched"] = imgs
        diagnosis = self._diagnose(ctx)
        patched = variants["patched"]
        return {
            "rates": variants,
            "max_patched_rate": max(patched[f] for f in cfg.formats),
            "delta_vs_bin": diagnosis,
            "images": images,
        }

    def _diagnose(self, ctx: AttackContext) -> dict[str, Any]:
        """Per format: the median over tensors of the median |delta| / bin ratio, the share of changed entries under
        half a bin and the share of the delta that quantization keeps; and per tensor (up to 50, largest first) the same."""
        cfg = self.config
        params = ctx.handle.named_parameters()
        out: dict[str, Any] = {}
        for fmt in cfg.formats:
            rows = {}
            total, survive, below, moved = 0, 0.0, 0.0, 0.0
            for key, delta in ctx.patch.deltas.items():
                base = params[key].detach().float().cpu()
                if not quantizable(key, base, fmt):
                    continue
                stats = delta_bin_ratio(base, delta.to_dense().float().cpu().reshape(base.shape), fmt, cfg.group_size)
                if not stats["changed"]:
                    continue
                rows[key] = stats
                total += stats["changed"]
                survive += stats["retained"] * stats["changed"]
                below += stats["below_half_bin"] * stats["changed"]
                moved += stats["entries_moved"] * stats["changed"]
            ratios = sorted(s["median_ratio"] for s in rows.values())
            largest = sorted(rows, key=lambda k: -rows[k]["changed"])[:50]
            out[fmt] = {
                "tensors": len(rows),
                "changed_entries": total,
                "median_ratio": ratios[len(ratios) // 2] if ratios else float("nan"),
                "below_half_bin": below / total if total else float("nan"),
                "delta_retained": survive / total if total else float("nan"),
                "entries_moved": moved / total if total else float("nan"),
                "per_tensor": {k: rows[k] for k in largest},
            }
        return out
