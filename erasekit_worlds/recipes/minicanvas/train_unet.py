"""Recipe stage: the ``UNet2DConditionModel`` denoiser over 16×16×4 latents, conditioned on the CLIP text tower.

Standard latent-diffusion training as in Stable Diffusion 1.x (ε-prediction, the scaled-linear β schedule over 1000
steps, a frozen text encoder, ~10% of captions replaced by the empty string so classifier-free guidance works), with
four changes that matter at this budget: offset noise (a random per-channel constant added to the noise, so the
sampler does not read an image's overall colour from the mean of its starting noise), the min-SNR-γ loss weighting
(Hang et al., arXiv 2303.09556) speeds up convergence, the weights shipped are an exponential moving average, and
VAE latents are computed once up front (posterior means and stds; each step draws a fresh posterior sample).

Given a checkpoint path, the whole training state is saved there every ``checkpoint_every`` steps, and a run that
finds it resumes from it with the same result as an uninterrupted run (:mod:`erasekit_worlds.recipes.checkpoint`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...minicanvas.data import TRAIN_TEMPLATES
from ..checkpoint import CHECKPOINT_EVERY, TrainingState, load_checkpoint, save_checkpoint
from ..clip import MAX_TOKENS
from ..training import EMA, Stopwatch, adamw, generator, n_params, run_steps, seeded, warmup_cosine
from .banks import CaptionBank

logger = logging.getLogger(__name__)

CROSS, PLAIN = "CrossAttnDownBlock2D", "DownBlock2D"
UP = {CROSS: "CrossAttnUpBlock2D", PLAIN: "UpBlock2D"}
CHECKPOINT_KEY = "erasekit_minicanvas_unet_checkpoint"
SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


@dataclass
class UnetTrainConfig:
    """The denoiser architecture and how it is trained (each field's comment says why its default)."""

    channels: tuple[int, ...] = (64, 128, 128)  # per level at 16, 8 and 4 latent pixels
    down_blocks: tuple[str, ...] = (PLAIN, CROSS, CROSS)  # no attention at 16x16: 256-token attention is the
    # costliest op on a CPU, and the text reaches the 16x16 features through the decoder path
    layers_per_block: int = 1  # ResNet (+ transformer) blocks per down level (the up path has one more)
    heads: int = 4  # attention heads per transformer block
    steps: int = 3000  # optimiser steps
    batch_size: int = 32  # latents per step
    lr: float = 4e-4  # AdamW peak learning rate (warm-up, then cosine)
    weight_decay: float = 0.01  # AdamW decay on weight matrices
    warmup: int = 100  # warm-up steps
    ema_decay: float = 0.998  # EMA of the weights; what gets shipped
    caption_dropout: float = 0.1  # share of captions replaced by "" (the unconditional branch of CFG)
    insert_prob: float = 0.3  # share of captions given 1-2 random filler tokens (robust to paraphrased prompts)
    min_snr_gamma: float = 5.0  # min-SNR-γ loss weighting; 0 disables it (plain ε-MSE)
    offset_noise: float = 0.15  # std of a per-(image, channel) constant added to the training noise; 0 disables
    # it. 16x16 latents make the mean of pure noise large (std 1/16 per channel) and without this the sampler reads
    # an image's overall colour from it: seed-dependent colour casts that change the style (offset noise,
    # Guttenberg 2023; 0.1 there for 4x as many latent pixels, so a larger share of noise here)


def build_unet(cfg: UnetTrainConfig, cross_attention_dim: int, seed: int):
    """A randomly initialised ``UNet2DConditionModel`` for 16×16×4 latents."""
    from diffusers import UNet2DConditionModel

    with seeded("unet-init", seed):
        return UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=tuple(cfg.channels),
            down_block_types=tuple(cfg.down_blocks),
            up_block_types=tuple(UP[b] for b in reversed(cfg.down_blocks)),
            layers_per_block=cfg.layers_per_block,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=cfg.heads,
            norm_num_groups=32,
        )


def noise_schedulers():
    """The training schedule (DDPM) and the sampler shipped with the pipeline (DPM-Solver++ 2M, same β)."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

    train = DDPMScheduler(**SCHEDULE, prediction_type="epsilon", clip_sample=False)
    sample = DPMSolverMultistepScheduler(
        **SCHEDULE, prediction_type="epsilon", algorithm_type="dpmsolver++", solver_order=2, steps_offset=1
    )
    return train, sample


def snr_weights(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR(t), γ) / SNR(t): the min-SNR weighting for ε-prediction (1 everywhere when γ = 0)."""
    if gamma <= 0:
        return torch.ones_like(t, dtype=torch.float32)
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / snr


def train_unet(
    latents: tuple[torch.Tensor, torch.Tensor, float],
    labels: tuple[torch.Tensor, torch.Tensor],
    text_encoder,
    tokenizer,
    cfg: UnetTrainConfig,
    seed: int,
    device: torch.device,
    checkpoint=None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    identity: dict | None = None,
) -> tuple[object, dict]:
    """Train the denoiser on precomputed latents.

    Args:
        latents: ``(means, stds, scaling_factor)`` of the VAE posteriors of the training images.
        labels: ``(style_ids, object_ids)`` of those images.
        text_encoder: the frozen ``CLIPTextModel``; its last hidden states condition the UNet.
        tokenizer: the CLIP tokenizer.
        checkpoint: a ``.safetensors`` path: the training state (UNet, EMA, AdamW, schedule, data generator) is
            saved there every ``checkpoint_every`` steps, and a run that finds it there resumes from it, ending
            with the same weights as an uninterrupted run.
        identity: what else shaped the training data (the recipe's exclusions, data sizes, the CLIP and VAE
            settings); a checkpoint is resumed only with it, ``cfg`` and ``seed`` unchanged.

    Returns:
        The EMA UNet (eval mode) and the stage statistics.

    Raises:
        ValueError: ``checkpoint`` holds another run's state (other settings, or not a checkpoint).
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    means, stds, scale = latents
    unet = build_unet(cfg, text_encoder.config.hidden_size, seed).to(device).train()
    ema = EMA(unet, cfg.ema_decay)
    train_sched, _ = noise_schedulers()
    captions = CaptionBank(tokenizer, TRAIN_TEMPLATES, MAX_TOKENS, device)
    opt = adamw(unet, cfg.lr, cfg.weight_decay)
    lr_sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    gen, clock = generator(device, "unet-data", seed), Stopwatch(device)
    state = TrainingState({"unet": unet, "ema": ema.shadow}, {"opt": opt}, gen, {"lr": lr_sched})
    identity = {**(identity or {}), "config": asdict(cfg), "seed": seed}
    start, earlier_seconds, stats = 0, 0.0, {}
    if checkpoint is not None and Path(checkpoint).exists():
        record = load_checkpoint(checkpoint, CHECKPOINT_KEY, "MiniCanvas UNet", state, identity)
        start, earlier_seconds, ema.updates = record["steps_done"], record["seconds"], record["ema_updates"]
        logger.info("unet: resuming from %s after %d of %d steps", checkpoint, start, cfg.steps)
        stats["resumed_at_steps"] = start

    def loss_at(step: int) -> torch.Tensor:
        idx = torch.randint(len(means), (cfg.batch_size,), generator=gen, device=device)
        x0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen, device=device)) * scale
        ids = captions.sample(labels[0][idx], labels[1][idx], gen, cfg.insert_prob, cfg.caption_dropout)
        with torch.no_grad():
            emb = text_encoder(input_ids=ids).last_hidden_state
        t = torch.randint(SCHEDULE["num_train_timesteps"], (cfg.batch_size,), generator=gen, device=device)
        noise = torch.randn(x0.shape, generator=gen, device=device)
        if cfg.offset_noise:
            noise = noise + cfg.offset_noise * torch.randn((*x0.shape[:2], 1, 1), generator=gen, device=device)
        pred = unet(train_sched.add_noise(x0, noise, t), t, encoder_hidden_states=emb).sample
        per_item = F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3))
        return (snr_weights(train_sched, t, cfg.min_snr_gamma) * per_item).mean()

    def after(step: int) -> None:
        ema.update(unet)
        done = step + 1
        if checkpoint is not None and done % checkpoint_every == 0 and done < cfg.steps:
            record = {"steps_done": done, "seconds": earlier_seconds + clock.seconds(), "ema_updates": ema.updates}
            save_checkpoint(checkpoint, CHECKPOINT_KEY, state, {**record, **identity})

    run_steps("unet", cfg.steps, loss_at, opt, lr_sched, clock, after=after, start=start)
    stats = {"seconds": round(earlier_seconds + clock.seconds(), 2), "steps": cfg.steps, **stats}
    return ema.shadow, {**stats, "batch_size": cfg.batch_size, "params": n_params(unet)}
