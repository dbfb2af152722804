"""DoCo: concept-domain correction with concept-preserving gradient surgery (Wu et al., "Unlearning Concepts in
Diffusion Model via Concept Domain Correction", AAAI 2025, arXiv 2405.15304).

On the same noisy anchor latents x_t, the frozen UNet predicts x̂₀ for the anchor prompt ("real") and the trained
UNet predicts x̂₀ for the concept prompt ("fake"). A PatchGAN discriminator on latents learns real vs fake; after
``warmup_steps`` (discriminator only), the generator loss pushes the concept's x̂₀ to be classified as anchor. A
prior-preservation loss on the anchor samples with the anchor prompt (by default regressing to the frozen model's
prediction; ``prior_target="data"`` is the paper's diffusion loss) keeps the anchor domain intact, and its gradient
g_b is protected by gradient surgery on the unlearning gradient g_a, per tensor (``erasekit.ops.surgery``): the
update is surgery(g_a, g_b) + g_b.

How two gradients pass through the shared loop: ``training_step`` takes g_a and g_b with two
``torch.autograd.grad`` calls (one backward each, the minimum), combines them, and returns a surrogate loss
Σ⟨p, g⟩ − sg[Σ⟨p, g⟩] + sg[loss] whose value is the real loss and whose gradient is exactly the combined g, so the
loop's ``loss.backward()``, NaN guard, clipping and optimiser work unchanged.

Robust training (``robust_every``, off by default; :mod:`erasekit.methods.adversarial`) refreshes adversarial tokens
appended to the forget prompts every few steps and applies the forget loss to the attacked prompts too (AdvUnlearn).

Deliberate departures from the reference code: the surgery is the true PCGrad projection by default (the reference
rule g_a − λ·cos·ĝ_b is ``surgery="reference"``; it equals the projection only when λ = ‖g_a‖); anchor samples are
final latents of the frozen model's own sampler; the discriminator has no normalisation layers (small batches);
timesteps are uniform over the whole schedule. Several concepts at once: their prompts take turns on the fake side,
against one anchor.

The defaults are the paper's settings for Stable Diffusion. The MiniCanvas preset
(``erasekit_worlds/minicanvas/presets/doco.yaml``, measured in docs/methods.md) regresses the prior loss to the
frozen model (``prior_target="frozen"``), trains at lr 6e-5 for 300 steps, predicts the fake side half the time
from the model's own concept samples (``fake_from="both"``: on the anchor's latents alone the discriminator barely
sees a style, and erases an object only weakly), protects the unconditional prediction (``null_weight=1``:
classifier-free guidance multiplies its drift by w − 1) and adds an anchor-seeking term (``anchor_weight=10``: the
concept's prediction on the fake side's input regresses to the frozen model's anchor prediction there, so the erased
concept lands on the anchor instead of on whatever fools the discriminator). ``retain_prompts`` adds other prompts'
own samples to the prior (the MiniCanvas plan sets them for styles).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..ops import SURGERY_MODES, combine_gradients, discriminator_loss, generator_loss, surrogate_loss
from .adversarial import AdversarialPrompts, RobustOptions
from .base import register_method
from .config import TrainingConfig, check_choice, option
from .diffusion_data import (
    batched_predict,
    generated_latents,
    in_turn,
    noisy,
    pick,
    require_unet_targets,
)
from .loop import TrainedMethod, TrainState, concept_list

logger = logging.getLogger(__name__)

DEFAULT_ANCHORS = {"style": "a painting", "object": None, "nudity": "clothed"}


@dataclass
class DoCoConfig(RobustOptions, TrainingConfig):
    renamed: ClassVar[dict[str, str]] = {"prior_weight": "retain_weight"}

    steps: int = option(2000, "optimisation steps (paper: ~2000 at SD scale; MiniCanvas preset: 300)")
    lr: float = option(6e-6, "UNet learning rate (paper: 6e-6 at SD scale with batch 8; MiniCanvas preset: 6e-5)")
    batch_size: int = option(8, "noisy anchor latents per step (paper: 8; MiniCanvas preset: 4)")
    target: Any = option("xattn", "parameters to train (paper: cross-attention)")
    concept_kind: str = option(
        "style",
        "'style' (default anchor 'a painting'), 'object' (anchor required: its parent class), 'nudity' ('clothed')",
    )
    disc_lr: float = option(2e-4, "discriminator Adam lr, betas (0.5, 0.999) (paper: 1e-4 to 5e-4)")
    disc_channels: int = option(
        64, "channels of the discriminator's first conv (doubled by each further one)", advanced=True
    )
    disc_layers: int = option(
        2, "stride-2 4x4 convs of the PatchGAN discriminator (each halves the latent side)", advanced=True
    )
    warmup_steps: int = option(30, "first steps in which only the discriminator trains")
    fake_from: str = option(
        "anchor",
        "the noisy latents the concept's x̂₀ (the discriminator's fake side) is predicted from: 'anchor' (the same "
        "noisy anchor latent as the real side, the paper) or 'concept' (the frozen model's own samples of the paired "
        "concept prompts, noised with the same noise and t: where the concept's domain shows) or 'both' (either, per "
        "sample, at even odds; MiniCanvas preset for styles)",
        advanced=True,
    )
    adv_weight: float = option(
        1.0, "weight of the adversarial (domain-correction) loss, the unlearning gradient g_a", advanced=True
    )
    anchor_weight: float = option(
        0.0,
        "weight of an anchor-seeking term added to the unlearning loss: the trained concept prediction on the fake "
        "side's input regresses to the frozen model's anchor prediction on the same input (an adversarial target "
        "alone gives the concept no destination); paper: 0; MiniCanvas preset for styles: 10",
        advanced=True,
    )
    retain_weight: float = option(
        1.0,
        "weight of the prior-preservation loss that keeps everything else, the protected gradient g_b (paper: 1; "
        "formerly prior_weight)",
    )
    prior_target: str = option(
        "data",
        "what the prior-preservation loss regresses to: 'data' (the sampled noise, the paper's diffusion loss) or "
        "'frozen' (the original model's prediction for the same input, which keeps the anchor's predictions in "
        "place; MiniCanvas preset)",
        advanced=True,
    )
    surgery: str = option(
        "pcgrad",
        "'pcgrad': project g_a off g_b when they conflict; 'reference': g_a − λ·cos·ĝ_b (equal iff λ=‖g_a‖); 'none'",
    )
    surgery_lambda: float = option(1.0, "λ of the 'reference' surgery rule (reference: 1)", advanced=True)
    num_anchor: int = option(16, "anchor samples the frozen model generates from the anchor prompt")
    anchor_prompts: list | None = option(
        None, "anchor prompts used in turn for the anchor samples (default: the anchor alone)"
    )
    concept_prompts: list | None = option(
        None,
        "concept prompts paired by position with anchor_prompts (e.g. the same object in the concept's style and "
        "in the anchor's); default: the concepts, in turn",
    )
    retain_prompts: list | None = option(
        None,
        "prompts the prior loss also preserves, each on the frozen model's own samples of it (e.g. the world's other "
        "styles and objects), with the same target as the anchor's (prior_target); default: the anchor alone, as in "
        "the paper",
    )
    num_retain: int | None = option(
        None, "retain samples generated from retain_prompts (default: one per retain prompt)"
    )
    null_weight: float = option(
        0.0,
        "weight of a protected loss keeping the unconditional prediction ε(x_t, '') where the original model had it "
        "on the prior's inputs; classifier-free guidance at scale w moves every prompt's output by (w − 1) times its "
        "drift; paper: 0; MiniCanvas preset for styles: 1",
        advanced=True,
    )
    sample_steps: int = option(50, "sampler steps when generating anchor samples (MiniCanvas preset: 20)")
    sample_guidance: float = option(7.5, "CFG scale when generating anchor samples")
    sample_batch_size: int = option(
        16,
        "samples per sampler call when the model generates its own data (speed only: results move by float rounding)",
        advanced=True,
    )

    def __post_init__(self):
        super().__post_init__()
        self.check_robust()
        check_choice("concept_kind", self.concept_kind, tuple(DEFAULT_ANCHORS))
        check_choice("surgery", self.surgery, SURGERY_MODES)
        check_choice("prior_target", self.prior_target, ("data", "frozen"))
        check_choice("fake_from", self.fake_from, ("anchor", "concept", "both"))
        if min(self.disc_channels, self.disc_layers, self.num_anchor, self.sample_steps, self.sample_batch_size) < 1:
            raise ValueError(
                "disc_channels, disc_layers, num_anchor, sample_steps and sample_batch_size must be >= 1."
            )
        if self.num_retain is not None and self.num_retain < 1:
            raise ValueError(f"num_retain must be >= 1 (or null: one per retain prompt), got {self.num_retain!r}.")
        if self.num_retain is not None and not self.retain_prompts:
            raise ValueError("num_retain needs retain_prompts: set the prompts whose samples the prior keeps.")
        for name in ("anchor_prompts", "concept_prompts", "retain_prompts"):
            value = getattr(self, name)
            if value is not None and (not value or not all(isinstance(p, str) and p.strip() for p in value)):
                raise ValueError(f"{name} must be null or a non-empty list of prompts, got {value!r}.")
        n_a, n_c = len(self.anchor_prompts or [1]), len(self.concept_prompts or [1])
        if n_a != n_c and 1 not in (n_a, n_c):
            raise ValueError(
                f"concept_prompts ({n_c}) and anchor_prompts ({n_a}) are paired by position: give lists of the same "
                "length, or one prompt for either."
            )
        weights = (self.warmup_steps, self.adv_weight, self.anchor_weight, self.retain_weight, self.null_weight)
        if min(weights) < 0 or not self.disc_lr > 0:
            raise ValueError(
                "warmup_steps, adv_weight, anchor_weight, retain_weight and null_weight must be >= 0 and disc_lr > 0."
            )


def resolve_anchor(concept_kind: str, anchor: str | None, concept: str) -> str:
    """The user's anchor, else the default of the concept kind; objects have none and must name their parent class."""
    anchor = anchor if anchor is not None else DEFAULT_ANCHORS[concept_kind]
    if anchor is None:
        raise ValueError(
            f"DoCo needs an anchor for the object {concept!r}: its parent class, e.g. anchor='a dog' for "
            "'a golden retriever' (CLI: --anchor 'a dog')."
        )
    if not anchor.strip() or anchor.strip().lower() == concept.strip().lower():
        raise ValueError(f"The anchor must be a non-empty prompt other than the concept, got {anchor!r}.")
    return anchor


class PatchDiscriminator(nn.Module):
    """A PatchGAN on latents: ``layers`` stride-2 4x4 convs with LeakyReLU, then a 3x3 conv to one logit per patch."""

    def __init__(self, in_channels: int, channels: int = 64, layers: int = 2):
        super().__init__()
        mods: list[nn.Module] = []
        c = in_channels
        for i in range(layers):
            mods += [nn.Conv2d(c, channels * 2**i, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = channels * 2**i
        mods.append(nn.Conv2d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """DCGAN initialisation (weights N(0, 0.02), zero biases) drawn from ``generator``."""
        for m in self.net:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
                nn.init.zeros_(m.bias)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents)


@register_method("doco")
class DoCo(TrainedMethod):
    """Adversarial concept-domain correction with gradient surgery; produces a dense patch (default: cross-attn)."""

    config_class = DoCoConfig
    summary = "DoCo: push the concept's x̂₀ into the anchor's domain (PatchGAN) with concept-preserving surgery"

    def erase(self, model, concept: str | list[str], anchor: str | None = None, callbacks=()):
        concepts = concept_list(concept)
        for c in concepts:
            anchor = resolve_anchor(self.config.concept_kind, anchor, c)
        return super().erase(model, concepts, anchor=anchor, callbacks=callbacks)

    def prepare(self, state: TrainState) -> None:
        cfg, handle, ctx, gen = self.config, state.handle, state.ctx, state.generator
        require_unet_targets(state)
        channels, side, _ = handle.latent_shape()
        if side < 2**cfg.disc_layers:
            raise ValueError(f"disc_layers={cfg.disc_layers} halves {side}x{side} latents to nothing; use fewer.")
        anchors, concepts = self.paired_prompts(state.anchor, state.concepts)
        ctx["anchor"] = generated_latents(
            handle, anchors, gen, cfg.sample_steps, cfg.sample_guidance, cfg.sample_batch_size
        )
        if cfg.fake_from != "anchor" or cfg.robust_every:  # drawn after the anchor samples, which keep their draws
            ctx["concept"] = generated_latents(
                handle, concepts, gen, cfg.sample_steps, cfg.sample_guidance, cfg.sample_batch_size
            )
        if cfg.retain_prompts:  # drawn last: the paths without retain prompts keep their draws
            n = cfg.num_retain or len(cfg.retain_prompts)
            retain = in_turn(cfg.retain_prompts, n)
            ctx["retain"] = generated_latents(
                handle, retain, gen, cfg.sample_steps, cfg.sample_guidance, cfg.sample_batch_size
            )
            ctx["retain_emb"] = handle.encode_prompts(retain)
        ctx["null_emb"] = handle.encode_prompts([""])  # the unconditional prompt CFG measures every prompt from
        ctx["anchor_emb"] = handle.encode_prompts(anchors)  # one row per anchor sample
        ctx["concept_emb"] = handle.encode_prompts(concepts)
        if cfg.robust_every:  # the attacker appends its tokens to the concept prompts, attacking on their samples
            ctx["robust"] = AdversarialPrompts(
                handle, cfg, cfg.seed, concepts, ctx["concept"], keep=cfg.retain_prompts or [], concepts=state.concepts
            )
        disc = PatchDiscriminator(channels, cfg.disc_channels, cfg.disc_layers)
        disc.reset_parameters(gen)
        self.disc = disc.to(state.device)
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))
        self._ctx = ctx
        logger.info(
            "doco: anchor %r, %d anchor and %d retain samples, fake side from %s, null weight %g, anchor weight %g, "
            "surgery %s",
            state.anchor,
            cfg.num_anchor,
            len(ctx.get("retain", ())),
            cfg.fake_from,
            cfg.null_weight,
            cfg.anchor_weight,
            cfg.surgery,
        )

    def paired_prompts(self, anchor: str, concepts: list[str]) -> tuple[list[str], list[str]]:
        """The anchor prompt of each anchor sample and the concept prompt paired with it (several concepts in
        turn)."""
        cfg = self.config
        n = cfg.num_anchor if cfg.concept_prompts else max(cfg.num_anchor, len(concepts))  # one sample each at least
        return in_turn(cfg.anchor_prompts or [anchor], n), in_turn(cfg.concept_prompts or concepts, n)

    def _disc_step(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """One discriminator update (anchor = real, concept = fake); skipped when its loss is not finite."""
        loss = discriminator_loss(self.disc(real), self.disc(fake))
        self.disc_opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.disc.parameters() if p.grad is not None]
        value = loss.detach().float().reshape(1)
        distributed.all_reduce_mean_([*grads, value])  # every process keeps the same discriminator
        if torch.isfinite(value).all():
            self.disc_opt.step()
        return value[0]

    def training_step(self, state: TrainState) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, handle, ctx = self.config, state.handle, state.ctx
        gens = state.sample_generators(cfg.batch_size)  # this process's share of the batch
        idx = pick(len(ctx["anchor"]), gens)
        x_t, t, target, noise = noisy(handle, ctx["anchor"][idx], gens, return_noise=True)
        # the concept's x̂₀ comes from the same x_t, or from its own sample noised alike
        fake_from = cfg.fake_from
        x_fake = x_t if fake_from == "anchor" else handle.add_noise(ctx["concept"][idx], noise, t).to(x_t.dtype)
        if fake_from == "both":  # each sample's fake side from either, drawn from its own generator
            anchor_side = torch.cat([torch.rand(1, generator=g) < 0.5 for g in gens]).to(x_t.device)
            x_fake = torch.where(anchor_side[:, None, None, None], x_t, x_fake)
        anchor_emb, concept_emb = ctx["anchor_emb"][idx], ctx["concept_emb"][idx]
        warmup = state.step < cfg.warmup_steps
        robust, logs = (None if warmup else ctx.get("robust")), {}
        if robust is not None and robust.due(state.step):
            logs.update(robust.refresh(state, cfg.batch_size))
        anchor_weight = cfg.anchor_weight
        seek = anchor_weight and not warmup and x_fake is not x_t  # the anchor's prediction on the fake inputs
        with torch.no_grad():  # the frozen model
            frozen, *seek_target = batched_predict(
                handle, [(x_t, t, anchor_emb)] + ([(x_fake, t, anchor_emb)] if seek else [])
            )
            real = handle.predicted_x0(x_t, t, frozen)
        seek_target = seek_target[0] if seek else frozen
        if cfg.prior_target == "frozen":
            target = frozen
        with torch.no_grad() if warmup else torch.enable_grad():
            if robust is None:
                fake_out = handle.predict_noise(x_fake, t, concept_emb, params=state.params)
            else:  # the attacked concept prompts on the same inputs, in the same forward
                both = [(x_fake, t, concept_emb), (x_fake, t, robust.embeddings[idx])]
                fake_out, attacked_out = batched_predict(handle, both, state.params)
            fake = handle.predicted_x0(x_fake, t, fake_out)
        disc_loss = self._disc_step(real, fake.detach())
        logs["disc"] = float(disc_loss)
        if warmup:  # only the discriminator learns; 0·disc_loss carries a NaN to the loop's guard
            return surrogate_loss(state.params, {}, 0.0 * disc_loss), logs
        adv = generator_loss(self.disc(fake))
        unlearn = cfg.adv_weight * adv
        if anchor_weight:
            anchor_loss = F.mse_loss(fake_out.float(), seek_target)
            unlearn = unlearn + anchor_weight * anchor_loss
            logs["anchor"] = float(anchor_loss.detach())
        if robust is not None:  # the same unlearning loss on the attacked prompts' x̂₀
            attacked = cfg.adv_weight * generator_loss(self.disc(handle.predicted_x0(x_fake, t, attacked_out)))
            if anchor_weight:
                attacked = attacked + anchor_weight * F.mse_loss(attacked_out.float(), seek_target)
            unlearn = unlearn + cfg.robust_weight * attacked
            logs["attacked"] = float(attacked.detach())
        prior, parts = self._prior_loss(state, gens, x_t, t, target, anchor_emb)
        logs.update(parts)
        keys = list(state.params)
        inputs = [state.params[k] for k in keys]
        g_a = torch.autograd.grad(unlearn, inputs, allow_unused=True)
        g_b = torch.autograd.grad(cfg.retain_weight * prior, inputs, allow_unused=True)
        distributed.all_reduce_mean_([g for g in (*g_a, *g_b) if g is not None])  # surgery on the global batch
        grads, conflict = combine_gradients(
            dict(zip(keys, g_a, strict=True)), dict(zip(keys, g_b, strict=True)), cfg.surgery, cfg.surgery_lambda
        )
        value = unlearn.detach() + cfg.retain_weight * prior.detach() + 0.0 * disc_loss
        logs.update(adv=float(adv.detach()), prior=float(prior.detach()), conflict=conflict)
        return surrogate_loss(state.params, grads, value), logs

    def _prior_loss(self, state: TrainState, gens, x_t, t, target, emb) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss the protected gradient g_b comes from: the anchor's prior, with a batch of retain samples
        appended when there are retain prompts, plus ``null_weight`` × the drift of the unconditional prediction on
        the same inputs; one frozen forward for the fixed targets it adds and one trained forward for all of it."""
        cfg, handle, ctx = self.config, state.handle, state.ctx
        prior_inputs, targets = [(x_t, t, emb)], [target]
        if "retain" in ctx:
            idx = pick(len(ctx["retain"]), gens)
            r_t, r_step, r_target = noisy(handle, ctx["retain"][idx], gens)
            prior_inputs.append((r_t, r_step, ctx["retain_emb"][idx]))
            targets.append(r_target)
        fixed = prior_inputs[1:] if cfg.prior_target == "frozen" else []  # the anchor's came with the real side
        null_input = []
        null_weight = cfg.null_weight
        if null_weight:  # ε(x_t, '') on every prior input
            x_all, t_all = torch.cat([x for x, _, _ in prior_inputs]), torch.cat([s for _, s, _ in prior_inputs])
            null_input = [(x_all, t_all, ctx["null_emb"].expand(len(x_all), -1, -1))]
        with torch.no_grad():
            frozen = batched_predict(handle, fixed + null_input)  # the original weights
        if fixed:
            targets[1] = frozen[0]
        preds = batched_predict(handle, prior_inputs + null_input, state.params)
        prior = F.mse_loss(torch.cat(preds[: len(targets)]), torch.cat(targets))
        if not null_input:
            return prior, {}
        null = F.mse_loss(preds[-1], frozen[-1])
        return prior + null_weight * null, {"null": float(null.detach())}

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Discriminator weights, its Adam state and the anchor samples, so resume continues exactly."""
        out = {f"disc::{k}": v for k, v in self.disc.state_dict().items()}
        for idx, entry in self.disc_opt.state_dict()["state"].items():
            out.update({f"disc_opt::{idx}::{k}": v for k, v in entry.items() if torch.is_tensor(v)})
        out["anchor"] = self._ctx["anchor"]
        out.update({k: self._ctx[k] for k in ("concept", "retain") if k in self._ctx})
        if "robust" in self._ctx:
            out.update(self._ctx["robust"].state())
        return out

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.disc.load_state_dict({k[len("disc::") :]: v for k, v in tensors.items() if k.startswith("disc::")})
        state: dict[int, dict] = {}
        for name, v in tensors.items():
            if name.startswith("disc_opt::"):
                _, idx, k = name.split("::")
                state.setdefault(int(idx), {})[k] = v
        groups = self.disc_opt.state_dict()["param_groups"]
        self.disc_opt.load_state_dict({"state": state, "param_groups": groups})
        self._ctx["anchor"] = tensors["anchor"].to(self._ctx["anchor"].device)
        for key in ("concept", "retain"):
            if key in tensors:
                self._ctx[key] = tensors[key].to(self._ctx["anchor"].device)
        if "robust" in self._ctx:
            self._ctx["robust"].x0 = self._ctx["concept"]
            self._ctx["robust"].load_state(tensors)
