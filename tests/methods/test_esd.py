"""ESD's defaults against the authors' current code: the ESD-u parameter set and the target's parameterisation."""

from __future__ import annotations

import torch

from erasekit.methods.esd import ESD, ESDConfig
from erasekit.ops import esd_target
from erasekit.patch import resolve_targets


def test_esd_u_trains_every_linear_and_conv_outside_cross_attention(tiny_handle):
    """The authors' current esd-u: Linear/Conv2d weights and biases whose module is not in attn2 (no norms)."""
    expected = {
        f"unet.{name}.{p}"
        for name, module in tiny_handle.pipe.unet.named_modules()
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d) and "attn2" not in name
        for p, _ in module.named_parameters()
    }
    chosen = resolve_targets(ESD(ESDConfig(variant="u")).default_target(), tiny_handle.named_parameters(), "diffusion")
    assert set(chosen) == expected
    assert any("norm" in n for n in tiny_handle.named_parameters()) and not any("norm" in n for n in chosen)


def test_esd_x_trains_every_cross_attention_parameter(tiny_handle):
    chosen = resolve_targets(ESD(ESDConfig()).default_target(), tiny_handle.named_parameters(), "diffusion")
    assert chosen and all(".attn2." in n for n in chosen)
    assert {n.split(".attn2.")[1] for n in chosen} >= {"to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.bias"}


def test_default_eta_is_the_authors_negative_guidance_two_in_their_parameterisation():
    """Their target ε(c) − η'(ε(c) − ε(∅)) with η' = 2 equals ε(∅) − η(ε(c) − ε(∅)) with the default η = 1."""
    g = torch.Generator().manual_seed(0)
    uncond, cond = torch.randn(5, generator=g), torch.randn(5, generator=g)
    eta = ESDConfig().negative_guidance
    torch.testing.assert_close(esd_target(uncond, cond, eta), cond - 2.0 * (cond - uncond))


def test_defaults_are_the_authors_current_settings():
    cfg = ESDConfig()
    assert (cfg.steps, cfg.lr, cfg.batch_size, cfg.start_guidance, cfg.ddim_steps) == (200, 5e-5, 1, 3.0, 50)
