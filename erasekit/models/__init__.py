"""Model handles and loading: diffusers pipelines (Stable Diffusion 1.x/2.x, SDXL, SD3) and StyleGAN2 generators."""

from .base import ModelHandle, named_parameters
from .gan import StyleGANHandle
from .sd import DiffusionHandle, attention_backend, default_dtype, set_attention_backend
from .sd3 import SD3Handle
from .sdxl import SDXLHandle
from .specs import BUILTIN_SPECS, builtin_specs, load_model, load_pipeline

__all__ = [
    "BUILTIN_SPECS",
    "builtin_specs",
    "DiffusionHandle",
    "ModelHandle",
    "SD3Handle",
    "SDXLHandle",
    "StyleGANHandle",
    "attention_backend",
    "default_dtype",
    "load_model",
    "load_pipeline",
    "named_parameters",
    "set_attention_backend",
]
