"""The MiniCanvas world's Stable Diffusion pipeline as the recipe ships it: saving the parts in fp16, reading them
back for the later stages (what ships is what they train against), and the end-of-recipe check of the saved folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...minicanvas.data import UNLEARNCANVAS_TEMPLATE
from ..framework import fp32_config, half
from .banks import ImageBank
from .train_unet import noise_schedulers
from .train_vae import evaluate_vae


def _rebuilt(model_class, path: Path, device: torch.device):
    """A diffusers model read from ``path`` and rebuilt from its config, so a pipeline saved with it does not record
    the temporary folder as ``_name_or_path``; fp32, eval mode, on ``device``."""
    loaded = model_class.from_pretrained(path, local_files_only=True)
    model = model_class.from_config({k: v for k, v in loaded.config.items() if not k.startswith("_")})
    model.load_state_dict(loaded.state_dict())
    return model.float().to(device).eval()  # .float(): to(dtype=...) makes diffusers warn about fp32 modules


def reload_vae(path: Path, device: torch.device):
    """The autoencoder saved at ``path`` (see :func:`_rebuilt`)."""
    from diffusers import AutoencoderKL

    return _rebuilt(AutoencoderKL, path, device)


def reload_unet(path: Path, device: torch.device):
    """The denoiser saved at ``path`` (see :func:`_rebuilt`)."""
    from diffusers import UNet2DConditionModel

    return _rebuilt(UNet2DConditionModel, path, device)


def reload_classifiers(world: Path, device: torch.device) -> dict:
    """The style and object classifiers saved in the world folder ``world``."""
    from ...minicanvas.classifier import load_classifier

    return {k: load_classifier(world / "classifiers" / f"{k}.safetensors", device=device) for k in ("style", "object")}


def save_pipeline(path: Path, vae, text_encoder, tokenizer, unet) -> None:
    """Save the ``StableDiffusionPipeline`` folder: fp16 parts, the DPM-Solver++ sampler, no safety checker."""
    from diffusers import StableDiffusionPipeline

    _, sampler = noise_schedulers()
    pipe = StableDiffusionPipeline(
        vae=half(vae),
        text_encoder=half(text_encoder),
        tokenizer=tokenizer,
        unet=half(unet),
        scheduler=sampler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    fp32_config(path / "text_encoder" / "config.json")


def check_pipeline(world: Path, cfg, heldout: ImageBank, styles, objects) -> tuple[dict, dict]:
    """Reload what was saved in ``world`` and measure it: VAE reconstructions and a one-seed-per-pair fidelity grid
    (``cfg.check_seeds`` seeds); with ``cfg.check_classes`` set, both measure only the first that many classes of
    each axis."""
    from erasekit.models import DiffusionHandle, load_pipeline

    from .fidelity import fidelity

    device = heldout.images.device
    handle = DiffusionHandle(load_pipeline(str(world / "pipeline"), device=device, dtype=torch.float32))
    classifiers = reload_classifiers(world, device)
    if cfg.check_classes:
        styles, objects = styles[: cfg.check_classes], objects[: cfg.check_classes]
        heldout = heldout.subset(styles, objects)
    vae_metrics = evaluate_vae(handle.pipe.vae, heldout, classifiers)
    seeds = list(range(cfg.check_seeds))
    result, _ = fidelity(
        handle,
        classifiers["style"],
        classifiers["object"],
        styles,
        objects,
        [UNLEARNCANVAS_TEMPLATE],
        seeds,
        cfg.sample_steps,
        cfg.guidance,
        progress=False,
    )
    return vae_metrics, {"template": UNLEARNCANVAS_TEMPLATE, "seeds": seeds, **result}
