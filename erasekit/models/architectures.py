"""The standard Stable Diffusion architectures as config-only diffusers folders, built offline.

A single-file checkpoint carries weights, not its architecture; diffusers' ``from_single_file`` takes that from a
diffusers folder (``config=DIR``) and would otherwise fetch it from a hub. erasekit ships the configs of the standard
architectures instead: ``architecture_folder("sd15")`` writes ``model_index.json``, each component's
``config.json``, the scheduler config and the CLIP tokenizer (built from the vocabulary open-clip-torch ships) into a
cache folder, with no weights. ``--model-config sd15`` on the CLI uses it.

The same configs build a randomly initialised full-size pipeline (:func:`random_pipeline`) for speed and memory
benchmarks, where the weights' values do not matter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Stable Diffusion 1.x (1.4 / 1.5): the public release's architecture, as diffusers names it.
SD15 = {
    "model_index": {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "unet": {
        "_class_name": "UNet2DConditionModel",
        "sample_size": 64,  # 512 px images, 8x VAE downsampling
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "cross_attention_dim": 768,  # CLIP ViT-L/14's text width
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    },
    "vae": {
        "_class_name": "AutoencoderKL",
        "sample_size": 512,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "scaling_factor": 0.18215,
    },
    "text_encoder": {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "projection_dim": 768,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    },
    "scheduler": {
        "_class_name": "PNDMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "clip_sample": False,
    },
}

ARCHITECTURES = {"sd15": SD15}


def _cache_root() -> Path:
    base = os.environ.get("ERASEKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "erasekit")
    return Path(base) / "architectures"


def _check(name: str) -> dict:
    if name not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {name!r}; erasekit ships {', '.join(ARCHITECTURES)}. For another one, pass a local "
            "diffusers folder of the same architecture instead."
        )
    return ARCHITECTURES[name]


def architecture_folder(name: str, root: str | Path | None = None) -> Path:
    """A config-only diffusers folder for the standard architecture ``name`` (written once, atomically).

    Example:
        >>> pipe = load_single_file("v1-5-pruned-emaonly.safetensors", config=architecture_folder("sd15"))
    """
    from .._io import atomic_dir
    from .tokenizer import clip_tokenizer

    spec = _check(name)
    folder = Path(root) if root is not None else _cache_root() / name
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder, overwrite=True) as tmp:
        tmp = Path(tmp)
        (tmp / "model_index.json").write_text(json.dumps(spec["model_index"], indent=2), encoding="utf-8")
        for component, filename in (("unet", "config.json"), ("vae", "config.json"), ("text_encoder", "config.json")):
            (tmp / component).mkdir()
            (tmp / component / filename).write_text(json.dumps(spec[component], indent=2), encoding="utf-8")
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(spec["scheduler"], indent=2), "utf-8")
        clip_tokenizer().save_pretrained(tmp / "tokenizer")
    return folder


def resolve_config(config: str | Path | None) -> str | Path | None:
    """``"sd15"`` (a shipped architecture name) -> its config folder; a path is returned as it is."""
    if isinstance(config, str) and config in ARCHITECTURES:
        return architecture_folder(config)
    return config


def random_pipeline(name: str = "sd15", seed: int = 0, overrides: dict[str, dict] | None = None):
    """A full-size pipeline of architecture ``name`` with random weights (for speed and memory benchmarks).

    Args:
        name: a shipped architecture (``"sd15"``).
        seed: seeds the weights' initialisation.
        overrides: config entries replaced per component, e.g. ``{"unet": {"block_out_channels": [32, 64, 128,
            128]}}``: a smaller model of the same architecture, for trying a benchmark out.

    Example:
        >>> pipe = random_pipeline("sd15", overrides={"unet": {"layers_per_block": 1}})
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tokenizer import clip_tokenizer

    spec = _check(name)
    unknown = set(overrides or {}) - {"unet", "vae", "text_encoder", "scheduler"}
    if unknown:
        raise ValueError(
            f"overrides name unknown components {sorted(unknown)}; use unet, vae, text_encoder, scheduler"
        )
    spec = {k: {**v, **(overrides or {}).get(k, {})} for k, v in spec.items()}
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config({k: v for k, v in spec["unet"].items() if k != "_class_name"})
    vae = AutoencoderKL.from_config({k: v for k, v in spec["vae"].items() if k != "_class_name"})
    text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in spec["text_encoder"].items() if k != "architectures"}))
    scheduler = PNDMScheduler.from_config({k: v for k, v in spec["scheduler"].items() if k != "_class_name"})
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
