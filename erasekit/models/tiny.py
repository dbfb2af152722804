"""Tiny random Stable Diffusion components, built in code for tests and smoke runs (``tiny-sd``).

The sizes follow diffusers' own test fixtures (UNet ``block_out_channels=(4, 8)``, text hidden size 8, ...), with
the real CLIP tokenizer so that prompts tokenize exactly as they would for Stable Diffusion.
"""

from __future__ import annotations

import functools

import torch

TINY_IMAGE_SIZE = 32  # pixels; the tiny VAE downsamples by 2, so latents are 16x16


def tiny_unet(seed: int = 0, cross_attention_dim: int = 8):
    """A two-level ``UNet2DConditionModel`` with cross-attention in both levels (a few thousand parameters)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=TINY_IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=2,
        attention_head_dim=2,
    )


def tiny_vae(seed: int = 0):
    """A two-level ``AutoencoderKL`` (downsampling factor 2, 4 latent channels)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
        sample_size=TINY_IMAGE_SIZE,
    )


def tiny_text_encoder(seed: int = 0, hidden_size: int = 8):
    """A two-layer ``CLIPTextModel`` over CLIP's full 49,408-token vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=hidden_size,
        intermediate_size=16,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=49408,
        max_position_embeddings=77,
        projection_dim=hidden_size,
    )
    return CLIPTextModel(config).eval()


@functools.lru_cache(maxsize=1)
def _cached_tokenizer():
    from .tokenizer import clip_tokenizer

    return clip_tokenizer()


def sd_ddim_scheduler():
    """DDIM with Stable Diffusion 1.x's noise schedule."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def assemble_pipeline(unet, vae, text_encoder, tokenizer, scheduler=None):
    """A ``StableDiffusionPipeline`` from components (DDIM by default, no safety checker, progress bar off)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler or sd_ddim_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sd_pipeline(seed: int = 0):
    """Build a complete tiny random ``StableDiffusionPipeline`` (DDIM scheduler, no safety checker), in fp32 on CPU.

    Example:
        >>> pipe = tiny_sd_pipeline()
        >>> pipe("a cat", num_inference_steps=2, output_type="np").images.shape
        (1, 32, 32, 3)
    """
    import copy

    return assemble_pipeline(
        tiny_unet(seed), tiny_vae(seed), tiny_text_encoder(seed), copy.deepcopy(_cached_tokenizer())
    )
