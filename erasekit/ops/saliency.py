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

    The tensors are never concatenated: the k-th largest score is found by bisection over float32 values, counting
    tensor by tensor (:func:`kth_largest`), so the memory needed beyond the scores is the masks themselves and one
    tensor's temporaries, even for the ~860 M weights of Stable Diffusion's UNet.

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
    flats = [s.detach().reshape(-1) for s in scores.values()]
    for flat in flats:
        if not bool(torch.isfinite(flat).all()):
            raise ValueError("Saliency scores contain NaN/Inf; the forget loss diverged (check the forget data).")
    total = sum(f.numel() for f in flats)
    k = int(round(ratio * total))
    if k in (0, total):
        return {name: torch.full(s.shape, k > 0, dtype=torch.bool, device=s.device) for name, s in scores.items()}
    threshold = kth_largest(flats, k)
    masks = [f.float() > threshold for f in flats]
    ties_left = k - sum(int(m.sum()) for m in masks)
    for flat, mask in zip(flats, masks, strict=True):  # ties at the threshold, filled in global flat order
        if ties_left <= 0:
            break
        ties = (flat.float() == threshold).nonzero().squeeze(1)[:ties_left]
        mask[ties] = True
        ties_left -= ties.numel()
    return {name: m.view(s.shape) for (name, s), m in zip(scores.items(), masks, strict=True)}


# below this many candidates left between the bisection's bounds, they are gathered and ranked directly
_GATHER_LIMIT = 1 << 22


def kth_largest(tensors: list[torch.Tensor], k: int) -> float:
    """The ``k``-th largest value (1 = the maximum) over the entries of ``tensors``, as float32, without
    concatenating them (what ``torch.cat(tensors).topk(k).values[-1]`` returns, in far less memory).

    Bisection over the ordered float32 values: every float32 maps to an integer in the same order (:func:`_key`), and
    each step counts, tensor by tensor, how many entries reach the midpoint's value. Once few entries lie between
    the bounds, those are gathered and ranked with :func:`torch.kthvalue`. The values must be finite.

    Example:
        >>> kth_largest([torch.tensor([1.0, 5.0]), torch.tensor([3.0, 3.0])], 3)
        3.0
    """
    total = sum(t.numel() for t in tensors)
    if not 1 <= k <= total:
        raise ValueError(f"k must be in [1, {total}], got {k}.")
    flats = [t.detach().reshape(-1).float() if t.dtype != torch.float32 else t.detach().reshape(-1) for t in tensors]
    nonempty = [f for f in flats if f.numel()]
    lo = _key(min(float(f.min()) for f in nonempty))  # count(x >= value(lo)) = total >= k
    hi = _key(max(float(f.max()) for f in nonempty)) + 1  # count(x >= value(hi)) = 0 < k
    count_lo, count_hi = total, 0
    while hi - lo > 1 and count_lo - count_hi > _GATHER_LIMIT:
        mid = (lo + hi) // 2
        count = sum(int(torch.count_nonzero(f >= _value(mid))) for f in nonempty)
        if count >= k:
            lo, count_lo = mid, count
        else:
            hi, count_hi = mid, count
    if hi - lo == 1:
        return _value(lo)
    low, high = _value(lo), _value(hi)  # the answer lies in [low, high); count_hi entries lie above it
    between = torch.cat([f[(f >= low) & (f < high)] for f in nonempty])
    rank = k - count_hi  # the answer is the rank-th largest of `between`
    return float(torch.kthvalue(between, between.numel() - rank + 1).values)


def _key(value: float) -> int:
    """An integer in the order of float32 values (-0.0 and +0.0, equal as values, share the key 0)."""
    if value == 0:
        return 0
    bits = int(torch.tensor(value, dtype=torch.float32).view(torch.int32))
    return bits if bits >= 0 else -1 - (bits & 0x7FFFFFFF)


def _value(key: int) -> float:
    """The float32 value of a :func:`_key` (its inverse)."""
    bits = key if key >= 0 else (-1 - key) | -0x80000000
    return float(torch.tensor(bits, dtype=torch.int32).view(torch.float32))
