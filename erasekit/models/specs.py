"""Resolve model specs: ``"tiny-sd"`` (``"tiny-sdxl"``, ``"tiny-sd3"``), a registered world (``"NAME"`` or ``"NAME:/path"``, see
:mod:`erasekit.plugins`), ``"local:/path"`` or a plain path to a diffusers folder.

Loading never executes code and never touches a model hub: folders load with ``local_files_only=True`` and
safetensors weights only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .sd import DiffusionHandle, default_dtype, set_attention_backend

logger = logging.getLogger(__name__)

BUILTIN_SPECS = {
    "tiny-sd": "tiny random Stable Diffusion components built in code (tests and smoke runs)",
    "tiny-sdxl": "tiny random SDXL components built in code (two text encoders, pooled embedding, time ids)",
    "tiny-sd3": "tiny random SD3 components built in code (MMDiT, CLIP-L/G and T5 encoders, flow matching)",
}
TINY_BUILDERS = {"tiny-sd": "tiny_sd_pipeline", "tiny-sdxl": "tiny_sdxl_pipeline", "tiny-sd3": "tiny_sd3_pipeline"}


def builtin_specs() -> dict[str, str]:
    """Every model name ``load_model`` knows without a path: the tiny pipelines and the registered worlds."""
    from ..plugins import list_worlds

    return {**BUILTIN_SPECS, **{w.name: w.description for w in list_worlds()}}


def _world(spec):
    from ..plugins import world_of_spec

    return world_of_spec(spec)


def _stylegan_file(spec) -> bool:
    from ..interop.single_file import checkpoint_kind

    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise ValueError(f"No model file at {path}.")
    kind = checkpoint_kind(path)
    if kind == "unknown":
        raise ValueError(
            f"{path} is neither an erasekit StyleGAN2 generator (no 'erasekit_stylegan2_config' header entry) nor a "
            "single-file Stable Diffusion checkpoint (no 'model.diffusion_model.' keys). Pass a diffusers folder, an "
            "LDM checkpoint with --model-config, or convert a StyleGAN2 checkpoint with save_generator()."
        )
    return kind == "stylegan"


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA device is visible; use --device cpu.")
    return device


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (the old name warns from 0.42 on, older releases only know it)."""
    import re

    import diffusers

    release = tuple(int(n) for n in re.findall(r"\d+", diffusers.__version__)[:3])
    return {"dtype" if release >= (0, 42, 1) else "torch_dtype": dtype}


def _load_folder(path: Path, dtype: torch.dtype):
    import json

    from diffusers import DiffusionPipeline

    index = path / "model_index.json"
    if not index.is_file():
        raise ValueError(
            f"{path} is not a diffusers pipeline folder (no model_index.json). Save one with "
            "pipe.save_pretrained(DIR), or pass 'tiny-sd'."
        )
    entries = json.loads(index.read_text())
    # components saved as absent (SD3 without T5: [null, null]) must be named as None to load; SD 1.x folders name a
    # safety checker, which erasekit never loads
    extra = {k: None for k, v in entries.items() if isinstance(v, list) and v and v[0] is None}
    if "safety_checker" in entries:
        extra["safety_checker"] = None
    pipe = DiffusionPipeline.from_pretrained(
        path, **_dtype_kwarg(dtype), local_files_only=True, use_safetensors=True, **extra
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _is_single_file(spec) -> bool:
    from ..interop.single_file import PICKLE_SUFFIXES, SAFE_SUFFIXES

    text = str(spec)
    text = text[len("local:") :] if text.startswith("local:") else text
    return Path(text).suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES


def load_pipeline(
    spec: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    attention: str = "auto",
    config: str | Path | None = None,
    trust_pickle: bool = False,
):
    """Load a Stable Diffusion pipeline (1.x/2.x, SDXL or SD3) from a spec.

    Args:
        spec: ``"tiny-sd"`` (``"tiny-sdxl"``, ``"tiny-sd3"``), a registered diffusion world (``"minicanvas"`` for the shipped one,
            ``"minicanvas:/path/to/world"``), ``"local:/path/to/folder"``, a folder written by ``save_pretrained``,
            or a single-file checkpoint (``model.safetensors``; see :mod:`erasekit.interop.single_file`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; default CUDA when present, else CPU.
        dtype: default fp32 on CPU, bf16 (or fp16) on CUDA.
        attention: ``"auto"`` (SDPA; xformers if installed on CUDA), ``"sdpa"``, ``"xformers"`` or ``"eager"``.
        config: for a single-file checkpoint, a local diffusers folder of the same architecture.
        trust_pickle: allow a pickled single-file checkpoint (``.ckpt``), which can execute code when loaded.

    Returns:
        The diffusers pipeline, on ``device`` in ``dtype``, progress bar off.

    Example:
        >>> pipe = load_pipeline("tiny-sd")
        >>> pipe = load_pipeline("local:/models/sd15", device="cuda")
    """
    device = _resolve_device(device)
    dtype = dtype or default_dtype(device)
    if spec in TINY_BUILDERS:
        from . import tiny

        pipe = getattr(tiny, TINY_BUILDERS[spec])()
    elif (found := _world(spec)) is not None:
        world, folder = found
        if world.kind != "diffusion":
            raise ValueError(
                f"{spec!r} is a {world.kind} world, not a diffusers pipeline; load it with erasekit.load_model."
            )
        pipe = _load_folder(world.model_path(folder), dtype)
    elif _is_single_file(spec):
        from ..interop.single_file import load_single_file

        path = spec[len("local:") :] if spec.startswith("local:") else spec
        pipe = load_single_file(path, config=config, dtype=dtype, trust_pickle=trust_pickle)
    else:
        path = Path(spec[len("local:") :] if spec.startswith("local:") else spec).expanduser()
        if not path.exists():
            known = ", ".join(f"{k!r}" for k in builtin_specs())
            raise ValueError(f"Unknown model {spec!r}: not a built-in ({known}) and no folder at {path}.")
        pipe = _load_folder(path, dtype)
    pipe = pipe.to(device)
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    if denoiser.dtype != dtype:
        pipe = pipe.to(dtype=dtype)
    set_attention_backend(pipe, attention)
    return pipe


def load_model(spec_or_model, **kwargs):
    """A model handle from a spec string, a pipeline, a StyleGAN2 generator, or a handle (returned as is).

    A ``.safetensors`` file loads as an erasekit StyleGAN2 generator or as a single-file Stable Diffusion checkpoint,
    told apart by its keys (the latter needs ``config=DIR``, see :func:`load_pipeline`); a registered StyleGAN2 world
    (``"minifaces"`` / ``"minifaces:DIR"``) its generator (the handle's ``world`` is the folder, where methods find the
    world's CLIP, and ``suite_name`` the suite that judges it); anything else a diffusers pipeline, whose handle class
    follows the pipeline's (:class:`~erasekit.models.SDXLHandle`, :class:`~erasekit.models.SD3Handle`, else
    :class:`~erasekit.models.DiffusionHandle`).
    """
    from .base import ModelHandle
    from .gan import StyleGANHandle, is_generator

    if isinstance(spec_or_model, ModelHandle):
        return spec_or_model
    if is_generator(spec_or_model):
        return StyleGANHandle(spec_or_model)
    found = _world(spec_or_model)
    if found is not None and found[0].kind == "stylegan":
        from .stylegan import load_generator

        world, folder = found
        device = _resolve_device(kwargs.get("device"))
        handle = StyleGANHandle(load_generator(world.model_path(folder), device=device))
        handle.spec, handle.world, handle.suite_name = spec_or_model, folder, world.suite
        return handle
    if (
        isinstance(spec_or_model, str | Path)
        and str(spec_or_model).endswith(".safetensors")
        and _stylegan_file(spec_or_model)
    ):
        from .stylegan import load_generator

        handle = StyleGANHandle(load_generator(str(spec_or_model), device=_resolve_device(kwargs.get("device"))))
        handle.spec = str(spec_or_model)
        return handle
    if isinstance(spec_or_model, str | Path):
        handle = DiffusionHandle(load_pipeline(str(spec_or_model), **kwargs))
        handle.spec = str(spec_or_model)
        return handle
    return DiffusionHandle(spec_or_model)
