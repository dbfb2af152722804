"""SalUn's weight saliency (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency",
ICLR 2024, arXiv 2310.12508): the CFG-combined forget loss and the global top-k mask over its gradient magnitudes.

Two mistakes of a known port are pinned by tests: the "null" prediction must use the *empty* prompt (not the concept),
and the mask keeps the *most* salient weights (largest |gradient|), not the least.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cfg_combination(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """(1 + w)·ε(x_t, c) − w·ε(x_t, ∅): the classifier-free-guided prediction SalUn's saliency is measured on.

    Args:
        eps_cond: the prediction with the concept prompt.
        eps_uncond: the prediction with the empty prompt ("" — never the concept itself).
        guidance: w (SalUn uses 7.5).

    Example:
        >>> cfg_combination(torch.tensor([2.0]), torch.tensor([1.0]), 7.5)
        tensor([9.5000])
    """
    return (1 + guidance) * eps_cond - guidance * eps_uncond


def saliency_loss(noise: torch.Tensor, eps_cond: torch.Tensor, eps_uncond: torch.Tensor, guidance: float):
    """L_f = MSE(noise, (1 + w)·ε(x_t, c_f) − w·ε(x_t, ∅)), whose gradient magnitude is the weight saliency."""
    return F.mse_loss(cfg_combination(eps_cond.float(), eps_uncond.float(), guidance), noise.float())


def global_topk_mask(scores: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Keep the ``ratio`` fraction of entries with the largest score, ranked globally across all tensors.

    ``k = round(ratio · N)`` entries are kept (N = total entries). Ties at the threshold are broken
    deterministically: earlier tensors (in ``scores``' order) and, within a tensor, lower flat indices win, so the
    mask holds exactly ``k`` entries. ``ratio = 0`` keeps nothing, ``ratio = 1`` keeps everything.

    Args:
        scores: non-negative saliency per parameter tensor (e.g. accumulated |∇L_f|), keyed by parameter name.
        ratio: the fraction to keep, in [0, 1].

    Returns:
        Boolean masks with the shapes of ``scores``.

    Example:
        >>> global_topk_mask({"a": torch.tensor([0.1, 5.0]), "b": torch.tensor([3.0, 0.2])}, 0.5)
        {'a': tensor([False,  True]), 'b': tensor([ True, False])}
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio!r}.")
    if not scores:
        raise ValueError("global_topk_mask needs at least one score tensor.")
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores.values()])
    if not torch.isfinite(flat).all():
        raise ValueError("Saliency scores contain NaN/Inf; the forget loss diverged (check the forget data).")
    k = int(round(ratio * flat.numel()))
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k == flat.numel():
        keep[:] = True
    elif k > 0:
        # the k-th largest value: everything above it is kept, ties at it are filled in flat (global) order
        threshold = torch.kthvalue(flat, flat.numel() - k + 1).values
        above = flat > threshold
        ties = (flat == threshold).nonzero().squeeze(1)
        keep |= above
        keep[ties[: k - int(above.sum())]] = True
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start : start + s.numel()].view(s.shape).clone()  # own storage: safetensors-safe
        start += s.numel()
    return out
