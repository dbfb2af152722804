"""The erasure patch: deltas, apply/remove, files and LoRA export."""

from .deltas import DenseDelta, LowRankDelta, SparseDelta
from .io import load_patch, read_metadata, save_patch
from .lora import LoraExport, export_lora
from .patch import AppliedPatch, ErasurePatch, as_components
from .targets import PRESETS, describe_presets, resolve_targets

__all__ = [
    "PRESETS",
    "AppliedPatch",
    "DenseDelta",
    "ErasurePatch",
    "LoraExport",
    "LowRankDelta",
    "SparseDelta",
    "as_components",
    "describe_presets",
    "export_lora",
    "load_patch",
    "read_metadata",
    "resolve_targets",
    "save_patch",
]
