"""The settings of the MiniFaces generator stage (:mod:`~erasekit_worlds.recipes.minifaces.train_gan`): both
networks' architectures, the objective and its losses, the optimiser and the EMA."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from erasekit.models.stylegan import StyleGAN2Config

from ...minifaces.data import BINARY_ATTRIBUTES, IMAGE_SIZE, LATENT_UNIFORMS
from .discriminator import DiscriminatorConfig

OBJECTIVES = ("render", "adversarial")
PIXEL_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}
# objective -> (Adam lr, Adam betas, mapping MLP lr multiplier) when the config leaves them unset
OBJECTIVE_DEFAULTS = {"render": (0.006, (0.9, 0.99), 1.0), "adversarial": (0.0025, (0.0, 0.99), 0.01)}
FINAL_LR_DEFAULTS = {"render": 0.1, "adversarial": 1.0}


@dataclass
class GanTrainConfig:
    """Architectures and training of the generator and discriminator (each comment says why its default)."""

    z_dim: int = 64  # latent size; 64 px faces need far less than the paper's 512 (the renderer reads 39)
    w_dim: int = 256  # intermediate latent size
    mapping_layers: int = 4  # mapping MLP depth (the paper's 8 is for 1024 px)
    channel_base: int = 4096  # G channels 128-128-128-128-64 (4..64 px): 1.8M parameters, 3.6 MB in fp16; a
    # render step at batch 16 costs ~0.4 s on 2 CPU cores (docs/minifaces.md)
    channel_max: int = 128  # G channel cap (192: 2.9M parameters, 0.48 s per step)
    d_channel_base: int = 4096  # D channels, the same rule
    d_channel_max: int = 256  # D channel cap
    objective: str = "render"  # regression onto the renderer (CPU-sized), or "adversarial" (GPU-sized; see above)
    steps: int = 30000  # optimiser steps of each network (render: ~3.3 h on 2 CPU cores; adversarial wants batch 32)
    batch_size: int = 16  # faces per step
    lr: float | None = None  # Adam learning rate; None: 0.006 for "render", 0.0025 (the paper's) for "adversarial"
    mapping_lr_multiplier: float | None = None  # None: 1.0 for "render" (an MLP fit), 0.01 (the paper's) otherwise
    lr_final: float | None = None  # the lr falls along a cosine to this fraction of itself at the last step; None:
    # 0.1 for "render" (a regression settles at a lower lr), 1.0 (constant, the paper's) for "adversarial"
    pixel_loss: str = "l1"  # "render": "l1" or "mse", on pixels and their differences
    edge_weight: float = 1.0  # "render": weight of the loss on pixel differences (keeps thin lines: glasses, earrings)
    attribute_weight: float = 0.0  # "render": weight of a teacher classifier's loss on the samples against their
    # latents' attributes (a classifier of its own, trained first on the stage's faces; never the evaluator's judge)
    teacher_steps: int = 1500  # the teacher's optimiser steps (the judge's recipe otherwise)
    pair_weight: float = 0.5  # "render": the second half of each batch is the first with one binary attribute
    # flipped, and this weighs the L1 between the generator's and the renderer's difference images of each pair,
    # averaged over the region the flip changes (supervises what each attribute's latent dimension draws; small
    # shapes get as much weight as large ones)
    pair_distance: str = "l1"  # "render": "l1" or "mse" between the pairs' difference images. L1 pulls towards the
    # median difference, which is "nothing" while the network cannot yet tell an attribute's colour (earrings come
    # in 4 colours: per channel the median change is about 0), so it never starts drawing it; MSE pulls towards
    # the mean change, which is not 0, so MSE teaches small many-coloured attributes that L1 leaves undrawn
    region_weight: float = 0.0  # "render": weight of the ``pair_distance`` between each face of a pair and the
    # renderer's, averaged over the pair's flip region (:func:`region_loss`). The pair term only sees differences:
    # a half-drawn earring on both faces has the right difference, and the whole-image pixel loss hardly sees a
    # few pixels, so an attribute can stay a ramp along its latent instead of a step; this term pulls each face to
    # the renderer's where the attribute is drawn
    flip_weights: dict | None = None  # "render": relative chance of each binary attribute being the one a pair
    # flips, e.g. {"earrings": 4} (unnamed ones weigh 1); None: each equally
    r1_gamma: float = 0.05  # R1 weight; small images want small gamma (StyleGAN2-ADA uses 0.01-0.1 below 128 px)
    r1_every: int = 16  # lazy regularisation interval (the paper's)
    style_mixing: float = 0.9  # share of batches whose ws switch to a second latent at a random layer
    ema_images: int = 10_000  # EMA half-life in images (the paper's 10 kimg)
    ema_rampup: float = 0.05  # half-life at most this fraction of the images seen so far (early steps move faster)
    mbstd_group: int = 4  # minibatch-stddev group size
    precision: str = "float32"  # "render": the generator's passes in "float32" or under "bfloat16" autocast
    # (weights, Adam and the losses stay fp32); 15 % less time per step on this CPU (AVX512-BF16; docs/minifaces.md)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"pixel_loss must be one of {', '.join(PIXEL_LOSSES)}, got {self.pixel_loss!r}")
        if self.objective == "render" and self.z_dim < LATENT_UNIFORMS:
            raise ValueError(f"the render objective reads {LATENT_UNIFORMS} latent dimensions; z_dim is {self.z_dim}")
        if self.lr_final is not None and not 0 < self.lr_final <= 1:
            raise ValueError(f"lr_final is a fraction of lr in (0, 1], got {self.lr_final}")
        if self.pair_weight < 0:
            raise ValueError(f"pair_weight must be >= 0, got {self.pair_weight}")
        if self.region_weight < 0:
            raise ValueError(f"region_weight must be >= 0, got {self.region_weight}")
        if self.region_weight and not self.pair_weight:
            raise ValueError("region_weight weighs the flip region of pairs of faces: it needs pair_weight > 0")
        if self.pair_distance not in PIXEL_LOSSES:
            raise ValueError(f"pair_distance must be one of {', '.join(PIXEL_LOSSES)}, got {self.pair_distance!r}")
        if self.flip_weights is not None:
            if not isinstance(self.flip_weights, dict):
                raise ValueError(
                    f"flip_weights maps attribute names to weights, e.g. {{earrings: 4}}; got {self.flip_weights!r}"
                )
            unknown = sorted(set(self.flip_weights) - set(BINARY_ATTRIBUTES))
            if unknown:
                raise ValueError(
                    f"flip_weights: unknown attribute(s) {', '.join(map(str, unknown))}; the binary "
                    f"attributes are {', '.join(BINARY_ATTRIBUTES)}"
                )
            bad = {
                k: v
                for k, v in self.flip_weights.items()
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0
            }
            if bad:
                raise ValueError(f"flip_weights must be numbers >= 0, got {bad}")
            self.flip_weights = {k: float(v) for k, v in self.flip_weights.items()}
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision != "float32" and self.objective != "render":
            raise ValueError("precision other than float32 is for the render objective (R1 wants fp32 gradients)")
        if self.pair_weight and (self.batch_size < 2 or self.batch_size % 2):
            raise ValueError(
                f"pair_weight > 0 trains on pairs of faces: batch_size must be even, got {self.batch_size}"
            )

    def resolved(self) -> tuple[float, tuple[float, float], float]:
        """``(lr, betas, mapping lr multiplier)`` with the objective's defaults filled in."""
        lr, betas, mult = OBJECTIVE_DEFAULTS[self.objective]
        return (
            lr if self.lr is None else self.lr,
            betas,
            mult if self.mapping_lr_multiplier is None else self.mapping_lr_multiplier,
        )

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based): ``lr``, falling along a cosine to ``lr_final``
        times itself at the last step (a function of the step alone, so a resumed run follows the same curve)."""
        lr = self.resolved()[0]
        final = FINAL_LR_DEFAULTS[self.objective] if self.lr_final is None else self.lr_final
        progress = step / max(1, self.steps - 1)
        return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))

    def generator_config(self) -> StyleGAN2Config:
        """The generator architecture these settings build."""
        return StyleGAN2Config(
            z_dim=self.z_dim,
            w_dim=self.w_dim,
            img_resolution=IMAGE_SIZE,
            mapping_layers=self.mapping_layers,
            lr_multiplier=self.resolved()[2],
            channel_base=self.channel_base,
            channel_max=self.channel_max,
        )

    def discriminator_config(self) -> DiscriminatorConfig:
        """The discriminator architecture these settings build (the adversarial objective's)."""
        return DiscriminatorConfig(IMAGE_SIZE, self.d_channel_base, self.d_channel_max, self.mbstd_group)
