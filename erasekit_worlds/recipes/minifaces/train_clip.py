"""Recipe stage: MiniFaces' own small CLIP, trained contrastively on faces and captions with the shared CLIP core
(:mod:`erasekit_worlds.recipes.clip`).

Captions name a random subset of what a face has and of what it lacks ("a photo of a smiling person with glasses,
without a hat"). A caption is a correct description of *many* faces in a batch, so the loss counts every caption
that holds for a face as a positive of it (:func:`~erasekit_worlds.minifaces.data.consistent`), not only its own:
the embedding learns attributes, and the negated phrases ("without glasses") that Text-to-Unlearn's directions use.

Zero-shot protocol: for each binary attribute, a face is called positive when it is closer to the mean embedding of
``"a face with X"`` than of ``"a face without X"`` (over the held-out templates); hair colour is a 4-way choice
among ``"a face with C hair"``. Measured on held-out faces.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...common import stable_seed
from ...minifaces.data import (
    BINARY_ATTRIBUTES,
    HAIR_COLOURS,
    HELDOUT_TEMPLATES,
    PHRASES,
    TRAIN_TEMPLATES,
    FaceBank,
    consistent,
    decode,
    describe,
    prompt_phrase,
)
from .. import clip
from ..clip import build_clip, image_embeds, logit_scale, multi_positive_nce, text_embeds
from ..training import augment, n_params

logger = logging.getLogger(__name__)

CAPTION_TOKENS = 64  # the longest caption is ~40 tokens; the causal text tower never looks past its EOS


@dataclass
class FaceClipTrainConfig(clip.ClipTrainConfig):
    """The CLIP architecture and its training (see the base class for the shared fields)."""

    steps: int = 3000  # optimiser steps
    batch_size: int = 128  # faces (and captions) per step


def _captions(labels: torch.Tensor, templates: Sequence[str], seed: int, step: int) -> tuple[list[str], torch.Tensor]:
    """One random caption per face (template and description) and the claims it makes ``[B, 7]``."""
    rng = np.random.default_rng(stable_seed("minifaces-clip-captions", seed, step))
    texts, claims = [], []
    for row in labels.cpu().tolist():
        text, claim = describe(decode(row), rng)
        texts.append(templates[int(rng.integers(len(templates)))].format(text))
        claims.append(claim)
    return texts, torch.from_numpy(np.stack(claims)).to(labels.device)


def tokenize(tokenizer, texts: Sequence[str], device: torch.device, length: int = CAPTION_TOKENS) -> torch.Tensor:
    """Token ids ``[B, length]`` padded with ``<|endoftext|>``."""
    ids = tokenizer(list(texts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return ids.input_ids.to(device)


def train_face_clip(
    bank: FaceBank, tokenizer, cfg: FaceClipTrainConfig, seed: int, device: torch.device
) -> tuple[object, dict]:
    """Train the world's CLIP on ``bank`` with captions from the training templates."""
    model = build_clip(cfg, seed).to(device).train()  # seeded inside

    def batch_loss(step: int, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        idx = torch.randint(len(bank), (min(cfg.batch_size, len(bank)),), generator=gen, device=device)
        x = augment(bank.floats(idx), gen, blur_prob=cfg.blur_prob, noise_prob=cfg.noise_prob)
        texts, claims = _captions(bank.labels[idx], TRAIN_TEMPLATES, seed, step)
        logits = logit_scale(model) * image_embeds(model, x) @ text_embeds(model, tokenize(tokenizer, texts, device)).T
        return multi_positive_nce(logits, consistent(bank.labels[idx], claims)), cfg.batch_size  # the configured
        # size, as the manifests record it

    steps = (cfg.steps, cfg.lr, cfg.weight_decay, cfg.warmup)
    stats = clip.fit_clip(model, batch_loss, *steps, ("minifaces-clip-data", seed), device)
    model.eval()
    return model, {**stats, "params": n_params(model)}


@dataclass
class FaceClipTuneConfig(clip.ClipTuneConfig):
    """The CLIP stage's second part: the CLIP tuned on per-attribute statements. The main stage's captions name a
    random subset of a face's attributes, and a small attribute (earrings: a few pixels) can come out of it unlearnt
    (seed 0: zero-shot 65 %, "never"); here every face is also scored against the two statements of every attribute
    ("a face with earrings" / "a face without earrings", mean over the training templates) and against the hair
    colours, a cross-entropy per attribute, beside the main stage's caption loss. The zero-shot protocol reads
    held-out templates on held-out faces (docs/minifaces.md has the measurements)."""

    steps: int = 1500  # optimiser steps (0: no tuning); 600 left earrings at 73 %
    batch_size: int = 128  # faces per step
    lr: float = 1e-3  # AdamW peak learning rate (warm-up, then cosine), the main stage's
    statement_weight: float = 1.0  # weight of the per-attribute statement loss (the captions' loss has weight 1)
    train_text: bool = True  # also tune the text side (frozen, the image side alone left earrings at 65 %)


def _statement_prototypes(model, tokenizer, excluded: Sequence[str]) -> tuple[dict, torch.Tensor | None, list[int]]:
    """Per binary attribute not excluded, its (with, without) prototypes ``[2, dim]`` over the training templates;
    the hair colours' ``[C, dim]`` (those not excluded) and their label indices. Gradients flow when enabled."""
    pairs = {
        k: torch.stack(
            [
                _prototype(model, tokenizer, prompt_phrase(a), TRAIN_TEMPLATES),
                _prototype(model, tokenizer, f"a face {PHRASES[a][1]}", TRAIN_TEMPLATES),
            ]
        )
        for k, a in enumerate(BINARY_ATTRIBUTES)
        if a not in excluded
    }
    colours = [i for i, c in enumerate(HAIR_COLOURS) if f"hair_{c}" not in excluded]
    hair = None
    if len(colours) > 1:
        names = [prompt_phrase(f"hair_{HAIR_COLOURS[i]}") for i in colours]
        hair = torch.stack([_prototype(model, tokenizer, n, TRAIN_TEMPLATES) for n in names])
    return pairs, hair, colours


def statement_loss(feats, labels, pairs: dict, hair, colours: list[int], scale) -> torch.Tensor:
    """Mean over attributes of the cross-entropy of each face between "with X" and "without X" (class 0 = present),
    plus the hair colours' cross-entropy."""
    losses = [F.cross_entropy(scale * feats @ protos.T, (1 - labels[:, k]).long()) for k, protos in pairs.items()]
    if hair is not None:
        index = torch.full((len(HAIR_COLOURS),), -100, dtype=torch.long, device=labels.device)
        index[colours] = torch.arange(len(colours), device=labels.device)
        losses.append(F.cross_entropy(scale * feats @ hair.T, index[labels[:, -1].long()], ignore_index=-100))
    return torch.stack(losses).mean()


def tune_face_clip(
    model,
    bank: FaceBank,
    tokenizer,
    cfg: FaceClipTrainConfig,
    tune: FaceClipTuneConfig,
    seed: int,
    device,
    excluded=(),
) -> dict:
    """Tune ``model`` in place (see :class:`FaceClipTuneConfig`) on ``bank`` (without ``excluded``, whose statements
    are left out too); returns the stage statistics (``params``: the tuned parameters)."""
    text_side = [model.text_model, model.text_projection]
    if not tune.train_text:
        for module in text_side:
            module.requires_grad_(False).eval()
    model.vision_model.train()
    frozen = None
    if not tune.train_text:
        with torch.no_grad():
            frozen = _statement_prototypes(model, tokenizer, excluded)
    params = [p for p in model.parameters() if p.requires_grad]

    def batch_loss(step: int, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        idx = torch.randint(len(bank), (min(tune.batch_size, len(bank)),), generator=gen, device=device)
        x = augment(bank.floats(idx), gen, blur_prob=cfg.blur_prob, noise_prob=cfg.noise_prob)
        labels = bank.labels[idx]
        texts, claims = _captions(labels, TRAIN_TEMPLATES, seed, 1_000_000 + step)
        with torch.set_grad_enabled(tune.train_text):
            txt = text_embeds(model, tokenize(tokenizer, texts, device))
            pairs, hair, colours = frozen or _statement_prototypes(model, tokenizer, excluded)
        feats = image_embeds(model, x)
        scale = logit_scale(model)
        loss = multi_positive_nce(scale * feats @ txt.T, consistent(labels, claims))
        return loss + tune.statement_weight * statement_loss(
            feats, labels, pairs, hair, colours, scale
        ), tune.batch_size

    steps = (tune.steps, tune.lr, cfg.weight_decay, tune.warmup)
    stats = clip.fit_clip(model, batch_loss, *steps, ("minifaces-clip-tune-data", seed), device, name="clip tune")
    model.eval().requires_grad_(True)
    return {**stats, "params": sum(p.numel() for p in params)}


def _prototype(model, tokenizer, description: str, templates: Sequence[str]) -> torch.Tensor:
    """The normalised mean text embedding of ``description`` in ``templates`` (gradients flow when enabled)."""
    device = model.text_projection.weight.device
    ids = tokenize(tokenizer, [t.format(description) for t in templates], device)
    return F.normalize(text_embeds(model, ids).mean(0), dim=-1)


@torch.no_grad()
def zero_shot(model, tokenizer, heldout: FaceBank, templates: Sequence[str] = HELDOUT_TEMPLATES) -> dict:
    """Zero-shot accuracy per binary attribute ("a face with X" vs "a face without X") and for hair colour."""
    model.eval()
    n = len(heldout)
    feats = torch.cat(
        [image_embeds(model, heldout.floats(torch.arange(i, min(i + 256, n)))) for i in range(0, n, 256)]
    )
    labels, out = heldout.labels.to(feats.device), {}
    for k, a in enumerate(BINARY_ATTRIBUTES):
        pos = _prototype(model, tokenizer, prompt_phrase(a), templates)
        neg = _prototype(model, tokenizer, f"a face {PHRASES[a][1]}", templates)
        pred = (feats @ pos > feats @ neg).long()
        out[a] = round(float((pred == labels[:, k]).float().mean()), 4)
    protos = torch.stack([_prototype(model, tokenizer, prompt_phrase(f"hair_{c}"), templates) for c in HAIR_COLOURS])
    out["hair"] = round(float(((feats @ protos.T).argmax(1) == labels[:, -1]).float().mean()), 4)
    return {"accuracy": out, "min_binary_accuracy": min(out[a] for a in BINARY_ATTRIBUTES), "heldout_images": n}
