"""Model handles and loading: diffusers pipelines (and, later, StyleGAN2 generators)."""

from .base import ModelHandle, named_parameters
from .gan import StyleGANHandle
from .sd import DiffusionHandle, attention_backend, default_dtype, set_attention_backend
from .specs import BUILTIN_SPECS, builtin_specs, load_model, load_pipeline

__all__ = [
    "BUILTIN_SPECS",
    "builtin_specs",
    "DiffusionHandle",
    "ModelHandle",
    "StyleGANHandle",
    "attention_backend",
    "default_dtype",
    "load_model",
    "load_pipeline",
    "named_parameters",
    "set_attention_backend",
]
