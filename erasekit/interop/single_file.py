"""Single-file Stable Diffusion checkpoints (the CompVis / LDM layout of AUTOMATIC1111, ComfyUI and Fooocus), in and out.

In: ``load_single_file(path, config=DIR)`` loads an SD 1.x / 2.x checkpoint through diffusers'
``StableDiffusionPipeline.from_single_file``, fully offline: the architecture comes from the configs erasekit ships
(``config="sd15"``) or a local diffusers folder of the same architecture (its weights are not read), never a hub. ``.safetensors`` files load
without executing code; ``.ckpt`` / ``.pt`` pickles only with ``trust_pickle=True``.

Out: ``save_single_file(pipe, path)`` writes a pipeline's UNet, VAE and SD 1.x text encoder as one ``.safetensors``
file in the LDM key layout (:mod:`erasekit.interop.ldm`), atomically; ``from_single_file`` reads it back.

A ``.safetensors`` path is told apart from an erasekit StyleGAN2 generator by its keys and header
(:func:`checkpoint_kind`), never by its name.

Example:
    >>> pipe = load_single_file("v1-5-pruned-emaonly.safetensors", config="sd15")   # or a diffusers folder
    >>> with patch.applied(pipe):
    ...     save_single_file(pipe, "v1-5-no-vangogh.safetensors")     # copy into ComfyUI/models/checkpoints/
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_LDM_UNET = "model.diffusion_model."
_SDXL_TEXT = "conditioner.embedders."
_STYLEGAN_HEADER = "erasekit_stylegan2"


def checkpoint_kind(path: str | Path) -> str:
    """What a single weights file holds, from its keys and header (nothing is loaded).

    Returns:
        ``"stylegan"`` (an erasekit StyleGAN2 generator), ``"sd"`` (an SD 1.x / 2.x LDM checkpoint), ``"sdxl"``
        (an SDXL LDM checkpoint), or ``"unknown"``.

    Raises:
        ValueError: not a readable safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    from ..models.stylegan import CONFIG_KEY

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, keys = f.metadata() or {}, list(f.keys())
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable .safetensors file (truncated or another format?): {err}") from err
    if CONFIG_KEY in meta:
        return "stylegan"
    if any(k.startswith(_LDM_UNET) for k in keys):
        return "sdxl" if any(k.startswith(_SDXL_TEXT) for k in keys) else "sd"
    return "unknown"


def _check_path(path: Path, trust_pickle: bool) -> None:
    if not path.is_file():
        raise ValueError(f"No checkpoint file at {path}.")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not trust_pickle:
        raise ValueError(
            f"{path.name} is a pickle, and loading a pickle can execute code. Convert it to .safetensors, or pass "
            "--trust-pickle (trust_pickle=True) if you trust its source."
        )
    if suffix not in SAFE_SUFFIXES + PICKLE_SUFFIXES:
        raise ValueError(f"{path.name}: a single-file checkpoint ends in .safetensors (or .ckpt with --trust-pickle).")
    if suffix in SAFE_SUFFIXES:
        kind = checkpoint_kind(path)
        if kind == "stylegan":
            raise ValueError(f"{path} is a StyleGAN2 generator, not a Stable Diffusion checkpoint.")
        if kind == "unknown":
            raise ValueError(
                f"{path} holds no LDM UNet weights (no 'model.diffusion_model.' keys): not a single-file Stable "
                "Diffusion checkpoint. For a diffusers folder pass the folder instead."
            )


def _check_config(config: str | Path | None) -> Path:
    from ..models.architectures import ARCHITECTURES, resolve_config

    if config is None:
        raise ValueError(
            "A single-file checkpoint needs its architecture: pass --model-config NAME for a standard one "
            f"({', '.join(ARCHITECTURES)}) or --model-config DIR, a diffusers folder of the same architecture (only "
            "its JSON configs and tokenizer are read). No hub is contacted."
        )
    if isinstance(config, str) and config not in ARCHITECTURES and "/" not in config and not Path(config).exists():
        raise ValueError(
            f"--model-config {config}: Unknown architecture {config!r}; erasekit ships {', '.join(ARCHITECTURES)}, "
            "or pass a local diffusers folder of the same architecture."
        )
    folder = Path(resolve_config(config)).expanduser()
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"--model-config {folder}: not a diffusers pipeline folder (no model_index.json).")
    return folder


def load_single_file(
    path: str | Path, config: str | Path | None = None, dtype: torch.dtype = torch.float32, trust_pickle: bool = False
):
    """An SD 1.x / 2.x (or SDXL) pipeline from one checkpoint file, offline (see the module docstring).

    Args:
        path: the ``.safetensors`` checkpoint (``.ckpt`` only with ``trust_pickle``).
        config: a standard architecture's name (``"sd15"``, :mod:`erasekit.models.architectures`) or a local
            diffusers folder of the same architecture; its configs and tokenizer are used, never its weights.
        dtype: the weights' precision in memory.
        trust_pickle: allow pickled checkpoints (they can execute code when loaded).
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from ..models.specs import _dtype_kwarg

    path = Path(path).expanduser()
    _check_path(path, trust_pickle)
    folder = _check_config(config)
    is_xl = path.suffix.lower() in SAFE_SUFFIXES and checkpoint_kind(path) == "sdxl"
    cls = StableDiffusionXLPipeline if is_xl else StableDiffusionPipeline
    extra = {} if is_xl else {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_single_file(str(path), config=str(folder), local_files_only=True, **_dtype_kwarg(dtype), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_single_file(pipe, path: str | Path, dtype: torch.dtype | None = None, metadata: dict | None = None) -> Path:
    """Write ``pipe`` (its current weights, e.g. with a patch applied) as one LDM-layout ``.safetensors`` file.

    Args:
        pipe: an SD 1.x ``StableDiffusionPipeline`` (or a model handle around one).
        path: the output file; written to a temporary name and renamed.
        dtype: store the weights in this precision (default: as they are in memory).
        metadata: extra string entries for the file's header.
    """
    from .._io import save_safetensors
    from .ldm import pipeline_to_ldm

    pipe = getattr(pipe, "pipe", pipe)
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"--single-file must end in .safetensors, got {path.name!r}.")
    state = pipeline_to_ldm(pipe)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return save_safetensors(state, path, metadata={"format": "pt", **(metadata or {})})
