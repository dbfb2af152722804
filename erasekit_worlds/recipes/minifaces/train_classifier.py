"""Recipe stage: the MiniFaces attribute classifier (the judge), trained on rendered faces with the shared judge loop
(:func:`erasekit_worlds.recipes.classifier.train_classifier`): a yes/no head per binary attribute and a hair-colour
head, so its loss is binary cross-entropies plus a cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...minifaces.classifier import AttributeClassifier, AttributeClassifierConfig
from ...minifaces.data import FaceBank
from .. import classifier
from ..training import generator, seeded


@dataclass
class ClassifierTrainConfig(classifier.ClassifierTrainConfig):
    """How the attribute classifier is trained (see the base class for the shared fields)."""

    steps: int = 1500  # optimiser steps (~5 passes over 20,000 faces at batch 64)


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
    ``name`` seeds its initialisation, data order and dropout (another name: another, independent classifier)."""
    with seeded(name, seed):
        model = AttributeClassifier(AttributeClassifierConfig(width=cfg.width)).to(device)
    stats = classifier.train_classifier(
        model,
        bank,
        bank.labels,
        attribute_loss,
        cfg,
        (f"{name}-data", seed),
        device,
        "attribute classifier",
        dropout_seed=(f"{name}-dropout", seed),
    )
    return model, stats


def accuracy_per_attribute(model: AttributeClassifier, bank: FaceBank) -> dict[str, float]:
    """Held-out accuracy of each head: every binary attribute and the hair colour."""
    pred = model.predict(bank.floats(torch.arange(len(bank), device=bank.images.device)))
    hits = (pred == bank.labels.cpu()).float().mean(0)
    return {name: round(float(h), 4) for name, h in zip((*model.binary, "hair"), hits, strict=True)}


def evaluate_classifier(model: AttributeClassifier, heldout: FaceBank, device: torch.device) -> dict:
    """Per-attribute accuracy on clean held-out faces and under a fixed mild blur + noise (robustness)."""
    images = heldout.floats(torch.arange(len(heldout), device=heldout.images.device))
    degraded = classifier.degrade(images, generator(device, "minifaces-eval"))
    clean = accuracy_per_attribute(model, heldout)
    blurred = accuracy_per_attribute(model, FaceBank((degraded * 255).round().to(torch.uint8), heldout.labels))
    return {
        "accuracy": clean,
        "accuracy_degraded": blurred,
        "min_accuracy": min(clean.values()),
        "heldout_images": len(heldout),
    }
