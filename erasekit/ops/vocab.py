"""Projection of continuous token embeddings onto a vocabulary, for discrete prompt attacks (UnlearnDiffAtk,
arXiv 2310.11868, optimises prompt tokens by projected gradient steps; the straight-through projection follows
"Hard Prompts Made Easy", arXiv 2302.03668)."""

from __future__ import annotations

import torch


def nearest_tokens(vectors: torch.Tensor, table: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """For each row of ``vectors [K, D]``, the id of the most cosine-similar row of ``table [V, D]`` among the
    ``allowed`` ids (a boolean ``[V]`` mask, default all).

    Example:
        >>> table = torch.eye(4)
        >>> nearest_tokens(torch.tensor([[0.1, 0.0, 2.0, 0.0]]), table).tolist()
        [2]
    """
    sims = (
        torch.nn.functional.normalize(vectors.float(), dim=-1) @ torch.nn.functional.normalize(table.float(), dim=-1).T
    )
    if allowed is not None:
        sims = sims.masked_fill(~allowed.to(sims.device), float("-inf"))
    return sims.argmax(-1)


def project_straight_through(vectors: torch.Tensor, table: torch.Tensor, allowed=None) -> tuple[torch.Tensor, ...]:
    """``(projected, ids)``: the nearest vocabulary rows, with the gradient passed straight to ``vectors``."""
    ids = nearest_tokens(vectors.detach(), table, allowed)
    hard = table[ids].to(vectors.dtype)
    return vectors + (hard - vectors).detach(), ids
