"""Recipe stage: MiniCanvas's style and object classifiers (the evaluator), trained on rendered images with the
shared judge loop (:func:`erasekit_worlds.recipes.classifier.train_classifier`); accuracy is measured on the
disjoint held-out split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...minicanvas.classifier import ClassifierConfig, ImageClassifier
from ...minicanvas.data import OBJECTS, STYLES
from .. import classifier
from ..training import generator, seeded
from .banks import ImageBank


@dataclass
class ClassifierTrainConfig(classifier.ClassifierTrainConfig):
    """How the two classifiers are trained (see the base class for the shared fields)."""

    steps: int = 700  # optimiser steps per classifier (~6 passes over 64 images x 110 pairs); > 99% held out
    label_smoothing: float = 0.05  # keeps logits calibrated enough to be read as confidences


def train_classifier(
    kind: str, bank: ImageBank, cfg: ClassifierTrainConfig, seed: int, device: torch.device
) -> tuple[ImageClassifier, dict]:
    """Train the ``kind`` (``"style"`` or ``"object"``) classifier on every image of ``bank``.

    Returns:
        The classifier in eval mode (fp32, on ``device``) and its stage statistics.
    """
    labels, targets = (list(STYLES), bank.style_ids) if kind == "style" else (list(OBJECTS), bank.object_ids)
    with seeded("classifier", kind, seed):
        model = ImageClassifier(ClassifierConfig(width=cfg.width), labels).to(device)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)

    seed_parts = ("classifier-data", kind, seed)
    stats = classifier.train_classifier(model, bank, targets, loss, cfg, seed_parts, device, f"{kind} classifier")
    return model, stats


def evaluate_classifiers(
    models: dict[str, ImageClassifier], heldout: ImageBank, device: torch.device
) -> dict[str, float]:
    """Held-out accuracy of each classifier, clean and under a fixed mild blur + noise (a robustness check)."""
    images = heldout.floats(torch.arange(len(heldout), device=device))
    degraded = classifier.degrade(images, generator(device, "classifier-eval"))
    out = {}
    for kind, model in models.items():
        targets = heldout.style_ids if kind == "style" else heldout.object_ids
        out[f"{kind}_accuracy"] = round(classifier.accuracy(model, images, targets), 4)
        out[f"{kind}_accuracy_degraded"] = round(classifier.accuracy(model, degraded, targets), 4)
    out["heldout_images"] = len(heldout)
    return out
