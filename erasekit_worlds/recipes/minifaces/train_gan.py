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
  face of a pair towards the renderer's over that region (:func:`region_loss`). Optionally a teacher
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
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from erasekit._io import save_safetensors
from erasekit.models.stylegan import Generator, StyleGAN2Config, _normalize_2nd_moment

from ...minifaces.data import (
    BINARY_ATTRIBUTES,
    IMAGE_SIZE,
    LATENT_UNIFORMS,
    PROBABILITIES,
    FaceBank,
    encode,
    render_uniforms,
)
from ..training import Stopwatch, check_finite, generator, log_progress, n_params, progress, seeded
from .discriminator import Discriminator, DiscriminatorConfig
from .train_classifier import ClassifierTrainConfig, attribute_loss, train_attribute_classifier

logger = logging.getLogger(__name__)

OBJECTIVES = ("render", "adversarial")
PIXEL_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}
# objective -> (Adam lr, Adam betas, mapping MLP lr multiplier) when the config leaves them unset
OBJECTIVE_DEFAULTS = {"render": (0.006, (0.9, 0.99), 1.0), "adversarial": (0.0025, (0.0, 0.99), 0.01)}
FINAL_LR_DEFAULTS = {"render": 0.1, "adversarial": 1.0}


@dataclass
class GanTrainConfig:
    """Architectures and training of the generator and discriminator (each comment says why its default)."""

    z_dim: int = 64  # latent size; 64 px faces need far less than the paper's 512 (the renderer reads 39)
    w_dim: int = 256  # intermediate latent size
    mapping_layers: int = 4  # mapping MLP depth (the paper's 8 is for 1024 px)
    channel_base: int = 4096  # G channels 128-128-128-128-64 (4..64 px): 1.8M parameters, 3.6 MB in fp16; a
    # render step at batch 16 costs ~0.4 s on 2 CPU cores (docs/minifaces.md)
    channel_max: int = 128  # G channel cap (192: 2.9M parameters, 0.48 s per step)
    d_channel_base: int = 4096  # D channels, the same rule
    d_channel_max: int = 256  # D channel cap
    objective: str = "render"  # regression onto the renderer (CPU-sized), or "adversarial" (GPU-sized; see above)
    steps: int = 30000  # optimiser steps of each network (render: ~3.3 h on 2 CPU cores; adversarial wants batch 32)
    batch_size: int = 16  # faces per step
    lr: float | None = None  # Adam learning rate; None: 0.006 for "render", 0.0025 (the paper's) for "adversarial"
    mapping_lr_multiplier: float | None = None  # None: 1.0 for "render" (an MLP fit), 0.01 (the paper's) otherwise
    lr_final: float | None = None  # the lr falls along a cosine to this fraction of itself at the last step; None:
    # 0.1 for "render" (a regression settles at a lower lr), 1.0 (constant, the paper's) for "adversarial"
    pixel_loss: str = "l1"  # "render": "l1" or "mse", on pixels and their differences
    edge_weight: float = 1.0  # "render": weight of the loss on pixel differences (keeps thin lines: glasses, earrings)
    attribute_weight: float = 0.0  # "render": weight of a teacher classifier's loss on the samples against their
    # latents' attributes (a classifier of its own, trained first on the stage's faces; never the evaluator's judge)
    teacher_steps: int = 1500  # the teacher's optimiser steps (the judge's recipe otherwise)
    pair_weight: float = 0.5  # "render": the second half of each batch is the first with one binary attribute
    # flipped, and this weighs the L1 between the generator's and the renderer's difference images of each pair,
    # averaged over the region the flip changes (supervises what each attribute's latent dimension draws; small
    # shapes get as much weight as large ones)
    pair_distance: str = "l1"  # "render": "l1" or "mse" between the pairs' difference images. L1 pulls towards the
    # median difference, which is "nothing" while the network cannot yet tell an attribute's colour (earrings come
    # in 4 colours: per channel the median change is about 0), so it never starts drawing it; MSE pulls towards
    # the mean change, which is not 0, so MSE teaches small many-coloured attributes that L1 leaves undrawn
    region_weight: float = 0.0  # "render": weight of the ``pair_distance`` between each face of a pair and the
    # renderer's, averaged over the pair's flip region (:func:`region_loss`). The pair term only sees differences:
    # a half-drawn earring on both faces has the right difference, and the whole-image pixel loss hardly sees a
    # few pixels, so an attribute can stay a ramp along its latent instead of a step; this term pulls each face to
    # the renderer's where the attribute is drawn
    flip_weights: dict | None = None  # "render": relative chance of each binary attribute being the one a pair
    # flips, e.g. {"earrings": 4} (unnamed ones weigh 1); None: each equally
    r1_gamma: float = 0.05  # R1 weight; small images want small gamma (StyleGAN2-ADA uses 0.01-0.1 below 128 px)
    r1_every: int = 16  # lazy regularisation interval (the paper's)
    style_mixing: float = 0.9  # share of batches whose ws switch to a second latent at a random layer
    ema_images: int = 10_000  # EMA half-life in images (the paper's 10 kimg)
    ema_rampup: float = 0.05  # half-life at most this fraction of the images seen so far (early steps move faster)
    mbstd_group: int = 4  # minibatch-stddev group size
    precision: str = "float32"  # "render": the generator's passes in "float32" or under "bfloat16" autocast
    # (weights, Adam and the losses stay fp32); 15 % less time per step on this CPU (AVX512-BF16; docs/minifaces.md)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"pixel_loss must be one of {', '.join(PIXEL_LOSSES)}, got {self.pixel_loss!r}")
        if self.objective == "render" and self.z_dim < LATENT_UNIFORMS:
            raise ValueError(f"the render objective reads {LATENT_UNIFORMS} latent dimensions; z_dim is {self.z_dim}")
        if self.lr_final is not None and not 0 < self.lr_final <= 1:
            raise ValueError(f"lr_final is a fraction of lr in (0, 1], got {self.lr_final}")
        if self.pair_weight < 0:
            raise ValueError(f"pair_weight must be >= 0, got {self.pair_weight}")
        if self.region_weight < 0:
            raise ValueError(f"region_weight must be >= 0, got {self.region_weight}")
        if self.region_weight and not self.pair_weight:
            raise ValueError("region_weight weighs the flip region of pairs of faces: it needs pair_weight > 0")
        if self.pair_distance not in PIXEL_LOSSES:
            raise ValueError(f"pair_distance must be one of {', '.join(PIXEL_LOSSES)}, got {self.pair_distance!r}")
        if self.flip_weights is not None:
            if not isinstance(self.flip_weights, dict):
                raise ValueError(
                    f"flip_weights maps attribute names to weights, e.g. {{earrings: 4}}; got {self.flip_weights!r}"
                )
            unknown = sorted(set(self.flip_weights) - set(BINARY_ATTRIBUTES))
            if unknown:
                raise ValueError(
                    f"flip_weights: unknown attribute(s) {', '.join(map(str, unknown))}; the binary "
                    f"attributes are {', '.join(BINARY_ATTRIBUTES)}"
                )
            bad = {
                k: v
                for k, v in self.flip_weights.items()
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0
            }
            if bad:
                raise ValueError(f"flip_weights must be numbers >= 0, got {bad}")
            self.flip_weights = {k: float(v) for k, v in self.flip_weights.items()}
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision != "float32" and self.objective != "render":
            raise ValueError("precision other than float32 is for the render objective (R1 wants fp32 gradients)")
        if self.pair_weight and (self.batch_size < 2 or self.batch_size % 2):
            raise ValueError(
                f"pair_weight > 0 trains on pairs of faces: batch_size must be even, got {self.batch_size}"
            )

    def resolved(self) -> tuple[float, tuple[float, float], float]:
        """``(lr, betas, mapping lr multiplier)`` with the objective's defaults filled in."""
        lr, betas, mult = OBJECTIVE_DEFAULTS[self.objective]
        return (
            lr if self.lr is None else self.lr,
            betas,
            mult if self.mapping_lr_multiplier is None else self.mapping_lr_multiplier,
        )

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based): ``lr``, falling along a cosine to ``lr_final``
        times itself at the last step (a function of the step alone, so a resumed run follows the same curve)."""
        lr = self.resolved()[0]
        final = FINAL_LR_DEFAULTS[self.objective] if self.lr_final is None else self.lr_final
        progress = step / max(1, self.steps - 1)
        return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))

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


def flipped_latents(x: torch.Tensor, gen: torch.Generator, excluded=(), weights: dict | None = None) -> torch.Tensor:
    """Partners of the normalised latents ``x`` ``[N, z_dim]`` (rms 1 per row): each with one binary attribute (drawn
    among those not ``excluded``: uniformly, or in proportion to ``weights``, a name -> weight mapping where
    unnamed attributes weigh 1) on the other side of its threshold, its uniform drawn uniformly there,
    and everything else the renderer reads unchanged. The latent dimensions the renderer ignores absorb the change
    of squared norm, so the partner's rms stays 1 and its other uniforms stay exactly the same; where they hold too
    little for that (rare unless ``z_dim`` is close to 39), the partner is renormalised and its other uniforms move
    a little."""
    names = [a for a in BINARY_ATTRIBUTES if a not in set(excluded)]
    if not names:
        raise ValueError("every binary attribute is excluded: there is nothing to flip")
    n, z_dim = x.shape
    slots = torch.tensor([BINARY_ATTRIBUTES.index(a) for a in names], device=x.device)
    probs = torch.tensor([PROBABILITIES[a] for a in names], dtype=x.dtype, device=x.device)
    if weights is None:
        pick = torch.randint(len(names), (n,), generator=gen, device=x.device)
    else:
        chances = torch.tensor([float(weights.get(a, 1.0)) for a in names], dtype=torch.float64)
        if not chances.sum() > 0:
            raise ValueError(f"flip weights {weights} leave no attribute to flip among {', '.join(names)}")
        pick = torch.multinomial(chances.to(x.device), n, replacement=True, generator=gen)
    dim, p = slots[pick], probs[pick]
    rows = torch.arange(n, device=x.device)
    old = x[rows, dim]
    present = torch.special.ndtr(old.double()).to(x.dtype) < p
    r = torch.rand(n, generator=gen, device=x.device, dtype=x.dtype)
    u = torch.where(present, p + (1 - p) * r, p * r).clamp(1e-6, 1 - 1e-6)
    new = torch.special.ndtri(u.double()).to(x.dtype)
    out = x.clone()
    out[rows, dim] = new
    if z_dim > LATENT_UNIFORMS:
        spare = out[:, LATENT_UNIFORMS:]
        held = spare.square().sum(dim=1)
        wanted = held + old.square() - new.square()
        ok = wanted > 0.1 * held
        out[:, LATENT_UNIFORMS:] = torch.where(
            ok[:, None], spare * (wanted.clamp_min(1e-12) / held).sqrt()[:, None], spare
        )
    return _normalize_2nd_moment(out)


def flip_region(d_real: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` mask of the pixels where the renderer's difference images ``d_real`` ``[N, 3, H, W]`` change
    (by more than 1/64 in some channel), and their 8 neighbours."""
    changed = (d_real.abs().amax(dim=1, keepdim=True) > 1 / 64).float()
    return F.max_pool2d(changed, 3, stride=1, padding=1)


def _region_mean(fake: torch.Tensor, real: torch.Tensor, region: torch.Tensor, kind: str) -> torch.Tensor:
    """``kind`` (L1 or MSE) between ``fake`` and ``real`` ``[N, C, H, W]``, averaged over the channels and over each
    image's ``region`` ``[N, 1, H, W]`` (an empty region counts as one pixel), then over the batch."""
    if kind not in PIXEL_LOSSES:
        raise ValueError(f"kind must be one of {', '.join(PIXEL_LOSSES)}, got {kind!r}")
    region = region.to(fake.dtype)
    gap = (fake - real).abs() if kind == "l1" else (fake - real).square()
    error = (gap.mean(dim=1, keepdim=True) * region).flatten(1).sum(dim=1)
    return (error / region.flatten(1).sum(dim=1).clamp_min(1.0)).mean()


def pair_loss(fake: torch.Tensor, real: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """``kind`` (L1, or MSE: squared error) between the generator's and the renderer's difference images of the
    pairs ``(i, i + N/2)``, averaged over the pixels where the renderer's pair differs (and their 8 neighbours): the
    flip's region gets the same weight whatever its size, and pixels it leaves alone are the pixel loss's business
    (weighting them here would reward a generator that ignores its latent)."""
    half = len(fake) // 2
    d_fake, d_real = fake[:half] - fake[half:], real[:half] - real[half:]
    return _region_mean(d_fake, d_real, flip_region(d_real), kind)


def region_loss(fake: torch.Tensor, real: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """``kind`` (L1 or MSE) between the generator's faces and the renderer's, averaged over each pair's flip region
    (:func:`flip_region` of the pair ``(i, i + N/2)``, on both of its faces): the absolute level of what the flip
    draws there (present on one face, absent on the other), which :func:`pair_loss` leaves free."""
    half = len(fake) // 2
    return _region_mean(fake, real, flip_region(real[:half] - real[half:]).repeat(2, 1, 1, 1), kind)


def render_loss(fake: torch.Tensor, real: torch.Tensor, edge_weight: float, kind: str = "l1") -> torch.Tensor:
    """``kind`` (L1 or MSE) between images plus ``edge_weight`` times the same between their horizontal and vertical
    differences."""
    distance = PIXEL_LOSSES[kind]
    loss = distance(fake, real)
    if edge_weight:
        for dim in (-1, -2):
            loss = loss + edge_weight * distance(fake.diff(dim=dim), real.diff(dim=dim))
    return loss


def _render_step(G, opt, cfg: GanTrainConfig, excluded, gen, device, teacher) -> torch.Tensor:
    if cfg.pair_weight:
        z = _normalize_2nd_moment(torch.randn(cfg.batch_size // 2, G.z_dim, generator=gen, device=device))
        z = torch.cat([z, flipped_latents(z, gen, excluded, cfg.flip_weights)])
    else:
        z = torch.randn(cfg.batch_size, G.z_dim, generator=gen, device=device)
    real, labels = render_latents(z, excluded)
    dtype = PRECISIONS[cfg.precision]
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        fake = G.synthesis(G.mapping(z), noise_mode="random", generator=gen)
    fake = fake.float()  # the losses in fp32
    loss = render_loss(fake, real, cfg.edge_weight, cfg.pixel_loss)
    if cfg.pair_weight:
        loss = loss + cfg.pair_weight * pair_loss(fake, real, cfg.pair_distance)
    if cfg.region_weight:
        loss = loss + cfg.region_weight * region_loss(fake, real, cfg.pair_distance)
    if teacher is not None:
        logits = teacher((fake.clamp(-1, 1) + 1) / 2)
        loss = loss + cfg.attribute_weight * attribute_loss(logits, labels.to(device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


# ---------------------------------------------------------------------------------------------------- checkpoints

CHECKPOINT_KEY = "erasekit_minifaces_gan_checkpoint"


def _checkpoint_identity(cfg: GanTrainConfig, seed: int, excluded, init_digest: str | None = None) -> dict:
    identity = {"config": asdict(cfg), "seed": seed, "excluded": sorted(excluded)}
    if init_digest is not None:
        identity["init"] = init_digest
    return identity


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes and values, in name order): what a warm start started from."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        v = value.detach().cpu().contiguous()
        h.update(f"{name}:{v.dtype}:{tuple(v.shape)}".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def config_differences(ours: StyleGAN2Config, theirs: StyleGAN2Config) -> str:
    """``"field 'old' (this run: 'new'), ..."`` for the fields where two generator configs differ ('' when none)."""
    a, b = asdict(ours), asdict(theirs)
    return ", ".join(f"{k} {b.get(k)!r} (this run: {a[k]!r})" for k in sorted(a) if a[k] != b.get(k))


def warm_start(G: Generator, init: Generator) -> None:
    """Copy ``init``'s weights (and ``w_avg``) into the freshly built ``G``; a clear error when the architectures
    differ (a warm start continues the same network, it does not convert one)."""
    detail = config_differences(G.config, init.config)
    if detail:
        raise ValueError(
            f"the generator to continue has another architecture: {detail}; continue it with the settings it was "
            "trained with, or train from scratch"
        )
    G.load_state_dict(init.state_dict())


def save_checkpoint(path, nets: dict, opts: dict, gen: torch.Generator, steps_done: int, seconds: float, identity):
    """Write the whole training state (networks, Adam moments, the data generator's RNG state, steps done) to one
    ``.safetensors`` file, atomically: an interrupted run loses at most the steps since the last checkpoint."""
    tensors = {f"{name}.{k}": v for name, net in nets.items() for k, v in net.state_dict().items()}
    for name, opt in opts.items():
        for i, state in opt.state_dict()["state"].items():
            tensors.update({f"{name}.{i}.{k}": torch.as_tensor(v) for k, v in state.items()})
    tensors["rng"] = gen.get_state()
    meta = {"steps_done": steps_done, "seconds": seconds, **identity}
    save_safetensors(tensors, path, {CHECKPOINT_KEY: json.dumps(meta)})


def checkpoint_generator(path, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """The EMA generator (eval mode, fp32) saved in a training checkpoint, and the checkpoint's record (its
    ``config``, ``seed``, ``steps_done``, ``seconds``...): probes measure a run as it trains."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            record = json.loads((f.metadata() or {}).get(CHECKPOINT_KEY, "null"))
            state = {k[len("G_ema.") :]: f.get_tensor(k) for k in f.keys() if k.startswith("G_ema.")}
    except (SafetensorError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable MiniFaces GAN checkpoint ({e})") from e
    if not isinstance(record, dict) or not state:
        raise ValueError(f"{path} is not a MiniFaces GAN checkpoint (no {CHECKPOINT_KEY!r} header or no G_ema)")
    G = Generator(GanTrainConfig(**record["config"]).generator_config())
    G.load_state_dict(state)
    return G.to(device).eval(), record


def load_checkpoint(path, nets: dict, opts: dict, gen: torch.Generator, identity) -> tuple[int, float]:
    """Restore what :func:`save_checkpoint` wrote into freshly built ``nets``/``opts``/``gen``; returns ``(steps done,
    seconds spent so far)``. A checkpoint of another configuration, seed or exclusion list is refused."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {}).get(CHECKPOINT_KEY, "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable MiniFaces GAN checkpoint ({e}); delete it to start over") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not a MiniFaces GAN checkpoint (no {CHECKPOINT_KEY!r} header); delete it")
    theirs = {k: meta.get(k) for k in {*identity, "init"}}
    if json.loads(json.dumps(theirs)) != json.loads(json.dumps({"init": None, **identity})):
        changed = sorted(
            k for k in identity["config"] if theirs["config"] and theirs["config"].get(k) != identity["config"][k]
        )
        others = {"seed": "seed", "excluded": "exclusion list", "init": "warm-start generator"}
        differ = [text for k, text in others.items() if theirs.get(k) != identity.get(k)]
        differ = [f"config fields {changed}"] if changed else differ
        detail = " and ".join(differ) + (" differ" if changed or len(differ) > 1 else " differs")
        raise ValueError(
            f"{path} was written by a run with other settings ({detail}); resume with the same settings, "
            "or delete the checkpoint (or use another work folder) to train from scratch"
        )
    for name, net in nets.items():
        prefix = f"{name}."
        net.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, opt in opts.items():
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            head, _, rest = k.partition(".")
            if head == name:
                i, _, field_ = rest.partition(".")
                state.setdefault(int(i), {})[field_] = v
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    gen.set_state(tensors["rng"])
    return int(meta["steps_done"]), float(meta["seconds"])


def train_gan(
    bank: FaceBank,
    cfg: GanTrainConfig,
    seed: int,
    device: torch.device,
    excluded=(),
    on_step=None,
    checkpoint=None,
    checkpoint_every: int = 500,
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
    with seeded("minifaces-gan-init", seed):
        G = Generator(cfg.generator_config()).to(device)
        D = Discriminator(cfg.discriminator_config()).to(device) if cfg.objective == "adversarial" else None
    init_digest = None
    if init is not None:
        warm_start(G, init)
        init_digest = weights_digest(init)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    gen, clock = generator(device, "minifaces-gan-data", seed), Stopwatch(device)
    stats = {"objective": cfg.objective, "steps": cfg.steps, "batch_size": cfg.batch_size}
    if init_digest is not None:
        stats["init_sha256"] = init_digest
    lr, betas, _ = cfg.resolved()
    opts = {"opt_g": torch.optim.Adam(G.parameters(), lr=lr, betas=betas, eps=1e-8)}
    nets = {"G": G, "G_ema": G_ema}
    teacher = None
    if cfg.objective == "render":
        if cfg.attribute_weight > 0:
            if bank is None:
                raise ValueError("attribute_weight > 0 trains a teacher classifier on the stage's faces: pass a bank")
            teacher_cfg = ClassifierTrainConfig(steps=cfg.teacher_steps, warmup=min(50, cfg.teacher_steps))
            teacher, stats["teacher"] = train_attribute_classifier(
                bank, teacher_cfg, seed, device, name="minifaces-gan-teacher"
            )
            teacher.requires_grad_(False)
    else:
        opts["opt_d"] = torch.optim.Adam(D.parameters(), lr=lr, betas=betas, eps=1e-8)
        nets["D"] = D

    identity = _checkpoint_identity(cfg, seed, excluded, init_digest)
    start, earlier_seconds = 0, 0.0
    if checkpoint is not None and Path(checkpoint).exists():
        start, earlier_seconds = load_checkpoint(checkpoint, nets, opts, gen, identity)
        logger.info("stylegan2: resuming from %s after %d of %d steps", checkpoint, start, cfg.steps)
        stats["resumed_at_steps"] = start

    def save(done: int) -> None:
        save_checkpoint(checkpoint, nets, opts, gen, done, earlier_seconds + clock.seconds(), identity)

    desc = "stylegan2 (render)" if cfg.objective == "render" else "stylegan2"
    G.train()
    for step in progress(range(start, cfg.steps), desc, initial=start, total=cfg.steps):
        for opt in opts.values():
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(step)
        if cfg.objective == "render":
            loss = _render_step(G, opts["opt_g"], cfg, excluded, gen, device, teacher)
        else:
            d_loss = _d_step(G, D, opts["opt_d"], _reals(bank, cfg.batch_size, gen, device), cfg, step, gen, device)
            loss = d_loss + _g_step(G, D, opts["opt_g"], cfg, gen, device)
        check_finite(loss, "stylegan2", step)
        _ema_update(G_ema, G, cfg, (step + 1) * cfg.batch_size)
        log_progress(
            "stylegan2 (render loss)" if cfg.objective == "render" else "stylegan2 (D + G loss)",
            step,
            cfg.steps,
            loss,
            clock,
        )
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < cfg.steps:
            save(step + 1)
        if on_step is not None:
            on_step(step + 1, G_ema)
    stats = {"seconds": round(earlier_seconds + clock.seconds(), 2), **stats, "generator_params": n_params(G_ema)}
    if D is not None:
        stats["discriminator_params"] = n_params(D)
    return G_ema.eval(), stats
