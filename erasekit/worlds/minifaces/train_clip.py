"""Recipe stage: MiniFaces' own small CLIP (transformers ``CLIPModel``), trained contrastively on faces and captions.

Captions name a random subset of what a face has and of what it lacks ("a photo of a smiling person with glasses,
without a hat"). A caption is a correct description of *many* faces in a batch, so the loss counts every caption
that holds for a face as a positive of it (:func:`~erasekit.worlds.minifaces.data.consistent`), not only its own:
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
from tqdm.auto import tqdm

from ..minicanvas.data import stable_seed
from ..minicanvas.train_clip import _multi_positive_nce, build_clip, image_embeds, text_embeds
from ..minicanvas.training import (
    Stopwatch,
    adamw,
    augment,
    check_finite,
    generator,
    log_progress,
    n_params,
    warmup_cosine,
)
from .data import (
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

logger = logging.getLogger(__name__)

CAPTION_TOKENS = 64  # the longest caption is ~40 tokens; the causal text tower never looks past its EOS


@dataclass
class FaceClipTrainConfig:
    """The CLIP architecture (the fields :func:`~erasekit.worlds.minicanvas.train_clip.build_clip` reads) and
    its training (each field's comment says why its default)."""

    text_hidden: int = 64  # text width; the 49,408-row token embedding costs 6 MB in fp16
    text_layers: int = 4  # text transformer blocks
    text_heads: int = 4  # text attention heads
    vision_hidden: int = 128  # ViT width
    vision_layers: int = 4  # ViT blocks
    vision_heads: int = 4  # ViT attention heads
    patch_size: int = 8  # 64 px faces -> 8x8 patches
    projection_dim: int = 64  # shared embedding size
    steps: int = 3000  # optimiser steps
    batch_size: int = 128  # faces (and captions) per step
    lr: float = 1e-3  # AdamW peak learning rate (warm-up, then cosine)
    weight_decay: float = 0.1  # also shrinks the embeddings of tokens never seen in training
    warmup: int = 100  # warm-up steps
    blur_prob: float = 0.3  # image augmentation: share blurred (sigma <= 1 px), as generated faces are softer
    noise_prob: float = 0.3  # image augmentation: share with Gaussian noise (std <= 0.04)


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
    opt = adamw(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.98))
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    gen, clock = generator(device, "minifaces-clip-data", seed), Stopwatch(device)
    for step in tqdm(range(cfg.steps), desc="clip", unit="step", disable=None, mininterval=2.0):
        idx = torch.randint(len(bank), (min(cfg.batch_size, len(bank)),), generator=gen, device=device)
        x = augment(bank.floats(idx), gen, blur_prob=cfg.blur_prob, noise_prob=cfg.noise_prob)
        texts, claims = _captions(bank.labels[idx], TRAIN_TEMPLATES, seed, step)
        scale = model.logit_scale.exp().clamp(max=100.0)
        logits = scale * image_embeds(model, x) @ text_embeds(model, tokenize(tokenizer, texts, device)).T
        loss = _multi_positive_nce(logits, consistent(bank.labels[idx], claims))
        check_finite(loss, "clip", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        log_progress("clip", step, cfg.steps, loss, clock)
    model.eval()
    stats = {"seconds": clock.seconds(), "steps": cfg.steps, "batch_size": cfg.batch_size, "params": n_params(model)}
    return model, stats


@torch.no_grad()
def _prototype(model, tokenizer, description: str, templates: Sequence[str]) -> torch.Tensor:
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
