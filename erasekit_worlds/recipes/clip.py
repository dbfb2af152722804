"""The CLIP training both worlds share: a small transformers ``CLIPModel`` for 64×64 images over CLIP's real
49,408-token vocabulary (the BPE tokenizer built offline from open_clip's file), its embeddings, the multi-positive
contrastive loss, the optimisation loop, and saving it as a world ships it (fp16 weights computed in fp32, with a
``CLIPProcessor``).

A world brings its batches and captions (MiniCanvas: one image of every pair of a few styles; MiniFaces: random
faces with captions naming some of their attributes) as a ``batch_loss`` function, and its zero-shot protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .framework import fp32_config, half
from .training import Stopwatch, adamw, generator, run_steps, seeded, warmup_cosine

MAX_TOKENS = 77  # CLIP's context length
SPECIAL_TOKENS = (49406, 49407)  # <|startoftext|>, <|endoftext|> of the CLIP tokenizer
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's pixel normalisation, kept for familiarity
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BETAS = (0.9, 0.98)  # AdamW betas of CLIP training (Radford et al. 2021)


@dataclass
class ClipTrainConfig:
    """The CLIP architecture (what :func:`build_clip` reads) and its training (each field's comment says why its
    default); a world's subclass adds how its batches are drawn."""

    text_hidden: int = 64  # text width; the 49,408-row token embedding costs 6 MB in fp16
    text_layers: int = 4  # text transformer blocks
    text_heads: int = 4  # text attention heads
    vision_hidden: int = 128  # ViT width
    vision_layers: int = 4  # ViT blocks
    vision_heads: int = 4  # ViT attention heads
    patch_size: int = 8  # 64 px images -> 8x8 patches
    projection_dim: int = 64  # shared embedding size
    steps: int = 2000  # optimiser steps
    lr: float = 1e-3  # AdamW peak learning rate (warm-up, then cosine)
    weight_decay: float = 0.1  # also shrinks the embeddings of tokens never seen in training
    warmup: int = 100  # warm-up steps
    blur_prob: float = 0.3  # image augmentation: share blurred (sigma <= 1 px), as generated images are softer
    noise_prob: float = 0.3  # image augmentation: share with Gaussian noise (std <= 0.04)


@dataclass
class ClipTuneConfig:
    """The CLIP stage's last part, a tuning that starts from the saved fp16 weights (so a CLIP copied from an earlier
    world and a fresh one tune alike); a world's subclass says what it tunes and how."""

    steps: int = 600  # optimiser steps (0 turns the tuning off)
    lr: float = 3e-4  # AdamW peak learning rate (warm-up, then cosine)
    warmup: int = 50  # warm-up steps


def build_clip(cfg: ClipTrainConfig, seed: int):
    """A randomly initialised ``CLIPModel`` for 64×64 images over CLIP's full vocabulary."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(
        vocab_size=49408,
        hidden_size=cfg.text_hidden,
        intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=SPECIAL_TOKENS[0],
        eos_token_id=SPECIAL_TOKENS[1],
        pad_token_id=SPECIAL_TOKENS[1],
        projection_dim=cfg.projection_dim,
    )
    vision = dict(
        image_size=64,
        patch_size=cfg.patch_size,
        hidden_size=cfg.vision_hidden,
        intermediate_size=4 * cfg.vision_hidden,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        projection_dim=cfg.projection_dim,
    )
    with seeded("clip-init", seed):
        return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim))


def image_processor():
    """A ``CLIPImageProcessor`` for 64×64 inputs: 64×64 images pass through unresized, only normalised."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": 64},
        resample=3,
        do_center_crop=True,
        crop_size={"height": 64, "width": 64},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Images in ``[0, 1]`` -> the CLIP pixel values the processor produces for 64×64 uint8 images."""
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def image_embeds(model, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised image embeddings of images in ``[0, 1]``."""
    pooled = model.vision_model(pixel_values=normalise(images)).pooler_output
    return F.normalize(model.visual_projection(pooled), dim=-1)


def text_embeds(model, ids: torch.Tensor) -> torch.Tensor:
    """L2-normalised text embeddings of token ids (pooled at the first ``<|endoftext|>``)."""
    return F.normalize(model.text_projection(model.text_model(input_ids=ids).pooler_output), dim=-1)


def logit_scale(model) -> torch.Tensor:
    """The learnt temperature, capped at 100 as in CLIP."""
    return model.logit_scale.exp().clamp(max=100.0)


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where ``positive[i, j]`` marks caption ``j`` as a match of image ``i`` (uniform targets)."""
    targets = positive.float() / positive.float().sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T))


def fit_clip(
    model,
    batch_loss: Callable[[int, torch.Generator], tuple[torch.Tensor, int]],
    steps: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    data_seed: tuple,
    device: torch.device,
    name: str = "clip",
) -> dict:
    """Optimise ``model``'s trainable parameters: AdamW with CLIP's betas, warm-up then cosine, one seeded stream.

    Args:
        batch_loss: ``(step, generator) -> (loss, batch size)`` draws step ``step``'s batch from the generator and
            returns its loss and the batch size the statistics report.
        data_seed: the parts of that generator's seed (e.g. ``("clip-data", seed)``).
        name: the stage name in progress bars, logs and errors (``"clip"``, ``"clip tune"``).

    Returns:
        ``{"seconds", "steps", "batch_size"}``: the caller adds the parameters it counts as trained.
    """
    opt = adamw(model, lr, weight_decay, betas=BETAS)
    sched = warmup_cosine(opt, warmup, steps)
    gen, clock = generator(device, *data_seed), Stopwatch(device)
    batch_size = 0

    def loss_at(step: int) -> torch.Tensor:
        nonlocal batch_size
        loss, batch_size = batch_loss(step, gen)
        return loss

    run_steps(name, steps, loss_at, opt, sched, clock)
    return {"seconds": clock.seconds(), "steps": steps, "batch_size": batch_size}


def save_clip(clip, tokenizer, path: Path) -> None:
    """Save ``clip`` as a world ships it: fp16 weights whose config says float32 (erasekit computes in fp32 on CPU),
    and a ``CLIPProcessor`` for 64×64 images."""
    from transformers import CLIPProcessor

    half(clip).save_pretrained(path, safe_serialization=True)
    fp32_config(path / "config.json")
    CLIPProcessor(image_processor=image_processor(), tokenizer=tokenizer).save_pretrained(path)


def reload_clip(path: Path, device: torch.device):
    """The CLIP saved at ``path`` (fp32, eval mode, on ``device``): what later stages read is what ships."""
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()


def text_encoder_from_clip(model):
    """A ``CLIPTextModel`` holding ``model``'s text tower (a Stable Diffusion pipeline's text encoder), in eval mode."""
    from transformers import CLIPTextModel

    encoder = CLIPTextModel(model.config.text_config)
    encoder.load_state_dict(model.text_model.state_dict(), strict=True)  # transformers 5: a CLIPTextModel's tower
    return encoder.to(model.text_projection.weight.device).eval().requires_grad_(False)
