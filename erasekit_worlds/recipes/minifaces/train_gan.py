"""Recipe stage: the MiniFaces StyleGAN2 (erasekit's own generator, :mod:`erasekit.models.stylegan`).

Two objectives train the same architecture; both ship an exponential moving average of the generator (half-life
``ema_images`` images, ramped up over the first steps).

- ``"render"`` (the default, sized for a CPU; docs/minifaces.md records what it has learned so far): every face is
  a function of 39 uniforms (:func:`erasekit_worlds.minifaces.data.render_uniforms`), so the generator is regressed
  onto the renderer: latent ``z`` is drawn as usual, the face of ``u = Phi(z / rms(z))[:39]`` (the normal CDF of the
  mapping network's normalised input) is drawn, and the generator's sample of ``z`` is pulled towards it
  (``pixel_loss``, L1 or MSE, on pixels and on their horizontal and vertical differences). With ``pair_weight``,
  half of each batch is the other half with one binary attribute flipped (:func:`flipped_latents`), and the
  generator's difference image of each pair is pulled towards the renderer's over the region the flip changes
  (:func:`pair_loss`, L1 or squared error: ``pair_distance``): small shapes (earrings, a smile) get as much weight
  as a hat, and ``flip_weights`` chooses which attributes the pairs flip most; ``region_weight`` also pulls each
  face of a pair towards the renderer's over that region (:func:`region_loss`; these live in
  :mod:`~erasekit_worlds.recipes.minifaces.render_objective`). Optionally a teacher
  classifier's loss on the samples. One generator pass per face and no discriminator; the sample distribution is
  the data's by construction (``z``'s uniforms are uniform), so its quality is only a matter of how well the
  network draws. The latent space is StyleGAN2's (the mapping network, per-layer ws, truncation towards
  ``w_avg``); its first 39 dimensions carry the face's attributes and look, the rest are ignored.
- ``"adversarial"`` (for a GPU): StyleGAN2 (Karras et al. 2020, arXiv 1912.04958) without its path-length
  regulariser: the non-saturating logistic loss, lazy R1 on real images every ``r1_every`` steps (scaled by that
  interval), style mixing, Adam with betas (0, 0.99), per-pixel noise and left-right flips of the real faces. It
  needs about 1M faces shown (~30,000 steps at batch 32): a GPU's work.

Both save their whole state to a checkpoint every ``checkpoint_every`` steps when given one (:func:`train_gan`), and
resume from it with the same result as an uninterrupted run. Both can start from an earlier generator's weights
instead of the seed's random ones (``init``: a warm start, so a long training can be split into several runs, each
with a fresh schedule of ``steps``).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from erasekit.models.stylegan import Generator

from ...minifaces.data import FaceBank
from ..checkpoint import CHECKPOINT_EVERY
from ..training import Stopwatch, check_finite, generator, log_progress, n_params, progress, seeded
from .discriminator import Discriminator
from .gan_checkpoint import (
    checkpoint_generator,
    checkpoint_identity,
    load_checkpoint,
    save_checkpoint,
    warm_start,
    weights_digest,
)
from .gan_config import GanTrainConfig
from .render_objective import flip_region, flipped_latents, render_latents, render_step
from .train_classifier import ClassifierTrainConfig, train_attribute_classifier

__all__ = [  # the stage's entry point and settings, and the parts benchmark scripts read from here
    "GanTrainConfig",
    "checkpoint_generator",
    "flip_region",
    "flipped_latents",
    "render_latents",
    "train_gan",
]

logger = logging.getLogger(__name__)


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


def train_gan(
    bank: FaceBank,
    cfg: GanTrainConfig,
    seed: int,
    device: torch.device,
    excluded=(),
    on_step=None,
    checkpoint=None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    init: Generator | None = None,
) -> tuple[Generator, dict]:
    """Train the StyleGAN2 with ``cfg.objective``; returns the EMA generator (eval mode, fp32) and its statistics.

    ``bank`` (the training faces, already without ``excluded``) feeds the adversarial objective; the render
    objective draws its own faces, never with an ``excluded`` indicator. ``on_step(steps_done, G_ema)``, when
    given, is called after every step (probes measure the generator as it trains; it must not change it).
    ``checkpoint`` (a ``.safetensors`` path): the training state is saved there every ``checkpoint_every`` steps,
    and a run that finds it there resumes from it (same settings required), ending with the same weights as an
    uninterrupted run. ``init`` (a generator of the same architecture): start the generator and its EMA from its
    weights instead of the seed's random ones, then train ``cfg.steps`` steps on a fresh learning-rate schedule
    (the discriminator, for the adversarial objective, still starts from scratch); the statistics record its
    weights' sha256 as ``"init_sha256"``.
    """
    if cfg.objective == "adversarial" and cfg.batch_size % min(cfg.mbstd_group, cfg.batch_size):
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by mbstd_group {cfg.mbstd_group}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    nets, init_digest = _networks(cfg, seed, device, init)
    gen, clock = generator(device, "minifaces-gan-data", seed), Stopwatch(device)
    stats = {"objective": cfg.objective, "steps": cfg.steps, "batch_size": cfg.batch_size}
    if init_digest is not None:
        stats["init_sha256"] = init_digest
    opts = _optimisers(cfg, nets)
    teacher = _teacher(bank, cfg, seed, device, stats)
    identity = checkpoint_identity(cfg, seed, excluded, init_digest)
    start, earlier_seconds = 0, 0.0
    if checkpoint is not None and Path(checkpoint).exists():
        start, earlier_seconds = load_checkpoint(checkpoint, nets, opts, gen, identity)
        logger.info("stylegan2: resuming from %s after %d of %d steps", checkpoint, start, cfg.steps)
        stats["resumed_at_steps"] = start

    def after(step: int) -> None:
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(checkpoint, nets, opts, gen, step + 1, earlier_seconds + clock.seconds(), identity)
        if on_step is not None:
            on_step(step + 1, nets["G_ema"])

    _steps(nets, opts, (cfg, excluded, bank, teacher), gen, device, clock, start, after)
    G_ema = nets["G_ema"]
    stats = {"seconds": round(earlier_seconds + clock.seconds(), 2), **stats, "generator_params": n_params(G_ema)}
    if "D" in nets:
        stats["discriminator_params"] = n_params(nets["D"])
    return G_ema.eval(), stats


def _networks(cfg: GanTrainConfig, seed: int, device: torch.device, init: Generator | None) -> tuple[dict, str | None]:
    """The seed's generator (or ``init``'s weights in it), its EMA copy and, for the adversarial objective, the
    discriminator; also ``init``'s weights digest (None without a warm start)."""
    with seeded("minifaces-gan-init", seed):
        G = Generator(cfg.generator_config()).to(device)
        D = Discriminator(cfg.discriminator_config()).to(device) if cfg.objective == "adversarial" else None
    init_digest = None
    if init is not None:
        warm_start(G, init)
        init_digest = weights_digest(init)
    nets = {"G": G, "G_ema": copy.deepcopy(G).eval().requires_grad_(False)}
    if D is not None:
        nets["D"] = D
    return nets, init_digest


def _optimisers(cfg: GanTrainConfig, nets: dict) -> dict:
    """Adam for the generator (and the discriminator), with the objective's learning rate and betas."""
    lr, betas, _ = cfg.resolved()
    opts = {"opt_g": torch.optim.Adam(nets["G"].parameters(), lr=lr, betas=betas, eps=1e-8)}
    if "D" in nets:
        opts["opt_d"] = torch.optim.Adam(nets["D"].parameters(), lr=lr, betas=betas, eps=1e-8)
    return opts


def _teacher(bank: FaceBank | None, cfg: GanTrainConfig, seed: int, device: torch.device, stats: dict):
    """The render objective's teacher classifier, trained first on the stage's faces (None unless
    ``attribute_weight`` > 0); its statistics go into ``stats["teacher"]``."""
    if cfg.objective != "render" or cfg.attribute_weight <= 0:
        return None
    if bank is None:
        raise ValueError("attribute_weight > 0 trains a teacher classifier on the stage's faces: pass a bank")
    teacher_cfg = ClassifierTrainConfig(steps=cfg.teacher_steps, warmup=min(50, cfg.teacher_steps))
    teacher, stats["teacher"] = train_attribute_classifier(
        bank, teacher_cfg, seed, device, name="minifaces-gan-teacher"
    )
    return teacher.requires_grad_(False)


def _steps(nets: dict, opts: dict, task: tuple, gen: torch.Generator, device, clock: Stopwatch, start: int, after):
    """Steps ``start`` .. ``cfg.steps - 1`` of the objective (``task``: the config, the excluded indicators, the
    faces and the teacher), each followed by the EMA update and ``after(step)``."""
    cfg, excluded, bank, teacher = task
    G, G_ema, D = nets["G"], nets["G_ema"], nets.get("D")
    render = cfg.objective == "render"
    G.train()
    for step in progress(
        range(start, cfg.steps), "stylegan2 (render)" if render else "stylegan2", initial=start, total=cfg.steps
    ):
        for opt in opts.values():
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(step)
        if render:
            loss = render_step(G, opts["opt_g"], cfg, excluded, gen, device, teacher)
        else:
            d_loss = _d_step(G, D, opts["opt_d"], _reals(bank, cfg.batch_size, gen, device), cfg, step, gen, device)
            loss = d_loss + _g_step(G, D, opts["opt_g"], cfg, gen, device)
        check_finite(loss, "stylegan2", step)
        _ema_update(G_ema, G, cfg, (step + 1) * cfg.batch_size)
        log_progress("stylegan2 (render loss)" if render else "stylegan2 (D + G loss)", step, cfg.steps, loss, clock)
        after(step)
