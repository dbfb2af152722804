"""``probe``: is the concept still linearly decodable inside the erased model? ("Are We Truly Forgetting?")

An erasure may hide a concept from the outputs while the network's internal representation still separates it. The
attack reads the UNet's mid-block features (spatially averaged, at a few timesteps, from the same seeded noise) for
matched prompt pairs: each concept prompt and the same prompt with another class in the concept's place (e.g. "A
cup image in Watercolor style." vs "A cup image in Sketch style."), over the suite's templates and held-out
templates. A logistic-regression probe is trained on these features; its held-out accuracy says how decodable the
concept is, and the same probe on shuffled labels (``control``) says how much a probe decodes from noise. With a gold
model, linear CKA between the erased model's features and the gold model's (and between the base's and the gold's)
says whose representation the erased model resembles.

What it does not prove: prompt features differ whenever the prompt's words differ, so a high accuracy on the gold
model (which never learned the concept but reads the same words) is expected. Compare the erased model with the base
and the gold rows, not with 50 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ..methods.config import option
from ..ops.probe import linear_cka, probe_accuracy
from .base import Attack, AttackConfig, AttackContext, register_attack


@dataclass
class ProbeConfig(AttackConfig):
    timesteps: list = option([0.9, 0.5], "timesteps, as fractions of the schedule, at which features are read")
    folds: int = option(4, "cross-validation folds of the probe")
    l2: float = option(1e-2, "L2 penalty of the logistic-regression probe (on standardised features)")
    layer: str = option("mid_block", "the denoiser submodule whose output is read")

    def __post_init__(self):
        super().__post_init__()
        if not self.timesteps or any(not 0 <= t <= 1 for t in self.timesteps):
            raise ValueError(f"probe timesteps must be fractions in [0, 1], got {self.timesteps}.")
        if self.folds < 2:
            raise ValueError(f"probe folds must be >= 2, got {self.folds}.")


@torch.no_grad()
def layer_features(handle, prompts: list[str], layer: str, timesteps: list[float], seed: int) -> torch.Tensor:
    """``[len(prompts), C * len(timesteps)]``: the spatial mean of ``layer``'s output for each prompt, from noise
    that depends only on the prompt's index (matched pairs share it)."""
    module = handle.denoiser.get_submodule(layer)
    grabbed = []
    hook = module.register_forward_hook(lambda m, a, out: grabbed.append(out[0] if isinstance(out, tuple) else out))
    rows = []
    try:
        n = handle.num_train_timesteps
        for i, prompt in enumerate(prompts):
            gen = torch.Generator().manual_seed(seed * 100_003 + i % (len(prompts) // 2 or 1))
            latents = handle.initial_latents(1, gen)
            emb = handle.encode_prompts([prompt])
            feats = []
            for frac in timesteps:
                grabbed.clear()
                t = torch.tensor([min(int(frac * n), n - 1)], device=latents.device)
                handle.predict_noise(latents, t, emb)
                feats.append(grabbed[-1].float().mean(dim=(-2, -1)).flatten())
            rows.append(torch.cat(feats).cpu())
    finally:
        hook.remove()
    return torch.stack(rows)


@register_attack("probe")
class Probe(Attack):
    """A linear probe on mid-block features for concept vs matched non-concept prompts; CKA against the gold."""

    config_class = ProbeConfig
    summary = "linear probe on UNet mid-block features (concept decodable?) and CKA vs the gold model"

    def check(self, ctx: AttackContext) -> None:
        super().check(ctx)
        if not ctx.contrast or len(ctx.contrast[0]) < self.config.folds:
            raise ValueError("The probe attack needs a suite target with matched contrast prompts.")
        try:
            ctx.handle.denoiser.get_submodule(self.config.layer)
        except AttributeError:
            raise ValueError(f"The denoiser has no submodule {self.config.layer!r} to probe.") from None

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        cfg = self.config
        positives, negatives = ctx.contrast
        prompts = list(positives) + list(negatives)
        labels = torch.tensor([True] * len(positives) + [False] * len(negatives))
        feats, results = {}, {}
        for variant in tqdm(ctx.variants, desc="probe", unit="model", disable=not ctx.progress):
            with ctx.model(variant) as handle:
                feats[variant] = layer_features(handle, prompts, cfg.layer, cfg.timesteps, cfg.seed)
            results[variant] = probe_accuracy(feats[variant], labels, cfg.folds, cfg.l2, cfg.seed)
        out: dict[str, Any] = {"accuracy": {v: r["accuracy"] for v, r in results.items()}, "variants": results}
        out["samples"] = len(prompts)
        pairs = [("patched", "base")] + ([("patched", "gold"), ("base", "gold")] if "gold" in feats else [])
        out["cka"] = {f"{a}_vs_{b}": linear_cka(feats[a], feats[b]) for a, b in pairs}
        return out
