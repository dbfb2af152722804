"""Recipe stage: a small ``AutoencoderKL`` mapping 64×64 images to 16×16×4 latents and back.

Without pretrained perceptual networks the loss is L1 on pixels plus L1 on image gradients (which keeps the
high-frequency style textures, hatching and tile grout, that plain L1 would blur), and a tiny KL term as in Stable
Diffusion. Being fully convolutional, it trains mostly on random 32×32 crops (4× cheaper) and finishes on whole
images so the mid-block attention sees the real latent size. The latent scaling factor is 1 / std of the training
latents, as Stable Diffusion's 0.18215 was chosen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..classifier import accuracy
from ..training import Stopwatch, adamw, augment, generator, n_params, run_steps, seeded, warmup_cosine
from .banks import ImageBank

logger = logging.getLogger(__name__)


@dataclass
class VaeTrainConfig:
    """The autoencoder architecture and how it is trained (each field's comment says why its default)."""

    channels: tuple[int, ...] = (32, 64, 64)  # per level; three levels = two downsamplings: 64 px -> 16x16 latents
    latent_channels: int = 4  # as Stable Diffusion
    layers_per_block: int = 1  # ResNet blocks per encoder level (the decoder has one more)
    norm_groups: int = 16  # GroupNorm groups
    steps: int = 1800  # optimiser steps in all
    full_size_steps: int = 300  # the last steps see whole 64 px images; the others random 32 px crops
    crop: int = 32  # crop side for the cheap steps (a multiple of 4)
    batch_size: int = 32  # images per step
    lr: float = 1e-3  # AdamW peak learning rate (warm-up, then cosine)
    warmup: int = 100  # warm-up steps
    kl_weight: float = 1e-6  # KL(q(z|x) || N(0, I)) weight: a nearly deterministic, well-scaled latent
    edge_weight: float = 1.0  # weight of the L1 loss on horizontal and vertical image differences


def build_vae(cfg: VaeTrainConfig, seed: int):
    """A randomly initialised ``AutoencoderKL`` for 64×64 RGB images."""
    from diffusers import AutoencoderKL

    levels = len(cfg.channels)
    with seeded("vae-init", seed):
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=tuple(cfg.channels),
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            latent_channels=cfg.latent_channels,
            layers_per_block=cfg.layers_per_block,
            norm_num_groups=cfg.norm_groups,
            sample_size=64,
        )


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, edge_weight: float) -> torch.Tensor:
    """L1 on pixels plus ``edge_weight`` times L1 on horizontal and vertical differences (images in [-1, 1])."""
    loss = (recon - target).abs().mean()
    for dim in (-1, -2):
        loss = loss + edge_weight * (recon.diff(dim=dim) - target.diff(dim=dim)).abs().mean()
    return loss


def _crop(images: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    if size >= images.shape[-1]:
        return images
    top, left = torch.randint(images.shape[-1] - size + 1, (2,), generator=gen, device=images.device).tolist()
    return images[..., top : top + size, left : left + size]


def train_vae(bank: ImageBank, cfg: VaeTrainConfig, seed: int, device: torch.device) -> tuple[object, dict]:
    """Train the autoencoder on ``bank``; sets ``scaling_factor`` in its config from the training latents."""
    vae = build_vae(cfg, seed).to(device).train()
    opt = adamw(vae, cfg.lr, 0.0)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    gen, clock = generator(device, "vae-data", seed), Stopwatch(device)

    def loss_at(step: int) -> torch.Tensor:
        idx = torch.randint(len(bank), (cfg.batch_size,), generator=gen, device=device)
        x = augment(bank.floats(idx), gen, shift=0) * 2 - 1
        if step < cfg.steps - cfg.full_size_steps:
            x = _crop(x, cfg.crop, gen)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen, device=device)
        return reconstruction_loss(vae.decode(z).sample, x, cfg.edge_weight) + cfg.kl_weight * post.kl().mean()

    run_steps("vae", cfg.steps, loss_at, opt, sched, clock)
    vae.eval().requires_grad_(False)
    mean, std = encode_bank(vae, bank)
    scale = 1.0 / float(mean.std())
    vae.register_to_config(scaling_factor=scale)
    stats = {"seconds": clock.seconds(), "steps": cfg.steps, "batch_size": cfg.batch_size, "params": n_params(vae)}
    stats.update(
        scaling_factor=round(scale, 5), latent_channel_means=[round(float(m), 3) for m in mean.mean((0, 2, 3))]
    )
    return vae, stats


@torch.no_grad()
def encode_bank(vae, bank: ImageBank, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and stds (unscaled) of every image in ``bank``: ``[N, C, 16, 16]`` each."""
    means, stds = [], []
    device = next(vae.parameters()).device
    for i in range(0, len(bank), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(bank)), device=device)
        post = vae.encode(bank.floats(idx) * 2 - 1).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Decode the posterior means of ``images`` (``[0, 1]``), returning ``[0, 1]`` images."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size] * 2 - 1
        out.append((vae.decode(vae.encode(x).latent_dist.mean).sample / 2 + 0.5).clamp(0, 1))
    return torch.cat(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR in dB between image batches in ``[0, 1]``."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return round(float((10 * torch.log10(1.0 / mse)).mean()), 2)


def evaluate_vae(vae, heldout: ImageBank, classifiers: dict) -> dict:
    """Held-out reconstruction PSNR, and whether the classifiers still recognise style and object afterwards."""
    device = next(vae.parameters()).device
    images = heldout.floats(torch.arange(len(heldout), device=device))
    recon = reconstruct(vae, images)
    out = {"psnr_db": psnr(recon, images), "l1": round(float(F.l1_loss(recon, images)), 5)}
    for kind, model in classifiers.items():
        targets = heldout.style_ids if kind == "style" else heldout.object_ids
        out[f"{kind}_accuracy_on_reconstructions"] = round(accuracy(model, recon, targets), 4)
    return out
