"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023, arXiv 2303.07345). A baseline.

Fine-tunes ε_θ(x_t, c) towards ε*(x_t, ∅) − η·(ε*(x_t, c) − ε*(x_t, ∅)) of the frozen model, where x_t comes from
partially sampling the frozen model with the concept prompt. ESD-x trains cross-attention (styles); ESD-u trains
everything but cross-attention (objects, nudity).

Departures from the reference code, on purpose: the training timestep is exactly the timestep the partially sampled
latents sit at (the reference draws a random DDPM step inside that DDIM interval), and sampling uses the pipeline's
own scheduler through its step callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..ops import esd_target
from .base import register_method
from .config import MethodConfig, check_choice, option
from .loop import TrainedMethod, TrainState

VARIANT_TARGETS = {"x": "xattn", "u": "non_xattn"}


@dataclass
class ESDConfig(MethodConfig):
    steps: int = option(1000, "optimisation steps (the paper uses 1000)")
    lr: float = option(1e-5, "learning rate (the paper uses 1e-5)")
    variant: str = option("x", "'x': cross-attention only (styles); 'u': all but cross-attention (objects, nudity)")
    target: Any = option("auto", "parameters to train; 'auto' follows the variant (xattn or non_xattn)")
    negative_guidance: float = option(1.0, "η: how far past the unconditional prediction to push the concept")
    start_guidance: float = option(3.0, "CFG scale used to sample x_t from the frozen model")
    ddim_steps: int = option(50, "sampler steps of the partial sampling; the stop step is drawn uniformly in it")

    def __post_init__(self):
        super().__post_init__()
        check_choice("variant", self.variant, tuple(VARIANT_TARGETS))
        if self.ddim_steps < 1 or self.negative_guidance < 0:
            raise ValueError("ddim_steps must be >= 1 and negative_guidance >= 0.")


@register_method("esd")
class ESD(TrainedMethod):
    """ESD-x / ESD-u; produces a dense patch on the variant's parameters."""

    config_class = ESDConfig
    summary = "ESD baseline: fine-tune towards negatively guided frozen predictions (ESD-x / ESD-u)"

    def default_target(self) -> Any:
        cfg = self.config
        return VARIANT_TARGETS[cfg.variant] if cfg.target == "auto" else cfg.target

    def prepare(self, state: TrainState) -> None:
        handle, n = state.handle, self.config.batch_size
        state.ctx["cond"] = handle.encode_prompts([state.concept]).expand(n, -1, -1)
        state.ctx["uncond"] = handle.encode_prompts([""]).expand(n, -1, -1)

    def training_step(self, state: TrainState) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, handle = self.config, state.handle
        stop = int(torch.randint(0, cfg.ddim_steps, (1,), generator=state.step_generator()))
        start = torch.cat([handle.initial_latents(1, g) for g in state.sample_generators(cfg.batch_size)])
        cond, uncond = state.ctx["cond"][: len(start)], state.ctx["uncond"][: len(start)]
        x_t, t = handle.sample_latents(cond, uncond, start, cfg.ddim_steps, cfg.start_guidance, stop)
        with torch.no_grad():
            eps_uncond = handle.predict_noise(x_t, t, uncond).float()
            eps_cond = handle.predict_noise(x_t, t, cond).float()
        target = esd_target(eps_uncond, eps_cond, cfg.negative_guidance)
        pred = handle.predict_noise(x_t, t, cond, params=state.params).float()
        return F.mse_loss(pred, target), {"t": float(t)}
