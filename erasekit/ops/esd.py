"""ESD's training target (Gandikota et al., "Erasing Concepts from Diffusion Models", arXiv 2303.07345)."""

from __future__ import annotations

import torch


def esd_target(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, negative_guidance: float) -> torch.Tensor:
    """ε*(x_t, ∅) − η·(ε*(x_t, c) − ε*(x_t, ∅)): the frozen model's prediction guided *away* from the concept.

    Args:
        eps_uncond: frozen model's prediction with the empty prompt.
        eps_cond: frozen model's prediction with the concept prompt.
        negative_guidance: η ≥ 0; 0 maps the concept to the unconditional prediction.

    Example:
        >>> esd_target(torch.tensor([1.0]), torch.tensor([3.0]), 1.0)
        tensor([-1.])
    """
    return eps_uncond - negative_guidance * (eps_cond - eps_uncond)
