"""UCE's closed-form edit of a linear projection (Gandikota et al., "Unified Concept Editing in Diffusion Models",
WACV 2024, arXiv 2308.14761).

W = (λ·W₀ + Σ_e v*_e c_eᵀ + s·Σ_p v_p c_pᵀ) · (λ·I + Σ_e c_e c_eᵀ + s·Σ_p c_p c_pᵀ)⁻¹

minimises λ‖W − W₀‖² + Σ_e ‖W c_e − v*_e‖² + s·Σ_p ‖W c_p − v_p‖²: erased keys c_e are sent to new values v*_e,
preserved keys c_p keep v_p = W₀ c_p, and λ ties everything else to the original weights.
"""

from __future__ import annotations

import torch


def uce_closed_form(
    w0: torch.Tensor,
    erase_keys: torch.Tensor,
    erase_values: torch.Tensor,
    preserve_keys: torch.Tensor | None = None,
    preserve_values: torch.Tensor | None = None,
    lam: float = 0.1,
    preserve_scale: float = 1.0,
) -> torch.Tensor:
    """The edited weight, computed in float64 with ``torch.linalg.solve`` (no explicit inverse).

    Args:
        w0: the original weight ``[out, d]`` (a linear map of d-dimensional text embeddings).
        erase_keys: ``[n_e, d]`` embeddings to redirect (one row per token embedding c_e).
        erase_values: ``[n_e, out]`` the values v*_e they must produce.
        preserve_keys: ``[n_p, d]`` embeddings whose outputs must stay; ``None`` for none.
        preserve_values: ``[n_p, out]`` their target values; default ``w0 @ c_p`` (unchanged outputs).
        lam: λ > 0, the pull towards W₀ (small λ: the constraints win; large λ: W stays near W₀).
        preserve_scale: s ≥ 0, the weight of the preservation terms.

    Returns:
        The new weight ``[out, d]`` in float64.

    Example:
        >>> uce_closed_form(torch.eye(2), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), lam=1.0)
        tensor([[0.5000, 0.0000],
                [1.0000, 1.0000]], dtype=torch.float64)
    """
    if lam <= 0:
        raise ValueError(f"lam must be > 0 (it keeps the system invertible), got {lam!r}.")
    w0 = w0.detach().double()
    d = w0.shape[1]
    c_e, v_e = erase_keys.detach().double(), erase_values.detach().double()
    if c_e.ndim != 2 or c_e.shape[1] != d or v_e.shape != (c_e.shape[0], w0.shape[0]):
        raise ValueError(
            f"erase keys {tuple(c_e.shape)} / values {tuple(v_e.shape)} do not fit a {tuple(w0.shape)} W."
        )
    lhs = lam * w0 + v_e.T @ c_e  # [out, d]
    gram = lam * torch.eye(d, dtype=torch.float64, device=w0.device) + c_e.T @ c_e  # [d, d]
    if preserve_keys is not None and preserve_keys.numel():
        c_p = preserve_keys.detach().double()
        v_p = c_p @ w0.T if preserve_values is None else preserve_values.detach().double()
        lhs = lhs + preserve_scale * (v_p.T @ c_p)
        gram = gram + preserve_scale * (c_p.T @ c_p)
    # W·gram = lhs with gram symmetric  =>  W = solve(gram, lhsᵀ)ᵀ
    return torch.linalg.solve(gram, lhs.T).T
