"""The image-classifier training both worlds share: MiniCanvas's style and object classifiers and MiniFaces' attribute
classifier are small CNNs trained the same way and differ only in their heads and loss, which the world passes in.

They judge *generated* images, so training adds the mild softness and grain that samples show (blur and noise
augmentation) on top of shifts and flips; they never see a generated image, so they stay honest judges.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from .training import Stopwatch, adamw, augment, generator, n_params, run_steps, seeded, warmup_cosine


class Images(Protocol):
    """What the loop reads from a world's image bank (MiniCanvas's ``ImageBank``, MiniFaces' ``FaceBank``)."""

    def __len__(self) -> int: ...

    def floats(self, index: torch.Tensor) -> torch.Tensor: ...


@dataclass
class ClassifierTrainConfig:
    """How a judge classifier is trained (each field's comment says why its default); a world's subclass sets its
    own step count and may add loss settings."""

    width: int = 16  # first-stage channels (16-32-64-128: ~0.3M parameters)
    steps: int = 1000  # optimiser steps
    batch_size: int = 64  # images per step
    lr: float = 3e-3  # AdamW peak learning rate (warm-up, then cosine)
    weight_decay: float = 0.05  # AdamW decay on conv and linear weights
    warmup: int = 50  # warm-up steps
    blur_prob: float = 0.5  # share of images blurred (sigma uniform in [0, max_blur] px): generated images are softer
    max_blur: float = 1.0  # largest blur sigma in pixels
    noise_prob: float = 0.5  # share of images with added Gaussian noise
    max_noise: float = 0.05  # largest noise std (images in [0, 1])


def train_classifier(
    model: nn.Module,
    bank: Images,
    targets: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: ClassifierTrainConfig,
    data_seed: tuple,
    device: torch.device,
    name: str,
    dropout_seed: tuple | None = None,
) -> dict:
    """Train ``model`` (already built and on ``device``) in place on every image of ``bank``.

    Args:
        model: the classifier; its logits for a batch go to ``loss(logits, targets[idx])``.
        bank: the training images; ``targets[i]`` is the label (or label row) of image ``i``.
        cfg: the optimiser, schedule and augmentation settings.
        data_seed: the parts of the seed of the batch and augmentation stream (e.g. ``("classifier-data", kind,
            seed)``).
        name: the stage name in progress bars, logs and errors.
        dropout_seed: the parts of the seed of the dropout masks, which draw from the global RNG; None leaves them
            on the process's global RNG, as MiniCanvas's recipe does (seeding them would change its classifiers).

    Returns:
        The stage statistics (seconds, steps, batch size, parameters); ``model`` is left in eval mode.
    """
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    gen, clock = generator(device, *data_seed), Stopwatch(device)
    model.train()

    def loss_at(step: int) -> torch.Tensor:
        idx = torch.randint(len(bank), (cfg.batch_size,), generator=gen, device=device)
        x = augment(bank.floats(idx), gen, 4, True, cfg.blur_prob, cfg.max_blur, cfg.noise_prob, cfg.max_noise)
        return loss(model(x), targets[idx])

    with seeded(*dropout_seed) if dropout_seed is not None else contextlib.nullcontext():
        run_steps(name, cfg.steps, loss_at, opt, sched, clock)
    model.eval()
    return {"seconds": clock.seconds(), "steps": cfg.steps, "batch_size": cfg.batch_size, "params": n_params(model)}


def degrade(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The fixed robustness check's input: every image mildly blurred (sigma <= 1 px) and noised (std <= 0.04)."""
    return augment(images, gen, shift=0, flip=False, blur_prob=1.0, max_blur=1.0, noise_prob=1.0, max_noise=0.04)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of a single-head classifier on float images in ``[0, 1]``."""
    model.eval()
    hits = 0
    for i in range(0, len(images), batch_size):
        hits += int((model(images[i : i + batch_size]).argmax(1) == targets[i : i + batch_size]).sum())
    return hits / max(1, len(images))
