"""Recipe stage: the MiniFaces StyleGAN2 (erasekit's own generator, :mod:`erasekit.models.stylegan`).

Two objectives train the same architecture; both ship an exponential moving average of the generator (half-life
``ema_images`` images, ramped up over the first steps).

- ``"render"`` (experimental, sized for a CPU; not yet shown to learn the small attributes, see docs/minifaces.md):
  every face is a function of 39 uniforms (:func:`erasekit.worlds.minifaces.data.render_uniforms`), so the
  generator is regressed onto the renderer: latent ``z`` is drawn as usual, the face of ``u = Phi(z / rms(z))[:39]``
  (the normal CDF of the mapping network's normalised input) is drawn, and the generator's sample of ``z`` is pulled
  towards it (``pixel_loss``, L1 or MSE, on pixels and on their horizontal and vertical differences; optionally a
  teacher classifier's loss). One generator pass per face and no discriminator; the sample distribution
  is the data's by construction (``z``'s uniforms are uniform), so its quality is only a matter of how well the
  network draws. The latent space is StyleGAN2's (the mapping network, per-layer ws, truncation towards
  ``w_avg``); its first 39 dimensions carry the face's attributes and look, the rest are ignored.
- ``"adversarial"`` (the default): StyleGAN2 (Karras et al. 2020, arXiv 1912.04958) without its path-length
  regulariser: the non-saturating logistic loss, lazy R1 on real images every ``r1_every`` steps (scaled by that interval), style
  mixing, Adam with betas (0, 0.99), per-pixel noise and left-right flips of the real faces. It needs about 1M faces
  shown (~30,000 steps at batch 32): a GPU's work.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from erasekit.models.stylegan import Generator, StyleGAN2Config, _normalize_2nd_moment

from ..minicanvas.training import Stopwatch, check_finite, generator, log_progress, n_params, seeded
from .classifier import ClassifierTrainConfig, attribute_loss, train_attribute_classifier
from .data import IMAGE_SIZE, LATENT_UNIFORMS, FaceBank, encode, render_uniforms
from .discriminator import Discriminator, DiscriminatorConfig

logger = logging.getLogger(__name__)

OBJECTIVES = ("render", "adversarial")
PIXEL_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}
# objective -> (Adam lr, Adam betas, mapping MLP lr multiplier) when the config leaves them unset
OBJECTIVE_DEFAULTS = {"render": (0.002, (0.9, 0.99), 1.0), "adversarial": (0.0025, (0.0, 0.99), 0.01)}


@dataclass
class GanTrainConfig:
    """Architectures and training of the generator and discriminator (each comment says why its default)."""

    z_dim: int = 256  # latent size; 64 px faces need far less than the paper's 512
    w_dim: int = 256  # intermediate latent size
    mapping_layers: int = 4  # mapping MLP depth (the paper's 8 is for 1024 px)
    channel_base: int = 4096  # G channels 192-192-192-128-64 (4..64 px): ~3M parameters, ~6 MB in fp16; an
    # erasure step (two generator passes and a backward, batch 4) costs ~0.5 s on 2 CPU cores
    channel_max: int = 192  # G channel cap (256 doubles the per-sample weight modulation at 4-16 px)
    d_channel_base: int = 4096  # D channels, the same rule
    d_channel_max: int = 256  # D channel cap
    objective: str = "adversarial"  # or "render" (regression onto the renderer, CPU-sized, experimental; see above)
    steps: int = 30000  # optimiser steps of each network (~1M faces shown at batch 32)
    batch_size: int = 32  # faces per step
    lr: float | None = None  # Adam learning rate; None: 0.002 for "render", 0.0025 (the paper's) for "adversarial"
    mapping_lr_multiplier: float | None = None  # None: 1.0 for "render" (an MLP fit), 0.01 (the paper's) otherwise
    pixel_loss: str = "l1"  # "render": "l1" or "mse", on pixels and their differences
    edge_weight: float = 1.0  # "render": weight of the loss on pixel differences (keeps thin lines: glasses, earrings)
    attribute_weight: float = 0.0  # "render": weight of a teacher classifier's loss on the samples against their
    # latents' attributes (a classifier of its own, trained first on the stage's faces; never the evaluator's judge)
    teacher_steps: int = 1500  # the teacher's optimiser steps (the judge's recipe otherwise)
    r1_gamma: float = 0.05  # R1 weight; small images want small gamma (StyleGAN2-ADA uses 0.01-0.1 below 128 px)
    r1_every: int = 16  # lazy regularisation interval (the paper's)
    style_mixing: float = 0.9  # share of batches whose ws switch to a second latent at a random layer
    ema_images: int = 10_000  # EMA half-life in images (the paper's 10 kimg)
    ema_rampup: float = 0.05  # half-life at most this fraction of the images seen so far (early steps move faster)
    mbstd_group: int = 4  # minibatch-stddev group size

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"pixel_loss must be one of {', '.join(PIXEL_LOSSES)}, got {self.pixel_loss!r}")
        if self.objective == "render" and self.z_dim < LATENT_UNIFORMS:
            raise ValueError(f"the render objective reads {LATENT_UNIFORMS} latent dimensions; z_dim is {self.z_dim}")

    def resolved(self) -> tuple[float, tuple[float, float], float]:
        """``(lr, betas, mapping lr multiplier)`` with the objective's defaults filled in."""
        lr, betas, mult = OBJECTIVE_DEFAULTS[self.objective]
        return (
            lr if self.lr is None else self.lr,
            betas,
            mult if self.mapping_lr_multiplier is None else self.mapping_lr_multiplier,
        )

    def generator_config(self) -> StyleGAN2Config:
        return StyleGAN2Config(
            z_dim=self.z_dim,
            w_dim=self.w_dim,
            img_resolution=IMAGE_SIZE,
            mapping_layers=self.mapping_layers,
            lr_multiplier=self.resolved()[2],
            channel_base=self.channel_base,
            channel_max=self.channel_max,
        )

    def discriminator_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(IMAGE_SIZE, self.d_channel_base, self.d_channel_max, self.mbstd_group)


def _fakes(G: Generator, n: int, mixing: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Generated faces ``[n, 3, 64, 64]``; with probability ``mixing`` the ws switch latents at a random layer."""
    z = torch.randn(n, G.z_dim, generator=gen, device=device)
    ws = G.mapping(z)
    if torch.rand(1, generator=gen, device=device).item() < mixing:
        cut = int(torch.randint(1, G.num_ws, (1,), generator=gen, device=device))
        ws2 = G.mapping(torch.randn(n, G.z_dim, generator=gen, device=device), update_w_avg=False)
        ws = torch.cat([ws[:, :cut], ws2[:, cut:]], dim=1)
    return G.synthesis(ws, noise_mode="random", generator=gen)


def _reals(bank: FaceBank, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    idx = torch.randint(len(bank), (n,), generator=gen, device=device)
    x = bank.floats(idx) * 2 - 1
    flip = torch.rand(n, generator=gen, device=device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _d_step(G, D, opt_d, reals, cfg: GanTrainConfig, step: int, gen, device) -> torch.Tensor:
    with torch.no_grad():
        fakes = _fakes(G, len(reals), cfg.style_mixing, gen, device)
    loss = F.softplus(D(fakes)).mean() + F.softplus(-D(reals)).mean()
    if cfg.r1_gamma > 0 and step % cfg.r1_every == 0:
        x = reals.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        loss = loss + grad.square().sum(dim=[1, 2, 3]).mean() * (cfg.r1_gamma / 2) * cfg.r1_every
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    return loss.detach()


def _g_step(G, D, opt_g, cfg: GanTrainConfig, gen, device) -> torch.Tensor:
    D.requires_grad_(False)
    loss = F.softplus(-D(_fakes(G, cfg.batch_size, cfg.style_mixing, gen, device))).mean()
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    D.requires_grad_(True)
    return loss.detach()


@torch.no_grad()
def _ema_update(G_ema: Generator, G: Generator, cfg: GanTrainConfig, images_seen: int) -> None:
    half_life = min(cfg.ema_images, images_seen * cfg.ema_rampup) if cfg.ema_rampup else cfg.ema_images
    beta = 0.5 ** (cfg.batch_size / max(half_life, 1e-8))
    for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)


def latent_uniforms(z: torch.Tensor) -> torch.Tensor:
    """The renderer's uniforms ``[N, 39]`` of latents ``z`` ``[N, z_dim]``: the normal CDF of the first 39
    dimensions of ``z / rms(z)``, the vector the mapping network reads (see the module docstring)."""
    return torch.special.ndtr(_normalize_2nd_moment(z.double())[:, :LATENT_UNIFORMS]).clamp(0.0, 1.0 - 1e-12)


def render_latents(z: torch.Tensor, excluded=()) -> tuple[torch.Tensor, torch.Tensor]:
    """The faces the renderer draws for latents ``z``: images ``[N, 3, 64, 64]`` in ``[-1, 1]`` (on ``z``'s device)
    and label vectors ``[N, 7]``; ``excluded`` indicators are never drawn."""
    images, labels = [], []
    for u in latent_uniforms(z).cpu().numpy():
        image, attrs = render_uniforms(u, excluded)
        images.append(image)
        labels.append(encode(attrs))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(z.device, torch.float32)
    return x.div_(127.5).sub_(1.0), torch.from_numpy(np.stack(labels))


def render_loss(fake: torch.Tensor, real: torch.Tensor, edge_weight: float, kind: str = "l1") -> torch.Tensor:
    """``kind`` (L1 or MSE) between images plus ``edge_weight`` times the same between their horizontal and vertical
    differences."""
    distance = PIXEL_LOSSES[kind]
    loss = distance(fake, real)
    if edge_weight:
        for dim in (-1, -2):
            loss = loss + edge_weight * distance(fake.diff(dim=dim), real.diff(dim=dim))
    return loss


def _train_render(G, G_ema, cfg: GanTrainConfig, excluded, gen, device, clock, on_step, teacher) -> None:
    lr, betas, _ = cfg.resolved()
    opt = torch.optim.Adam(G.parameters(), lr=lr, betas=betas, eps=1e-8)
    G.train()
    for step in tqdm(range(cfg.steps), desc="stylegan2 (render)", unit="step", disable=None, mininterval=2.0):
        z = torch.randn(cfg.batch_size, G.z_dim, generator=gen, device=device)
        real, labels = render_latents(z, excluded)
        fake = G.synthesis(G.mapping(z), noise_mode="random", generator=gen)
        loss = render_loss(fake, real, cfg.edge_weight, cfg.pixel_loss)
        if teacher is not None:
            logits = teacher((fake.clamp(-1, 1) + 1) / 2)
            loss = loss + cfg.attribute_weight * attribute_loss(logits, labels.to(device))
        check_finite(loss, "stylegan2", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _ema_update(G_ema, G, cfg, (step + 1) * cfg.batch_size)
        log_progress("stylegan2 (render L1)", step, cfg.steps, loss, clock)
        if on_step is not None:
            on_step(step + 1, G_ema)


def train_gan(
    bank: FaceBank, cfg: GanTrainConfig, seed: int, device: torch.device, excluded=(), on_step=None
) -> tuple[Generator, dict]:
    """Train the StyleGAN2 with ``cfg.objective``; returns the EMA generator (eval mode, fp32) and its statistics.

    ``bank`` (the training faces, already without ``excluded``) feeds the adversarial objective; the render
    objective draws its own faces, never with an ``excluded`` indicator. ``on_step(steps_done, G_ema)``, when
    given, is called after every step (probes measure the generator as it trains; it must not change it).
    """
    if cfg.objective == "adversarial" and cfg.batch_size % min(cfg.mbstd_group, cfg.batch_size):
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by mbstd_group {cfg.mbstd_group}")
    with seeded("minifaces-gan-init", seed):
        G = Generator(cfg.generator_config()).to(device)
        D = Discriminator(cfg.discriminator_config()).to(device) if cfg.objective == "adversarial" else None
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    gen, clock = generator(device, "minifaces-gan-data", seed), Stopwatch(device)
    stats = {"objective": cfg.objective, "steps": cfg.steps, "batch_size": cfg.batch_size}
    if cfg.objective == "render":
        teacher = None
        if cfg.attribute_weight > 0:
            if bank is None:
                raise ValueError("attribute_weight > 0 trains a teacher classifier on the stage's faces: pass a bank")
            teacher_cfg = ClassifierTrainConfig(steps=cfg.teacher_steps, warmup=min(50, cfg.teacher_steps))
            teacher, stats["teacher"] = train_attribute_classifier(
                bank, teacher_cfg, seed, device, name="minifaces-gan-teacher"
            )
            teacher.requires_grad_(False)
        _train_render(G, G_ema, cfg, excluded, gen, device, clock, on_step, teacher)
        return G_ema.eval(), {"seconds": clock.seconds(), **stats, "generator_params": n_params(G_ema)}
    lr, betas, _ = cfg.resolved()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas, eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas, eps=1e-8)
    G.train()
    for step in tqdm(range(cfg.steps), desc="stylegan2", unit="step", disable=None, mininterval=2.0):
        d_loss = _d_step(G, D, opt_d, _reals(bank, cfg.batch_size, gen, device), cfg, step, gen, device)
        g_loss = _g_step(G, D, opt_g, cfg, gen, device)
        check_finite(d_loss + g_loss, "stylegan2", step)
        _ema_update(G_ema, G, cfg, (step + 1) * cfg.batch_size)
        log_progress("stylegan2 (D + G loss)", step, cfg.steps, d_loss + g_loss, clock)
        if on_step is not None:
            on_step(step + 1, G_ema)
    stats = {"seconds": clock.seconds(), **stats, "generator_params": n_params(G_ema)}
    return G_ema.eval(), {**stats, "discriminator_params": n_params(D)}
