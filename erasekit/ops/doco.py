"""DoCo's domain-correction losses (Wu et al., "Unlearning Concepts in Diffusion Model via Concept Domain
Correction", AAAI 2025, arXiv 2405.15304), and the surrogate that carries a hand-made gradient through a loop.

A discriminator on latents learns the anchor's x̂₀ as real and the concept's x̂₀ as fake (BCE); the generator loss
asks the discriminator to read the concept's x̂₀ as real. The gradient surgery between the unlearning and the
preservation gradients is :mod:`erasekit.ops.surgery`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """½·(BCE(real, 1) + BCE(fake, 0)), each averaged over its logits (one per patch for a PatchGAN).

    Example:
        >>> discriminator_loss(torch.zeros(2), torch.zeros(3))  # an undecided discriminator: ln 2
        tensor(0.6931)
    """
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    )


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE(fake, 1): small when the discriminator reads the concept's x̂₀ as the anchor's (the non-saturating GAN
    loss of Goodfellow et al. 2014).

    Example:
        >>> generator_loss(torch.zeros(4))
        tensor(0.6931)
    """
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def surrogate_loss(params: dict[str, torch.Tensor], grads: dict, value: torch.Tensor) -> torch.Tensor:
    """A scalar whose value is ``value`` and whose gradient w.r.t. each ``params[k]`` is exactly ``grads[k]``.

    Σ⟨p, g⟩ − sg[Σ⟨p, g⟩] + sg[value]: a loop that calls ``loss.backward()`` then applies an update made by
    gradient surgery unchanged. A missing (``None``) gradient leaves that parameter's ``.grad`` untouched; with no
    gradient at all the result is a leaf, so ``backward()`` touches no parameter.

    Example:
        >>> p = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> loss = surrogate_loss({"p": p}, {"p": torch.tensor([3.0, -1.0])}, torch.tensor(7.0))
        >>> loss.backward(); float(loss.detach()), p.grad
        (7.0, tensor([ 3., -1.]))
    """
    terms = [(p * grads[k]).sum() for k, p in params.items() if grads.get(k) is not None]
    if not terms:
        return value.detach().clone().requires_grad_(True)
    s = torch.stack(terms).sum()
    return s - s.detach() + value.detach()
