"""The diffusion parametrisations a method converts between (Ho et al., "Denoising Diffusion Probabilistic Models",
NeurIPS 2020, arXiv 2006.11239; v-prediction: Salimans & Ho, "Progressive Distillation", ICLR 2022, arXiv 2202.00512).

With x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε and v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀, a network that predicts ε or v also predicts x₀.
"""

from __future__ import annotations

import torch


def x0_from_prediction(
    x_t: torch.Tensor, output: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """x̂₀ in fp32: (x_t − √(1−ᾱ)·ε)/√ᾱ for ε-prediction, √ᾱ·x_t − √(1−ᾱ)·v for v-prediction.

    Args:
        x_t: noisy latents ``[N, ...]``.
        output: the network's prediction (ε or v) for ``x_t``, same shape.
        alpha_bar: ᾱ_t per sample, ``[N]``.
        prediction_type: ``"v_prediction"`` (the diffusers scheduler's name) for v; any other value reads ``output``
            as ε.

    Example:
        >>> x0_from_prediction(torch.tensor([[1.0]]), torch.tensor([[0.6]]), torch.tensor([0.64]))
        tensor([[0.8000]])
    """
    a = alpha_bar.float().view(-1, *([1] * (x_t.ndim - 1)))
    x_t, output = x_t.float(), output.float()
    if prediction_type == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * output
    return (x_t - (1 - a).sqrt() * output) / a.sqrt()
