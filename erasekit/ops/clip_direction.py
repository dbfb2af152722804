"""Text-to-Unlearn's CLIP losses (arXiv 2504.01218), built on StyleGAN-NADA's directional CLIP loss (Gal et al.,
"StyleGAN-NADA: CLIP-Guided Domain Adaptation of Image Generators", SIGGRAPH 2022, arXiv 2108.00946).

All embeddings are L2-normalised CLIP features ``[N, D]``; a concept's *prototypes* are its normalised mean text
embeddings, ``[2, D]`` for (with, without) or ``[K, D]`` for a group of K options. ``scale`` is a CLIP logit scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def text_direction(with_embeds: torch.Tensor, without_embeds: torch.Tensor) -> torch.Tensor:
    """Unit direction from the mean "with" embedding to the mean "without" embedding (rows: one per template).

    Each side is the normalised mean of its normalised template embeddings, as in StyleGAN-NADA.

    Example:
        >>> text_direction(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 5.0]]))
        tensor([-0.7071,  0.7071])
    """
    src = F.normalize(F.normalize(with_embeds.float(), dim=-1).mean(0), dim=-1)
    dst = F.normalize(F.normalize(without_embeds.float(), dim=-1).mean(0), dim=-1)
    return F.normalize(dst - src, dim=-1)


def prototype(embeds: torch.Tensor) -> torch.Tensor:
    """A concept's prototype: the normalised mean of its template embeddings ``[T, D]``.

    Example:
        >>> prototype(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        tensor([0.7071, 0.7071])
    """
    return F.normalize(embeds.mean(0), dim=-1)


def directional_loss(
    trained: torch.Tensor, frozen: torch.Tensor, direction: torch.Tensor, floor: float = 0.0
) -> torch.Tensor:
    """Per-sample ``1 − cos(trained − frozen, direction)`` on normalised CLIP image embeddings ``[N, D]``.

    With ``floor`` > 0, the change's norm is taken as at least ``floor``: ``1 − Δ·d / max(|Δ|, floor)``, the same
    loss once the change is that large, and a linear push along the direction before. Without it the gradient
    grows as ``1/|Δ|`` while the change is small, and is unbounded at the first step (the trained and frozen
    generators are equal): that one gradient, of the order of 1/eps, fills Adam's second moment so that every
    later step barely moves and no other loss term counts.

    Example:
        >>> directional_loss(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([0.0, 1.0]))
        tensor([0.])
    """
    direction = F.normalize(direction.to(trained.dtype), dim=-1)[None]
    change = trained - frozen
    if floor > 0:
        return 1 - (change * direction).sum(-1) / change.norm(dim=-1).clamp_min(floor)
    return 1 - F.cosine_similarity(change, direction, dim=-1, eps=1e-8)


def weighted_directional_loss(
    trained: torch.Tensor, frozen: torch.Tensor, directions: torch.Tensor, weights: torch.Tensor, floor: float = 0.0
) -> torch.Tensor:
    """Mean over the ``directions`` ``[P, D]`` of Σ_i w_ij·directional_loss_ij / N, ``weights`` ``[N, P]``.

    Divided by N, not by Σ w: a batch without the attribute (weights near 0) must not push its samples along the
    direction, which normalising by the weights would do with the whole batch's weight.

    Example:
        >>> d = torch.tensor([[0.0, 1.0]])
        >>> weighted_directional_loss(torch.tensor([[1.0, -1.0]]), torch.tensor([[1.0, 0.0]]), d, torch.tensor([[0.5]]))
        tensor(1.)
    """
    per_part = [directional_loss(trained, frozen, d, floor) for d in directions]
    return torch.stack([(v * weights[:, j]).mean() for j, v in enumerate(per_part)]).mean()


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ w v / Σ w`` (plain mean when every weight is 0).

    Example:
        >>> weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 3.0]))
        tensor(2.5000)
    """
    total = weights.sum()
    return (values * weights).sum() / total if total > 0 else values.mean()


def attribute_probability(feats: torch.Tensor, protos: Sequence[torch.Tensor], scale: float) -> torch.Tensor:
    """``[N, P]``: CLIP's probability that each image shows each attribute, softmax over its (with, without)
    prototypes ``protos[j]`` ``[2, D]`` at logit scale ``scale``.

    Example:
        >>> attribute_probability(torch.tensor([[1.0, 0.0]]), [torch.eye(2)], 1.0)  # sigmoid(1)
        tensor([[0.7311]])
    """
    logits = torch.stack([feats @ p.T for p in protos], dim=1) * scale
    return logits.softmax(-1)[..., 0]


def removal_loss(
    feats: torch.Tensor, protos: Sequence[torch.Tensor], scale: float, weights: torch.Tensor
) -> torch.Tensor:
    """Mean of ``weights`` ``[N, P]`` × softplus(log-odds that the image shows the attribute): a CLIP classification
    term in the spirit of StyleGAN-NADA's global loss (the directional loss only aligns the change).

    Example:
        >>> removal_loss(torch.tensor([[1.0, 0.0]]), [torch.eye(2)], 1.0, torch.ones(1, 1))  # softplus(1)
        tensor(1.3133)
    """
    odds = torch.stack([(feats @ p.T) * scale for p in protos], dim=1)
    return (F.softplus(odds[..., 0] - odds[..., 1]) * weights).mean()


def centred_logits(feats: torch.Tensor, protos: torch.Tensor, scale: float) -> torch.Tensor:
    """``[N, K]`` CLIP logits against ``protos`` ``[K, D]`` less their mean: for (with, without), ± half the
    log-odds; for a group of options, its log-probabilities up to a constant.

    Logits rather than probabilities, because a probability near 0 or 1 has no gradient and would let a confident
    sample drift.

    Example:
        >>> centred_logits(torch.tensor([[1.0, 0.0]]), torch.eye(2), 2.0)
        tensor([[ 1., -1.]])
    """
    logits = feats @ protos.T * scale
    return logits - logits.mean(dim=-1, keepdim=True)


def logit_drift(after: Sequence[torch.Tensor], before: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over the retained concepts and samples of twice the summed squared change of their
    :func:`centred_logits` (for a (with, without) pair, the squared change of its log-odds).

    Example:
        >>> logit_drift([torch.tensor([[1.0, -1.0]])], [torch.tensor([[0.0, 0.0]])])  # log-odds 2 -> 0
        tensor(4.)
    """
    return torch.stack([2 * (a - b).square().sum(-1) for a, b in zip(after, before, strict=True)]).mean()


def pixel_retention(trained: torch.Tensor, frozen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-image pixel MSE between ``[N, C, H, W]`` images, averaged with ``weights`` ``[N]`` (:func:`weighted_mean`).

    Example:
        >>> pixel_retention(torch.ones(2, 1, 1, 2), torch.zeros(2, 1, 1, 2), torch.tensor([1.0, 0.0]))
        tensor(1.)
    """
    return weighted_mean((trained - frozen).square().mean(dim=(1, 2, 3)), weights)


def feature_retention(trained: torch.Tensor, frozen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """1 − cos between normalised CLIP features, averaged with ``weights`` ``[N]`` (:func:`weighted_mean`).

    Example:
        >>> feature_retention(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]), torch.ones(1))
        tensor(1.)
    """
    return weighted_mean(1 - (trained * frozen).sum(-1), weights)


def colour_layout_loss(trained: torch.Tensor, frozen: torch.Tensor, grid: int) -> torch.Tensor:
    """Mean squared change of the mean colour of each cell of a ``grid`` × ``grid`` grid over ``[N, C, H, W]``
    images: holds hair, skin and background colours while barely seeing an attribute's thin shapes.

    Example:
        >>> colour_layout_loss(torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]), torch.zeros(1, 1, 2, 2), 1)
        tensor(0.0625)
    """
    cells = F.adaptive_avg_pool2d(trained, grid) - F.adaptive_avg_pool2d(frozen, grid)
    return cells.square().mean()
