"""The render objective of the MiniFaces generator stage: the generator regressed onto the renderer.

Every face is a function of 39 uniforms (:func:`erasekit_worlds.minifaces.data.render_uniforms`): latent ``z`` is
drawn as usual, the face of ``u = Phi(z / rms(z))[:39]`` (:func:`latent_uniforms`) is drawn, and the generator's
sample of ``z`` is pulled towards it (:func:`render_loss`); pairs of faces one attribute apart
(:func:`flipped_latents`) supervise what each attribute's latent dimension draws (:func:`pair_loss`,
:func:`region_loss`). See :mod:`~erasekit_worlds.recipes.minifaces.train_gan` for the whole stage.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from erasekit.models.stylegan import _normalize_2nd_moment

from ...minifaces.data import BINARY_ATTRIBUTES, LATENT_UNIFORMS, PROBABILITIES, encode, render_uniforms
from .gan_config import PIXEL_LOSSES, PRECISIONS, GanTrainConfig
from .train_classifier import attribute_loss


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


def render_step(G, opt, cfg: GanTrainConfig, excluded, gen, device, teacher) -> torch.Tensor:
    """One optimiser step of the render objective (see the module docstring); returns the detached loss."""
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
