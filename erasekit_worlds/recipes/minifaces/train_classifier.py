"""Training the MiniFaces attribute classifier on rendered faces (blur and grain augmented, never generated faces)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...minifaces.classifier import AttributeClassifier, AttributeClassifierConfig
from ...minifaces.data import FaceBank
from ..minicanvas.training import (
    Stopwatch,
    adamw,
    augment,
    check_finite,
    generator,
    log_progress,
    n_params,
    seeded,
    warmup_cosine,
)


@dataclass
class ClassifierTrainConfig:
    """How the attribute classifier is trained (each field's comment says why its default)."""

    width: int = 16  # first-stage channels
    steps: int = 1500  # optimiser steps (~5 passes over 20,000 faces at batch 64)
    batch_size: int = 64  # faces per step
    lr: float = 3e-3  # AdamW peak learning rate (warm-up, then cosine)
    weight_decay: float = 0.05  # on conv and linear weights
    warmup: int = 50  # warm-up steps
    blur_prob: float = 0.5  # share of faces blurred (sigma <= max_blur px): generated faces are softer
    max_blur: float = 1.0  # largest blur sigma in pixels
    noise_prob: float = 0.5  # share of faces with Gaussian noise
    max_noise: float = 0.05  # largest noise std (images in [0, 1])


def attribute_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the yes/no heads plus the hair-colour cross-entropy."""
    nb = labels.shape[1] - 1
    return F.binary_cross_entropy_with_logits(logits[:, :nb], labels[:, :nb].float()) + F.cross_entropy(
        logits[:, nb:], labels[:, nb]
    )


def train_attribute_classifier(
    bank: FaceBank, cfg: ClassifierTrainConfig, seed: int, device: torch.device, name: str = "minifaces-classifier"
) -> tuple[AttributeClassifier, dict]:
    """Train the classifier on every face of ``bank``; returns it (eval mode, fp32) and its stage statistics.
    ``name`` seeds its initialisation and data order (another name: another, independent classifier)."""
    with seeded(name, seed):
        model = AttributeClassifier(AttributeClassifierConfig(width=cfg.width)).to(device)
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    gen, clock = generator(device, f"{name}-data", seed), Stopwatch(device)
    model.train()
    with seeded(f"{name}-dropout", seed):  # dropout draws from the global RNG: seed it too, or runs differ
        for step in tqdm(range(cfg.steps), desc="attribute classifier", unit="step", disable=None, mininterval=2.0):
            idx = torch.randint(len(bank), (cfg.batch_size,), generator=gen, device=device)
            x = augment(bank.floats(idx), gen, 4, True, cfg.blur_prob, cfg.max_blur, cfg.noise_prob, cfg.max_noise)
            loss = attribute_loss(model(x), bank.labels[idx])
            check_finite(loss, "attribute classifier", step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            log_progress("attribute classifier", step, cfg.steps, loss, clock)
    model.eval()
    stats = {"seconds": clock.seconds(), "steps": cfg.steps, "batch_size": cfg.batch_size, "params": n_params(model)}
    return model, stats


def accuracy_per_attribute(model: AttributeClassifier, bank: FaceBank) -> dict[str, float]:
    """Held-out accuracy of each head: every binary attribute and the hair colour."""
    pred = model.predict(bank.floats(torch.arange(len(bank), device=bank.images.device)))
    hits = (pred == bank.labels.cpu()).float().mean(0)
    return {name: round(float(h), 4) for name, h in zip((*model.binary, "hair"), hits, strict=True)}


def evaluate_classifier(model: AttributeClassifier, heldout: FaceBank, device: torch.device) -> dict:
    """Per-attribute accuracy on clean held-out faces and under a fixed mild blur + noise (robustness)."""
    images = heldout.floats(torch.arange(len(heldout), device=heldout.images.device))
    degraded = augment(images, generator(device, "minifaces-eval"), 0, False, 1.0, 1.0, 1.0, 0.04)
    clean = accuracy_per_attribute(model, heldout)
    blurred = accuracy_per_attribute(model, FaceBank((degraded * 255).round().to(torch.uint8), heldout.labels))
    return {
        "accuracy": clean,
        "accuracy_degraded": blurred,
        "min_accuracy": min(clean.values()),
        "heldout_images": len(heldout),
    }
