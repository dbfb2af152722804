"""Concept-preserving gradient surgery (DoCo, Wu et al., "Unlearning Concepts in Diffusion Model via Concept Domain
Correction", AAAI 2025, arXiv 2405.15304; the projection is PCGrad's, Yu et al., NeurIPS 2020, arXiv 2001.06782).

Per parameter tensor, when the unlearning gradient g_a conflicts with the preservation gradient g_b (cos < 0), the
conflicting component is removed: g_a ← g_a − (g_a·g_b / ‖g_b‖²)·g_b, which leaves g_a orthogonal to g_b.

The reference code subtracts λ·cos(g_a, g_b)·ĝ_b (ĝ_b the unit vector) instead. Since the projection equals
g_a − ‖g_a‖·cos·ĝ_b, the two agree only when λ·1 = ‖g_a‖ (e.g. λ = 1 and ‖g_a‖ = 1); elsewhere the reference
under- or over-corrects. erasekit uses the projection by default and offers the reference rule as ``"reference"``.
"""

from __future__ import annotations

import torch

SURGERY_MODES = ("pcgrad", "reference", "none")


def _dot_and_norms(g_a: torch.Tensor, g_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """g_a·g_b, ‖g_a‖, ‖g_b‖ in float64, as device tensors (no host sync: the loop may run without one)."""
    a, b = g_a.detach().reshape(-1).double(), g_b.detach().reshape(-1).double()
    return a @ b, a.norm(), b.norm()


def pcgrad_project(g_a: torch.Tensor, g_b: torch.Tensor) -> torch.Tensor:
    """g_a with its component along g_b removed when the two conflict (g_a·g_b < 0); otherwise g_a unchanged.

    Example:
        >>> pcgrad_project(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0]))
        tensor([1., 0.])
    """
    dot, _, norm_b = _dot_and_norms(g_a, g_b)
    coef = torch.where(dot < 0, dot / norm_b.square().clamp_min(1e-300), 0.0)  # dot < 0 implies ‖g_b‖ > 0
    return g_a - coef.to(g_a.dtype) * g_b


def reference_project(g_a: torch.Tensor, g_b: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """The DoCo reference code's rule: g_a − λ·cos(g_a, g_b)·ĝ_b when cos < 0 (equals PCGrad iff λ = ‖g_a‖).

    Example:
        >>> reference_project(torch.tensor([2.0, -2.0]), torch.tensor([0.0, 1.0]))  # PCGrad would give [2, 0]
        tensor([ 2.0000, -1.2929])
    """
    dot, norm_a, norm_b = _dot_and_norms(g_a, g_b)
    cos = dot / (norm_a * norm_b).clamp_min(1e-300)
    coef = torch.where(dot < 0, lam * cos / norm_b.clamp_min(1e-300), 0.0)
    return g_a - coef.to(g_a.dtype) * g_b


def surgery(g_a: torch.Tensor, g_b: torch.Tensor, mode: str = "pcgrad", lam: float = 1.0) -> torch.Tensor:
    """Apply ``mode`` (``"pcgrad"``, ``"reference"`` or ``"none"``) to one tensor's unlearning gradient."""
    if mode == "pcgrad":
        return pcgrad_project(g_a, g_b)
    if mode == "reference":
        return reference_project(g_a, g_b, lam)
    if mode == "none":
        return g_a
    raise ValueError(f"surgery must be one of {SURGERY_MODES}, got {mode!r}.")


def combine_gradients(
    grads_a: dict[str, torch.Tensor | None],
    grads_b: dict[str, torch.Tensor | None],
    mode: str = "pcgrad",
    lam: float = 1.0,
) -> tuple[dict[str, torch.Tensor | None], float]:
    """Per tensor: surgery(g_a, g_b) + g_b, the update direction of concept-preserving unlearning.

    A missing (``None``) gradient counts as zero. Returns the combined gradients (``None`` where both are missing)
    and the fraction of tensors whose gradients conflicted (cos < 0), for logging.
    """
    out: dict[str, torch.Tensor | None] = {}
    conflicts = []
    for key in list(grads_a) + [k for k in grads_b if k not in grads_a]:
        g_a, g_b = grads_a.get(key), grads_b.get(key)
        if g_a is None or g_b is None:
            out[key] = g_a if g_b is None else g_b
            continue
        conflicts.append(_dot_and_norms(g_a, g_b)[0] < 0)
        out[key] = surgery(g_a, g_b, mode, lam) + g_b
    return out, float(torch.stack(conflicts).double().mean()) if conflicts else 0.0
