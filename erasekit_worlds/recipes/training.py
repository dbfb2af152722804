"""Training utilities every world's recipe shares: devices, seeded generators, optimisers, schedules, EMA,
augmentation, timing, progress and the NaN/Inf guard.

Everything random takes an explicit ``torch.Generator`` (or, for module constructors, which draw from the global RNG,
a :func:`seeded` block that restores the global state afterwards), so a recipe is deterministic from its seed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..common import stable_seed

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` -> CUDA when present, else CPU; a clear error when CUDA is asked for but absent."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA device is visible; use --device cpu or --device auto.")
    return device


def generator(device: torch.device, *parts: object) -> torch.Generator:
    """A generator on ``device`` seeded from ``parts`` (e.g. ``("unet", seed)``) through :func:`stable_seed`."""
    return torch.Generator(device=device).manual_seed(stable_seed(*parts) % 2**63)


@contextlib.contextmanager
def seeded(*parts: object) -> Iterator[None]:
    """Seed the global RNGs from ``parts`` inside the block (model constructors draw from them), then restore."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(*parts) % 2**63)
        yield


def progress(steps: Iterable, desc: str, **kwargs):
    """A progress bar over ``steps`` that stays quiet when output is not a terminal (``tqdm`` with ``disable=None``)."""
    from tqdm.auto import tqdm

    return tqdm(steps, desc=desc, unit=kwargs.pop("unit", "step"), disable=None, mininterval=2.0, **kwargs)


# ---------------------------------------------------------------------------------------------------- augmentation


def augment(
    images: torch.Tensor,
    gen: torch.Generator,
    shift: int = 4,
    flip: bool = True,
    blur_prob: float = 0.0,
    max_blur: float = 1.0,
    noise_prob: float = 0.0,
    max_noise: float = 0.04,
) -> torch.Tensor:
    """Light, label-preserving augmentation of ``[B, 3, H, W]`` images in ``[0, 1]``.

    Integer shifts up to ``shift`` pixels (reflected borders), left-right flips, and with the given probabilities a
    Gaussian blur (sigma up to ``max_blur`` px) and Gaussian noise (std up to ``max_noise``): the mild softness and
    grain that generated images show.

    Example:
        >>> x = augment(images, generator(torch.device("cpu"), "aug", 0), blur_prob=0.5, noise_prob=0.5)
    """
    b, dev = images.shape[0], images.device
    if shift:
        images = _shift(images, torch.randint(-shift, shift + 1, (b, 2), generator=gen, device=dev))
    if flip:
        flips = torch.rand(b, generator=gen, device=dev) < 0.5
        images = torch.where(flips[:, None, None, None], images.flip(-1), images)
    if blur_prob > 0:
        sigma = torch.rand(b, generator=gen, device=dev) * max_blur
        sigma = torch.where(torch.rand(b, generator=gen, device=dev) < blur_prob, sigma, torch.zeros_like(sigma))
        images = gaussian_blur(images, sigma)
    if noise_prob > 0:
        std = torch.rand(b, generator=gen, device=dev) * max_noise
        std = torch.where(torch.rand(b, generator=gen, device=dev) < noise_prob, std, torch.zeros_like(std))
        noise = torch.randn(images.shape, generator=gen, device=dev)
        images = (images + std[:, None, None, None] * noise).clamp(0, 1)
    return images


def _shift(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Translate each image by whole pixels ``offsets[i] = (dy, dx)``, reflecting at the borders."""
    _, _, h, w = images.shape
    pad = int(offsets.abs().max())
    if pad == 0:
        return images
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    rows = (torch.arange(h, device=images.device)[None, :] + pad - offsets[:, :1]).clamp(0, h + 2 * pad - 1)
    cols = (torch.arange(w, device=images.device)[None, :] + pad - offsets[:, 1:]).clamp(0, w + 2 * pad - 1)
    idx_r = rows[:, None, :, None].expand(-1, images.shape[1], -1, padded.shape[-1])
    out = padded.gather(2, idx_r)
    idx_c = cols[:, None, None, :].expand(-1, images.shape[1], h, -1)
    return out.gather(3, idx_c)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Blur image ``i`` with a Gaussian of std ``sigma[i]`` pixels (0 = unchanged), separably, reflect padding."""
    b, c, h, w = images.shape
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    s = sigma.to(images.dtype).clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (x[None, :] / s) ** 2)
    k = k / k.sum(1, keepdim=True)
    k = k.repeat_interleave(c, 0)  # one kernel per (image, channel)
    flat = F.pad(images.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, k[:, None, None, :], groups=b * c)
    flat = F.conv2d(flat, k[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


# ---------------------------------------------------------------------------------------------------- optimisation


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int, floor: float = 0.05):
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``floor`` times the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress_))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not on biases and norm scales)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def run_steps(
    stage: str,
    steps: int,
    loss_at: Callable[[int], torch.Tensor],
    opt: torch.optim.Optimizer,
    sched,
    clock: Stopwatch,
    after: Callable[[int], None] | None = None,
    start: int = 0,
) -> None:
    """The optimisation loop every recipe stage shares: for steps ``start`` .. ``steps - 1``, the loss of step ``i``
    (``loss_at(i)``, which draws its batch), a stop on NaN/Inf (:func:`check_finite`), backward, an optimiser and a
    schedule step, then ``after(i)`` (an EMA update, a checkpoint), with a progress bar and a log line every tenth
    of the stage. ``start`` > 0 resumes a stage whose state was restored from a checkpoint after ``start`` steps.

    Example:
        >>> run_steps("vae", cfg.steps, lambda step: vae_loss(step), opt, warmup_cosine(opt, 100, cfg.steps), clock)
    """
    bar = progress(range(start, steps), stage, initial=start, total=steps)
    for step in bar:
        loss = loss_at(step)
        check_finite(loss, stage, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if after is not None:
            after(step)
        log_progress(stage, step, steps, loss, clock)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")


class EMA:
    """An exponential moving average of a model's floating-point state, with the usual warm-up of the decay."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current state."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema, cur in zip(self.shadow.state_dict().values(), model.state_dict().values(), strict=True):
            if ema.is_floating_point():
                ema.lerp_(cur, 1 - d)
            else:
                ema.copy_(cur)


# ---------------------------------------------------------------------------------------------------- bookkeeping


def check_finite(loss: torch.Tensor, stage: str, step: int) -> None:
    """Stop with a clear error on a NaN/Inf loss instead of training on garbage."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"{stage}: the loss became {float(loss.detach())} at step {step}; lower the learning rate"
        )


def log_progress(stage: str, step: int, total: int, loss: torch.Tensor, clock: Stopwatch) -> None:
    """Log the loss and elapsed time at every tenth of a stage (progress bars vanish when output is not a TTY)."""
    if (step + 1) % max(1, total // 10) == 0 or step + 1 == total:
        logger.info("%s: step %d/%d, loss %.4f, %.0f s", stage, step + 1, total, loss.item(), clock.seconds())


def n_params(model: nn.Module) -> int:
    """The number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


class Stopwatch:
    """Wall-clock seconds of a stage, synchronising CUDA so GPU work is counted."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start = time.perf_counter()

    def seconds(self) -> float:
        """Seconds since the stopwatch was made, rounded to hundredths."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return round(time.perf_counter() - self.start, 2)
