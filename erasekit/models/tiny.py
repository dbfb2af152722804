"""Tiny random Stable Diffusion components, built in code for tests and smoke runs (``tiny-sd``, ``tiny-sdxl``,
``tiny-sd3``).

The sizes follow diffusers' own test fixtures (UNet ``block_out_channels=(4, 8)``, text hidden size 8, ...), with
the real CLIP tokenizer so that prompts tokenize exactly as they would for Stable Diffusion. The SDXL and SD3
pipelines keep their architecture's shape at toy width: SDXL's two text encoders of different widths, pooled
embedding and added time ids, Euler sampling; SD3's MMDiT with joint attention, three text encoders (the T5 one with
a small character-level tokenizer built in code) and flow matching.
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


def tiny_vae(seed: int = 0, **config):
    """A two-level ``AutoencoderKL`` (downsampling factor 2, 4 latent channels); ``config`` overrides its settings
    (``latent_channels``, ``scaling_factor``, ``shift_factor``, ...)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    settings = dict(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
        sample_size=TINY_IMAGE_SIZE,
    )
    return AutoencoderKL(**{**settings, **config})


def tiny_text_encoder(seed: int = 0, hidden_size: int = 8, projection: bool = False):
    """A two-layer ``CLIPTextModel`` over CLIP's full 49,408-token vocabulary (``CLIPTextModelWithProjection``, whose
    pooled output SDXL and SD3 read, when ``projection``)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

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
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


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


# ------------------------------------------------------------------------------------------------------------ SDXL

SDXL_TEXT_WIDTHS = (8, 12)  # hidden sizes of the two text encoders; the UNet reads their concatenation
SDXL_TIME_EMBED_DIM = 8  # per added time id (SDXL: 256)


def tiny_sdxl_unet(seed: int = 0):
    """An SDXL-shaped ``UNet2DConditionModel``: a first level without attention, linear projections, two transformer
    layers in the second level, and the "text_time" added embedding of the pooled text and six time ids."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=TINY_IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=sum(SDXL_TEXT_WIDTHS),
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED_DIM + SDXL_TEXT_WIDTHS[1],
        norm_num_groups=2,
    )


def sdxl_euler_scheduler():
    """Euler with SDXL base 1.0's settings (its checkpoint's default sampler)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        interpolation_type="linear",
        prediction_type="epsilon",
    )


def tiny_sdxl_pipeline(seed: int = 0):
    """Build a tiny random ``StableDiffusionXLPipeline`` in fp32 on CPU: CLIP text encoders of widths 8 and 12 (the
    second with a projection, whose output is the pooled embedding), the SDXL-shaped UNet, a VAE with SDXL's latent
    scaling, Euler sampling, the empty prompt encoded as zeros (``force_zeros_for_empty_prompt``), no watermarker.

    Example:
        >>> pipe = tiny_sdxl_pipeline()
        >>> pipe("a cat", num_inference_steps=2, output_type="np").images.shape
        (1, 32, 32, 3)
    """
    import copy

    from diffusers import StableDiffusionXLPipeline

    tokenizer_2 = copy.deepcopy(_cached_tokenizer())
    tokenizer_2.pad_token = "!"  # as SDXL's second tokenizer (OpenCLIP pads with "!")
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(seed, scaling_factor=0.13025, force_upcast=False),
        text_encoder=tiny_text_encoder(seed, SDXL_TEXT_WIDTHS[0]),
        text_encoder_2=tiny_text_encoder(seed + 1, SDXL_TEXT_WIDTHS[1], projection=True),
        tokenizer=copy.deepcopy(_cached_tokenizer()),
        tokenizer_2=tokenizer_2,
        unet=tiny_sdxl_unet(seed),
        scheduler=sdxl_euler_scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------------------------- SD3

SD3_TEXT_WIDTHS = (8, 12)  # the two CLIP encoders (SD3: 768 and 1280)
SD3_JOINT_DIM = 32  # T5 width = the transformer's joint_attention_dim (SD3: 4096)
SD3_LATENT_CHANNELS = 16  # as SD3's VAE


def t5_char_tokenizer():
    """A ``T5TokenizerFast`` (a SentencePiece-style unigram model) over printable ASCII characters, built in code.

    No T5 vocabulary can be downloaded here; characters are enough for a random T5 encoder to give every prompt its
    own embedding. Words start with the ``▁`` marker as in T5's vocabulary.
    """
    import string

    from transformers import T5TokenizerFast

    chars = string.ascii_letters + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + c, -3.0) for c in chars] + [(c, -3.0) for c in chars]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=256)


def tiny_t5_encoder(vocab_size: int, seed: int = 0):
    """A one-layer ``T5EncoderModel`` (gated GELU as T5 v1.1, SD3's) of width :data:`SD3_JOINT_DIM`."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=SD3_JOINT_DIM,
        d_kv=8,
        d_ff=37,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
    )
    return T5EncoderModel(config).eval()


def tiny_sd3_transformer(seed: int = 0):
    """A two-block ``SD3Transformer2DModel`` (MMDiT; the last block's text stream is context-only, as in SD3)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=TINY_IMAGE_SIZE // 2,
        patch_size=2,
        in_channels=SD3_LATENT_CHANNELS,
        out_channels=SD3_LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=2,
        joint_attention_dim=SD3_JOINT_DIM,
        caption_projection_dim=8,  # = heads x head dim, as in SD3
        pooled_projection_dim=sum(SD3_TEXT_WIDTHS),
        pos_embed_max_size=16,
    )


def tiny_sd3_pipeline(seed: int = 0, t5: bool = True):
    """Build a tiny random ``StableDiffusion3Pipeline`` in fp32 on CPU: two CLIP text encoders with projections (the
    pooled embedding is their concatenation), a tiny T5 (``t5=False`` leaves it out, as SD3 allows), the MMDiT, a
    16-channel VAE with SD3's latent scaling and shift, and flow-matching Euler sampling (shift 3, SD3's).

    Example:
        >>> pipe = tiny_sd3_pipeline()
        >>> pipe("a cat", num_inference_steps=2, output_type="np").images.shape
        (1, 32, 32, 3)
    """
    import copy

    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    tokenizer_3 = t5_char_tokenizer() if t5 else None
    pipe = StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(seed),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(
            seed,
            latent_channels=SD3_LATENT_CHANNELS,
            use_quant_conv=False,
            use_post_quant_conv=False,
            scaling_factor=1.5305,
            shift_factor=0.0609,
        ),
        text_encoder=tiny_text_encoder(seed, SD3_TEXT_WIDTHS[0], projection=True),
        tokenizer=copy.deepcopy(_cached_tokenizer()),
        text_encoder_2=tiny_text_encoder(seed + 1, SD3_TEXT_WIDTHS[1], projection=True),
        tokenizer_2=copy.deepcopy(_cached_tokenizer()),
        text_encoder_3=tiny_t5_encoder(len(tokenizer_3), seed) if t5 else None,
        tokenizer_3=tokenizer_3,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
