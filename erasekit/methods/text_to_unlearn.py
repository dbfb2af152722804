"""Text-to-Unlearn: erase an attribute from a StyleGAN2 generator given only text (arXiv 2504.01218).

A frozen generator G_f and a trainable copy G_t (the shared loop's trainable tensors, swapped into the caller's
generator functionally: its weights are never written). For latents w, the CLIP image-space change
E_I(G_t(w)) − E_I(G_f(w)) is pushed along the text direction "a face with X" → "a face without X" with the
directional loss of StyleGAN-NADA (Gal et al. 2021, arXiv 2108.00946): 1 − cos(ΔI, ΔT), ΔT averaged over prompt
templates. Retention losses keep everything else: the pixel MSE and the CLIP-feature distance (1 − cos) between
G_t(w) and G_f(w). The change's norm in the directional loss is floored (``direction_floor``): at the first step
G_t = G_f, where the plain cosine's gradient is unbounded, and that one gradient would fill Adam's second moment so
that no later step, and no other term, counts. Each sample's direction term is weighted by the CLIP probability
that its frozen image shows the attribute (and averaged over the batch, so faces without it are not pushed), and
its retention terms by the probability that it shows none of the erased attributes, so retention is strongest where
the attribute is absent. Several attributes at once: ``"glasses, beard"`` (one direction each).

``retain`` (optional, text too): concepts to keep; on every sample, with or without the attribute, the CLIP
log-odds that the image shows each ("a face with a smile" against "a face without a smile") are held to the frozen
image's; a group ``"black hair | red hair | blond hair"`` holds its distribution over the options instead. It
competes with the erasure itself (on MiniFaces even a small weight slows it), so it is off unless asked for.
An ``anchor`` replaces the "without" side of every direction; a group anchor (``"a face with brown hair | a face with
blond hair"``) stands for its options together, which erases one value of an attribute (black hair) towards the
others rather than towards a negation CLIP never read in its captions ("without black hair").
``colour_weight`` (optional) holds the colour layout of every sample, with or without the attribute: the mean colour
of each cell of a coarse grid (erasing an attribute may recolour the hair of the faces that show it, which the pixel
term, weighted towards faces without it, does not guard). ``removal_weight`` (optional) adds softplus of the trained
sample's CLIP log-odds of showing the attribute, in the spirit of StyleGAN-NADA's global CLIP loss.

Trainable layers: the synthesis convolutions by default (mapping and toRGB frozen), any stylegan preset, or
``layers=adaptive``: the ``adaptive_k`` layers whose W+ codes move most when the codes themselves are optimised
along the text direction for a few steps (StyleGAN-NADA's layer freezing).

Departures, on purpose: the adaptive selection runs once before training (NADA re-selects every step), so the
patch touches exactly ``adaptive_k`` layers; there is no ArcFace identity loss (no face-recognition weights are
available offline), the CLIP-feature retention term plays that role; a concept that already names a subject
("a smiling face") is contrasted with the plain subject ("a face") rather than with a negation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..models.clip import ClipEncoder
from ..ops import (
    attribute_probability,
    centred_logits,
    code_movement,
    colour_layout_loss,
    feature_retention,
    logit_drift,
    pixel_retention,
    prototype,
    rank_layers,
    removal_loss,
    text_direction,
    weighted_directional_loss,
)
from .base import register_method
from .config import RunConfig, TrainingConfig, check_choice, option
from .loop import TrainedMethod, TrainState, mix_seeds

logger = logging.getLogger(__name__)

SUBJECT_WORDS = frozenset({"face", "faces", "person", "people", "man", "woman", "portrait", "someone", "head"})
DEFAULT_TEMPLATES = ["{}.", "a photo of {}.", "a picture of {}.", "an image of {}.", "a portrait of {}."]


@dataclass
class TextToUnlearnConfig(TrainingConfig):
    steps: int = option(300, "optimisation steps (MiniFaces preset: 650, hair colours 800)")
    lr: float = option(0.002, "Adam learning rate on the generator's unit-scale weights (StyleGAN-NADA: 0.002)")
    batch_size: int = option(4, "latents per step")
    target: Any = option("synthesis_conv", "trainable parameters: a stylegan preset, 're:<regex>' or a list")
    layers: str = option(
        "all", "'all': train every targeted layer; 'adaptive': only the adaptive_k whose W+ codes move most"
    )
    adaptive_k: int = option(3, "layers kept by the adaptive selection")
    adaptive_iters: int = option(
        5, "steps of W+ optimisation that rank the layers (adaptive selection)", advanced=True
    )
    adaptive_lr: float = option(0.01, "Adam learning rate of that W+ optimisation", advanced=True)
    clip: str = option(
        "auto", "CLIP for the losses: 'auto' (the world's own), a transformers folder or open_clip:ARCH@CHECKPOINT"
    )
    subject: str = option(
        "a face", "what the generator draws; prompts read '<subject> with X' / '<subject> without X'"
    )
    templates: list = option(
        list(DEFAULT_TEMPLATES), "prompt templates ('{}' = the description); directions are averaged over them"
    )
    direction_weight: float = option(1.0, "weight of the directional CLIP loss")
    direction_floor: float = option(
        0.05,
        "the directional loss takes the CLIP image change's norm as at least this (a linear push while the change "
        "is smaller; 0: the plain cosine, whose first-step gradient is unbounded and stalls Adam)",
        advanced=True,
    )
    pixel_weight: float = option(10.0, "weight of the pixel MSE retention loss (images in [0, 1])")
    feature_weight: float = option(
        10.0, "weight of the CLIP-feature retention loss (1 - cos); 10 measured best on MiniFaces (docs/minifaces.md)"
    )
    presence_weighting: bool = option(
        True, "weight directions by P(attribute) and retention by P(no attribute)", advanced=True
    )
    presence_scale: float = option(
        0.0, "logit scale of that CLIP probability; 0 = the CLIP's own logit_scale", advanced=True
    )
    truncation_psi: float = option(
        1.0, "truncation of the training latents (1 = the full distribution)", advanced=True
    )
    retain: list = option(
        [],
        "concepts to keep, as text ('a smile'; a group 'black hair | red hair' keeps its distribution): on every "
        "sample, their CLIP log-odds must not move",
    )
    retain_weight: float = option(
        1.0,
        "weight of that retention (squared change of each log-odds, averaged); it competes with the erasure: on "
        "MiniFaces 1 already slows it (docs/minifaces.md)",
    )
    removal_weight: float = option(
        0.0,
        "weight of a CLIP classification term: softplus of each trained sample's log-odds of showing the attribute "
        "(MiniFaces preset: 1)",
        advanced=True,
    )
    colour_weight: float = option(
        0.0,
        "weight of a colour-layout retention on every sample, with or without the attribute: the squared change "
        "of the image's mean colour in each cell of a colour_grid x colour_grid grid (images in [0, 1]; MiniFaces "
        "preset: 1000)",
        advanced=True,
    )
    colour_grid: int = option(4, "cells per side of that grid (4: 16 x 16 px cells at 64 px)", advanced=True)
    stop_ratio: float = option(
        0.0,
        "stop before `steps` once the trained samples' CLIP probability of showing the attribute, summed over the "
        "last stop_window steps, is at most this fraction of the frozen samples' (e.g. 0.03; 0: run every step)",
        advanced=True,
    )
    stop_window: int = option(50, "steps that early stop sums over (50 x batch 4: 200 samples)", advanced=True)

    def __post_init__(self):
        super().__post_init__()
        check_choice("layers", self.layers, ("all", "adaptive"))
        if self.adaptive_k < 1 or self.adaptive_iters < 1 or self.adaptive_lr <= 0:
            raise ValueError("adaptive_k and adaptive_iters must be >= 1 and adaptive_lr > 0.")
        if not isinstance(self.templates, list) or not self.templates:
            raise ValueError("templates must be a non-empty list of strings with one '{}' each.")
        for t in self.templates:
            if not isinstance(t, str) or t.count("{}") != 1:
                raise ValueError(f"template {t!r} must be a string with exactly one '{{}}'.")
        weights = (
            self.direction_weight,
            self.pixel_weight,
            self.feature_weight,
            self.presence_scale,
            self.direction_floor,
        )
        if min(weights) < 0 or self.direction_weight == 0:
            raise ValueError(
                "the loss weights, presence_scale and direction_floor must be >= 0, and direction_weight > 0."
            )
        if not 0 < self.truncation_psi <= 1 or not self.subject.strip():
            raise ValueError("truncation_psi must be in (0, 1] and subject non-empty.")
        if not isinstance(self.retain, list) or not all(isinstance(r, str) and r.strip() for r in self.retain):
            raise ValueError("retain must be a list of concepts as text, e.g. ['smile', 'a hat'].")
        if self.retain_weight < 0 or self.removal_weight < 0 or self.colour_weight < 0:
            raise ValueError("retain_weight, removal_weight and colour_weight must be >= 0.")
        if self.colour_grid < 1:
            raise ValueError(f"colour_grid must be >= 1 (cells per side), got {self.colour_grid}.")
        if not 0 <= self.stop_ratio < 1 or self.stop_window < 1:
            raise ValueError(
                f"stop_ratio must be in [0, 1) (0 disables early stop) and stop_window >= 1; got {self.stop_ratio} "
                f"and {self.stop_window}."
            )


def concept_parts(concept: str | Sequence[str]) -> list[str]:
    """``"glasses, beard"`` or ``["glasses", "beard"]`` -> ``["glasses", "beard"]``; empty -> ValueError."""
    items = concept.split(",") if isinstance(concept, str) else list(concept)
    parts = [str(p).strip() for p in items if str(p).strip()]
    if not parts:
        raise ValueError("The concept is empty; name what to erase, e.g. --concept glasses or 'glasses, beard'.")
    return parts


def prompt_pair(part: str, subject: str, anchor: str | None = None) -> tuple[str, str]:
    """The (with, without) descriptions of one concept part: ``"glasses"`` -> ("a face with glasses", "a face
    without glasses"); a part naming a subject (``"a smiling face"``) -> (itself, ``subject``); ``anchor``, when
    given, replaces the "without" side."""
    if set(re.findall(r"[a-z]+", part.lower())) & SUBJECT_WORDS:
        return part, anchor or subject
    return f"{subject} with {part}", anchor or f"{subject} without {part}"


def group_options(text: str) -> list[str]:
    """The options of a group ``"a face with brown hair | a face with red hair"`` (one text: itself). As the
    "without" side of a direction, a group stands for its options together (their template embeddings are averaged),
    so that a value of an attribute, e.g. a hair colour, is erased towards the attribute's other values."""
    options = [o.strip() for o in str(text).split("|")]
    if not all(options):
        raise ValueError(
            f"{text!r} has an empty option; separate the options with ' | ', e.g. 'a face with red hair | a face with blond hair'."
        )
    return options


def resolve_clip(spec: str, handle) -> tuple[Any, Any]:
    """``(model, processor)`` for the ``clip`` option; ``"auto"`` means the generator's world folder's ``clip/``."""
    from ..eval.clip import clip_loader

    if spec == "auto":
        world = getattr(handle, "world", None)
        if world is None or not (Path(world) / "clip" / "config.json").is_file():
            raise ValueError(
                "text_to_unlearn needs a CLIP: this generator does not come from a world folder with clip/, so pass "
                "--set clip=/path/to/transformers_clip_folder (or open_clip:ARCH@CHECKPOINT)."
            )
        spec = str(Path(world) / "clip")
    return clip_loader(spec)()


@register_method("text_to_unlearn")
class TextToUnlearn(TrainedMethod):
    """Text-to-Unlearn on StyleGAN2 generators; produces a dense patch on the chosen synthesis layers."""

    config_class = TextToUnlearnConfig
    kinds = ("stylegan",)
    summary = "Text-to-Unlearn (StyleGAN2): directional CLIP loss from text only, with retention — dense patch"

    def __init__(self, config: TextToUnlearnConfig | None = None, run: RunConfig | None = None):
        super().__init__(config, run)
        self._selected: list[str] | None = None
        self._text: dict | None = None
        self._stopped: dict | None = None  # {"step", "ratio"} of the erasure's early stop, if it stopped early

    def default_target(self) -> Any:
        if self._selected:
            return [f"re:{re.escape(n)}" for n in self._selected]
        return self.config.target

    def erase(self, model, concept, anchor: str | None = None, callbacks=()):
        from ..models import load_model

        handle = load_model(model)
        if handle.kind not in self.kinds:
            raise ValueError(f"{self.name} works on StyleGAN2 generators, not {handle.kind} models.")
        parts = concept_parts(concept)
        both = sorted(
            {p.lower() for p in parts} & {o.strip().lower() for r in self.config.retain for o in r.split("|")}
        )
        if both:
            raise ValueError(f"{', '.join(both)} is both erased and retained; drop it from retain.")
        flags = [(p, p.requires_grad) for p in handle.generator.parameters()]
        handle.generator.requires_grad_(False)  # gradients flow only into the trainable copies, never the caller's
        self._stopped = None
        try:
            self._text = self._encode_text(handle, parts, anchor)
            if self.config.layers == "adaptive":
                self._selected = self._select_layers(handle)
            patch = super().erase(handle, ", ".join(parts), anchor, callbacks)
            patch.metadata["text_to_unlearn"] = {
                "prompts": self._text["pairs"],
                "layers": sorted(patch.deltas),
                "stopped_early": self._stopped,
            }
            return patch
        finally:
            self._text, self._selected = None, None
            for p, flag in flags:
                p.requires_grad_(flag)

    def _encode_text(self, handle, parts: list[str], anchor: str | None) -> dict:
        cfg = self.config
        encoder = ClipEncoder(*resolve_clip(cfg.clip, handle), handle.device)
        pairs = [prompt_pair(p, cfg.subject, anchor) for p in parts]
        directions, protos = [], []
        for with_text, without_text in pairs:
            w = encoder.texts([t.format(with_text) for t in cfg.templates])
            wo = torch.cat([encoder.texts([t.format(o) for t in cfg.templates]) for o in group_options(without_text)])
            directions.append(text_direction(w, wo))
            protos.append(torch.stack([prototype(w), prototype(wo)]))
        retained = []  # per retain entry, its prototypes [K, D]: (with, without), or one per option of a group
        for entry in cfg.retain:
            options = [o.strip() for o in entry.split("|")]
            texts = [prompt_pair(o, cfg.subject)[0] for o in options] if len(options) > 1 else None
            texts = texts or list(prompt_pair(options[0], cfg.subject))
            embeds = [encoder.texts([t.format(text) for t in cfg.templates]) for text in texts]
            retained.append(torch.stack([prototype(e) for e in embeds]))
        return {
            "encoder": encoder,
            "pairs": pairs,
            "directions": torch.stack(directions),
            "protos": protos,
            "retain_protos": retained or None,
        }

    def _latents(self, handle, generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        G = handle.generator
        z = torch.stack([torch.randn(G.z_dim, generator=g) for g in generators]).to(handle.device)
        with torch.no_grad():
            ws = G.mapping(z, None, truncation_psi=self.config.truncation_psi, update_w_avg=False)
        return z, ws

    def _select_layers(self, handle) -> list[str]:
        """Optimise W+ codes along the text directions for a few steps; keep the layers whose codes moved most."""
        from ..patch import resolve_targets

        cfg, text = self.config, self._text
        names = resolve_targets(cfg.target, handle.named_parameters(), handle.kind)
        gens = [torch.Generator().manual_seed(mix_seeds(cfg.seed, -7, i)) for i in range(cfg.batch_size)]
        _, ws = self._latents(handle, gens)
        with torch.no_grad():
            base = text["encoder"].images(handle.synthesize(ws))
        codes = ws.clone().requires_grad_(True)
        opt = torch.optim.Adam([codes], lr=cfg.adaptive_lr)
        for _ in range(cfg.adaptive_iters):
            moved = text["encoder"].images(handle.synthesize(codes)) - base
            loss = -(moved @ text["directions"].T).mean()  # move along every direction (linear: no 0/0 at start)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        movement = code_movement(ws, codes)
        chosen = rank_layers(movement, names, handle.generator.synthesis.block_resolutions, cfg.adaptive_k)
        logger.info("text_to_unlearn: adaptive selection kept %s", chosen)
        return chosen

    def prepare(self, state: TrainState) -> None:
        state.ctx.update(self._text)
        mapping = {k: v for k, v in state.params.items() if k.startswith("generator.mapping.")}
        state.ctx["mapping_params"] = {k[len("generator.mapping.") :]: v for k, v in mapping.items()}
        state.ctx["synthesis_params"] = {k: v for k, v in state.params.items() if k not in mapping}
        scale = self.config.presence_scale or state.ctx["encoder"].logit_scale
        state.ctx["presence_scale"] = scale

    def _probability(self, state: TrainState, feats: torch.Tensor) -> torch.Tensor:
        """``[N, parts]``: CLIP probability that each image (its features) shows each erased attribute."""
        return attribute_probability(feats, state.ctx["protos"], state.ctx["presence_scale"])

    def _presence(self, state: TrainState, feats: torch.Tensor) -> torch.Tensor:
        """``[N, parts]``: the weights of the frozen images' direction terms (their :meth:`_probability`, or 1s
        without presence weighting)."""
        if not self.config.presence_weighting:
            return torch.ones(len(feats), len(state.ctx["protos"]), device=feats.device)
        return self._probability(state, feats)

    def _early_stop(self, state: TrainState, frozen: torch.Tensor, trained: torch.Tensor) -> dict[str, float]:
        """Record this step's summed attribute probabilities of the frozen and the trained samples (``[N, parts]``
        each); once ``stop_window`` steps are recorded and the trained sum over them is at most ``stop_ratio`` times
        the frozen sum, ask the loop to stop after this step. The window restarts on resume (it is not
        checkpointed)."""
        sums = torch.stack([frozen.sum(), trained.sum()]).detach().float()
        distributed.all_reduce_mean_([sums])  # every process sees the same sums, so all stop at the same step
        window = state.ctx.setdefault("stop_sums", [])
        window.append(sums.cpu())
        del window[: -self.config.stop_window]
        frozen, trained = torch.stack(window).sum(0).tolist()
        ratio = trained / frozen if frozen > 0 else 1.0
        if len(window) == self.config.stop_window and frozen > 0 and ratio <= self.config.stop_ratio:
            state.should_stop = True
            self._stopped = {"step": state.step + 1, "ratio": round(ratio, 6)}
            logger.info(
                "text_to_unlearn: stopping after step %d of %d: over the last %d steps the trained samples' CLIP "
                "probability of the attribute is %.3f of the frozen samples' (stop_ratio %g)",
                state.step + 1,
                state.total_steps,
                self.config.stop_window,
                ratio,
                self.config.stop_ratio,
            )
        return {"presence_ratio": ratio}

    def _retained(self, state: TrainState, feats: torch.Tensor) -> list[torch.Tensor]:
        """Per ``retain`` entry, ``[N, K]`` :func:`~erasekit.ops.centred_logits` of its prototypes."""
        return [centred_logits(feats, protos, state.ctx["presence_scale"]) for protos in state.ctx["retain_protos"]]

    def training_step(self, state: TrainState) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, handle, enc = self.config, state.handle, state.ctx["encoder"]
        z, ws = self._latents(handle, state.sample_generators(cfg.batch_size))
        with torch.no_grad():
            frozen = handle.synthesize(ws)
            f_frozen = enc.images(frozen)
            presence = self._presence(state, f_frozen)
        ws_t = ws
        if state.ctx["mapping_params"]:
            kwargs = {"truncation_psi": cfg.truncation_psi, "update_w_avg": False}
            mapping = handle.generator.mapping
            ws_t = torch.func.functional_call(mapping, state.ctx["mapping_params"], (z,), kwargs, strict=False)
        trained = handle.synthesize(ws_t, params=state.ctx["synthesis_params"])
        f_trained = enc.images(trained)
        direction = weighted_directional_loss(
            f_trained, f_frozen, state.ctx["directions"], presence, cfg.direction_floor
        )
        keep = 1 - presence.max(dim=1).values if cfg.presence_weighting else torch.ones_like(presence[:, 0])
        pixel, feature = pixel_retention(trained, frozen, keep), feature_retention(f_trained, f_frozen, keep)
        loss = cfg.direction_weight * direction + cfg.pixel_weight * pixel + cfg.feature_weight * feature
        logs = {
            name: float(v.detach()) for name, v in (("direction", direction), ("pixel", pixel), ("feature", feature))
        }
        if cfg.removal_weight:
            # the directional term only aligns the change; this one asks CLIP to read the trained face as without
            removal = removal_loss(f_trained, state.ctx["protos"], state.ctx["presence_scale"], presence)
            loss = loss + cfg.removal_weight * removal
            logs["removal"] = float(removal.detach())
        if cfg.colour_weight:
            # the samples' colour layout (hair, skin, background) on every sample: the pixel term above spares the
            # faces that show the attribute, and erasing it there may recolour the hair; cell means barely see the
            # attribute's own thin shapes
            colour = colour_layout_loss(trained, frozen, cfg.colour_grid)
            loss = loss + cfg.colour_weight * colour
            logs["colour"] = float(colour.detach())
        if state.ctx["retain_protos"] is not None and cfg.retain_weight:
            with torch.no_grad():
                before = self._retained(state, f_frozen)
            retain = logit_drift(self._retained(state, f_trained), before)
            loss = loss + cfg.retain_weight * retain
            logs["retain"] = float(retain.detach())
        if cfg.stop_ratio:
            with torch.no_grad():
                frozen_p, trained_p = self._probability(state, f_frozen), self._probability(state, f_trained)
            logs.update(self._early_stop(state, frozen_p, trained_p))
        return loss, {**logs, "presence": float(presence.mean())}
