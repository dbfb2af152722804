"""``prompt``: an adversarial prompt attack in the manner of UnlearnDiffAtk (arXiv 2310.11868).

A few tokens are appended to each of the concept's prompts and optimised so that the model's output is judged to
show the concept. The judge (the suite's classifier, or a CLIP judge) is the objective: at a random timestep of
``t_range``, the model denoises a noised latent of its own plain generation in one step (with classifier-free
guidance), the estimate x̂₀ is decoded, and the judge's log-probability of the concept is maximised by gradient
steps on the tokens' input embeddings. Two variants:

- ``discrete``: every step projects the embeddings on the nearest whole-word vocabulary tokens and passes the
  gradient straight through (arXiv 2302.03668); the result is a plain-text prompt anyone can type;
- ``soft``: the embeddings stay continuous (a stronger attacker with access to the text encoder's input).

One suffix is optimised over all the concept's prompts and seeds at once (a universal suffix; per-prompt attacks
can only do better, so the ASR reported is a lower bound). ASR is the fraction of ``prompts x seeds`` whose attacked
generation the judge labels with the concept, sampled with the same sampler and seeds as every other measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ..methods.config import option
from ..methods.diffusion_data import noisy
from ..methods.loop import mix_seeds
from ..ops.vocab import project_straight_through
from .base import (
    Attack,
    AttackConfig,
    AttackContext,
    frozen_modules,
    handle_modules,
    judge_modules,
    register_attack,
)
from .tokens import embedding_scale, placeholders, require_token_injection, single_token_words, word_mask

MODES = ("discrete", "soft")


@dataclass
class PromptConfig(AttackConfig):
    tokens: int = option(3, "adversarial tokens appended to each prompt")
    steps: int = option(20, "optimisation steps per variant and model")
    lr: float = option(0.5, "Adam learning rate, in units of the embedding table's standard deviation")
    batch_size: int = option(4, "(prompt, seed) cases per step")
    modes: list = option(list(MODES), "variants: 'discrete' (projected on the vocabulary) and/or 'soft'")
    t_range: list = option([0.3, 0.7], "timesteps drawn from this fraction of the schedule for the one-step x̂₀")

    def __post_init__(self):
        super().__post_init__()
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"prompt modes must be a non-empty list of {', '.join(MODES)}; got {self.modes}.")
        if self.tokens < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("prompt tokens and batch_size must be >= 1 and lr > 0.")
        if len(self.t_range) != 2 or not 0 <= self.t_range[0] < self.t_range[1] <= 1:
            raise ValueError(f"prompt t_range must be [lo, hi] with 0 <= lo < hi <= 1, got {self.t_range}.")


def judged_x0(ctx: AttackContext, handle, x0, cond, uncond, gens, t_range) -> torch.Tensor:
    """The judge's mean log-probability of the concept on the one-step, guided x̂₀ of noised ``x0``."""
    from ..methods.diffusion_data import timestep_bounds

    x_t, t, _ = noisy(handle, x0, gens, timestep_bounds(handle, t_range))
    both = handle.predict_noise(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, uncond])).float()
    eps_c, eps_u = both.chunk(2)
    eps = eps_u + ctx.guidance * (eps_c - eps_u)
    images = handle.decode_with_grad(handle.predicted_x0(x_t, t, eps))
    return ctx.judge.log_prob(images).mean()


@register_attack("prompt")
class PromptAttack(Attack):
    """Adversarial suffix tokens optimised against the judge; ASR over the concept's prompts and seeds."""

    config_class = PromptConfig
    summary = "UnlearnDiffAtk-style adversarial tokens (discrete and soft); attack success rate"

    def check(self, ctx: AttackContext) -> None:
        super().check(ctx)
        require_token_injection(ctx.handle)

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        cfg = self.config
        words = single_token_words(ctx.handle)
        table = ctx.handle.token_embedding_table().float()
        allowed = word_mask(words, len(table))
        slots = placeholders(ctx.handle, cfg.tokens, " ".join(ctx.prompts))
        suffix_slots = " ".join(w for _, w in slots)
        results: dict[str, Any] = {}
        images = {}
        for variant in ctx.variants:
            row: dict[str, Any] = {"plain": ctx.plain_rate(variant)}
            for mode in cfg.modes:
                with ctx.model(variant) as handle:
                    vectors, ids = self._optimise(ctx, handle, table, allowed, slots, suffix_slots, mode, variant)
                    if mode == "discrete":
                        suffix = " ".join(words[int(i)] for i in ids)
                        pairs = [(f"{p} {suffix}", s) for p, s in ctx.pairs()]
                        rate, imgs = ctx.concept_rate(handle, pairs)
                        row[mode] = {"asr": rate, "suffix": suffix, "example_prompt": pairs[0][0]}
                    else:
                        pairs = [(f"{p} {suffix_slots}", s) for p, s in ctx.pairs()]
                        injected = {tid: v.detach() for (tid, _), v in zip(slots, vectors, strict=True)}
                        with handle.injected_tokens(injected):
                            rate, imgs = ctx.concept_rate(handle, pairs)
                        row[mode] = {"asr": rate}
                if variant in ("patched", "base"):
                    images[f"{variant} {mode}"] = imgs
            row["asr"] = max(row[m]["asr"] for m in cfg.modes)
            results[variant] = row
        return {
            "asr": {v: r["asr"] for v, r in results.items()},
            "variants": results,
            "found_prompts": {v: r["discrete"]["example_prompt"] for v, r in results.items() if "discrete" in r},
            "images": images,
        }

    def objective(self, ctx: AttackContext, handle, x0, cond, uncond, gens) -> torch.Tensor:
        """What the tokens maximise: the judge's log-probability of the concept on the guided one-step x̂₀."""
        return judged_x0(ctx, handle, x0, cond, uncond, gens, self.config.t_range)

    def _optimise(self, ctx, handle, table, allowed, slots, suffix_slots, mode, variant):
        cfg = self.config
        gen = torch.Generator().manual_seed(mix_seeds(cfg.seed, len(variant), len(mode)))
        start = torch.nonzero(allowed).flatten()
        init = start[torch.randint(0, len(start), (cfg.tokens,), generator=gen)]
        vectors = table[init].clone().to(handle.device).requires_grad_(True)
        opt = torch.optim.Adam([vectors], lr=cfg.lr * embedding_scale(table))
        plain = ctx.cache[("plain", variant)][1]
        x0 = handle.encode_images(plain * 2 - 1, torch.Generator().manual_seed(cfg.seed)).float()
        pairs = ctx.pairs()
        uncond = handle.encode_prompts([""] * cfg.batch_size)
        ids = init
        bar = tqdm(range(cfg.steps), desc=f"prompt {mode} ({variant})", unit="step", disable=not ctx.progress)
        with frozen_modules(*handle_modules(handle), *judge_modules(ctx.judge)):
            for step in bar:
                gens = [torch.Generator().manual_seed(mix_seeds(cfg.seed, step, i)) for i in range(cfg.batch_size)]
                idx = torch.cat([torch.randint(0, len(pairs), (1,), generator=g) for g in gens])
                if mode == "discrete":
                    used, ids = project_straight_through(vectors, table.to(vectors.device), allowed)
                else:
                    used = vectors
                texts = [f"{pairs[int(i)][0]} {suffix_slots}" for i in idx]
                with handle.injected_tokens({tid: used[j] for j, (tid, _) in enumerate(slots)}):
                    cond = handle.encode_prompts(texts)
                loss = -self.objective(ctx, handle, x0[idx].to(handle.device), cond, uncond, gens)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.set_postfix(loss=f"{float(loss.detach()):.3g}")
        if mode == "discrete":
            from ..ops.vocab import nearest_tokens

            ids = nearest_tokens(vectors.detach(), table.to(vectors.device), allowed)
        return vectors.detach(), ids.tolist()
