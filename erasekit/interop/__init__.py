"""Interoperability with the tools people serve models from: single-file (CompVis / LDM) checkpoints in and out,
and LoRA in the kohya key format (AUTOMATIC1111, ComfyUI, Fooocus)."""

from .kohya import to_kohya
from .single_file import checkpoint_kind, load_single_file, save_single_file

__all__ = ["checkpoint_kind", "load_single_file", "save_single_file", "to_kohya"]
