"""Shared pieces of the MiniCanvas training recipe: rendered image banks, caption banks, augmentation, schedules.

Everything random takes an explicit ``torch.Generator``; nothing here touches the global RNG. Images live in memory
as uint8 tensors (the whole training set is ~90 MB) and become floats one batch at a time.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...minicanvas.data import OBJECTS, STYLES, MiniCanvasDataset, caption, render, stable_seed

logger = logging.getLogger(__name__)

MAX_TOKENS = 77  # CLIP's context length
SPECIAL_TOKENS = (49406, 49407)  # <|startoftext|>, <|endoftext|> of the CLIP tokenizer


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


# ---------------------------------------------------------------------------------------------------- images


@dataclass
class ImageBank:
    """Rendered images ``[N, 3, 64, 64]`` uint8 with their global style and object ids."""

    images: torch.Tensor
    style_ids: torch.Tensor
    object_ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, styles: Sequence[str], objects: Sequence[str]) -> ImageBank:
        """Only the images whose style and object are both listed."""
        keep_s = torch.tensor([STYLES.index(s) for s in styles], device=self.style_ids.device)
        keep_o = torch.tensor([OBJECTS.index(o) for o in objects], device=self.object_ids.device)
        mask = torch.isin(self.style_ids, keep_s) & torch.isin(self.object_ids, keep_o)
        return ImageBank(self.images[mask], self.style_ids[mask], self.object_ids[mask])

    def style_batch(self, n_styles: int, gen: torch.Generator) -> torch.Tensor:
        """Indices of one random image of every pair of ``n_styles`` random styles (all objects of each style).

        Such a batch gives every image many negatives of the same style and another object, the pairs a
        contrastive loss learns objects from (a random batch of 64 has about six).
        """
        styles = self.style_ids.unique()
        chosen = styles[torch.randperm(len(styles), generator=gen, device=gen.device)[: min(n_styles, len(styles))]]
        pairs = self.style_ids * len(OBJECTS) + self.object_ids
        members = [torch.nonzero(pairs == p).squeeze(1) for p in pairs[torch.isin(self.style_ids, chosen)].unique()]
        pick = [m[torch.randint(len(m), (1,), generator=gen, device=gen.device)] for m in members]
        return torch.cat(pick)

    def to(self, device: torch.device) -> ImageBank:
        return ImageBank(self.images.to(device), self.style_ids.to(device), self.object_ids.to(device))

    def floats(self, index: torch.Tensor) -> torch.Tensor:
        """Images ``index`` as float ``[B, 3, 64, 64]`` in ``[0, 1]``."""
        return self.images[index].float().div_(255.0)


def render_bank(per_pair: int, seed: int, split: str, desc: str = "rendering") -> ImageBank:
    """Render every (style, object) pair of MiniCanvas, ``per_pair`` images each, for ``split``."""
    from tqdm.auto import tqdm

    ds = MiniCanvasDataset(per_pair=per_pair, seed=seed, split=split)
    images = np.empty((len(ds), 64, 64, 3), dtype=np.uint8)
    style_ids, object_ids = np.empty(len(ds), np.int64), np.empty(len(ds), np.int64)
    for i in tqdm(range(len(ds)), desc=desc, unit="img", disable=None, mininterval=2.0):
        style, obj, index = ds.item_key(i)
        images[i] = render(style, obj, index, seed)
        style_ids[i], object_ids[i] = STYLES.index(style), OBJECTS.index(obj)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return ImageBank(tensor, torch.from_numpy(style_ids), torch.from_numpy(object_ids))


# ---------------------------------------------------------------------------------------------------- captions


class CaptionBank:
    """Token ids of every (style, object, template) caption, ``[n_styles, n_objects, n_templates, length]``.

    Rows are padded with ``<|endoftext|>`` (CLIP's pad token) to ``length``; ``length`` leaves room for the random
    tokens :meth:`sample` may insert.
    """

    def __init__(self, tokenizer, templates: Sequence[str], length: int, device: torch.device):
        texts = [caption(s, o, t) for s in STYLES for o in OBJECTS for t in templates]
        ids = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        shape = (len(STYLES), len(OBJECTS), len(templates), length)
        self.ids = ids.input_ids.reshape(shape).to(device)
        self.lengths = ids.attention_mask.sum(-1).reshape(shape[:-1]).to(device)  # with BOS and EOS
        if int(self.lengths.max()) >= length:
            raise ValueError(f"a caption fills all {length} token slots; raise the caption bank length")
        self.n_templates, self.length, self.device = len(templates), length, device
        self.empty = tokenizer([""], padding="max_length", max_length=length, return_tensors="pt").input_ids.to(device)
        words = {w for name in (*STYLES, *OBJECTS) for w in tokenizer(name, add_special_tokens=False).input_ids}
        pool = torch.ones(len(tokenizer), dtype=torch.bool)
        pool[list(words) + list(SPECIAL_TOKENS)] = False  # never insert a class word: that would mislabel the caption
        self.pool = pool.nonzero().squeeze(1).to(device)

    def sample(
        self,
        style_ids: torch.Tensor,
        object_ids: torch.Tensor,
        gen: torch.Generator,
        insert_prob: float = 0.0,
        drop_prob: float = 0.0,
    ) -> torch.Tensor:
        """Token ids ``[B, length]``: a random template per item, then augmentation.

        With probability ``insert_prob`` an item gets one or two random vocabulary tokens at random positions (so
        the text tower learns to ignore words it was not trained on, like a paraphrase's filler words); with
        probability ``drop_prob`` the whole caption becomes the empty string (for classifier-free guidance).
        """
        b = len(style_ids)
        pick = torch.randint(self.n_templates, (b,), generator=gen, device=self.device)
        ids = self.ids[style_ids, object_ids, pick].clone()
        lengths = self.lengths[style_ids, object_ids, pick].clone()
        chosen = torch.rand(b, generator=gen, device=self.device) < insert_prob
        two = torch.rand(b, generator=gen, device=self.device) < 0.5
        ids, lengths = self._insert(ids, lengths, chosen, gen)
        ids, lengths = self._insert(ids, lengths, chosen & two, gen)
        drop = torch.rand(b, generator=gen, device=self.device) < drop_prob
        return torch.where(drop[:, None], self.empty, ids)

    def _insert(self, ids, lengths, chosen, gen):
        b, length = ids.shape
        token = self.pool[torch.randint(len(self.pool), (b,), generator=gen, device=self.device)]
        # a position between BOS (0) and EOS (lengths-1), inclusive of the slot just before EOS
        where = 1 + (torch.rand(b, generator=gen, device=self.device) * (lengths - 1).float()).long()
        chosen = chosen & (lengths < length)
        pos = torch.arange(length, device=self.device)[None, :]
        shifted = torch.cat([ids[:, :1], ids[:, :-1]], dim=1)  # ids moved one slot right
        new = torch.where(pos < where[:, None], ids, torch.where(pos == where[:, None], token[:, None], shifted))
        return torch.where(chosen[:, None], new, ids), lengths + chosen.long()


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
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not on biases and norm scales)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


class EMA:
    """An exponential moving average of a model's floating-point state, with the usual warm-up of the decay."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema, cur in zip(self.shadow.state_dict().values(), model.state_dict().values(), strict=True):
            if ema.is_floating_point():
                ema.lerp_(cur, 1 - d)
            else:
                ema.copy_(cur)


def check_finite(loss: torch.Tensor, stage: str, step: int) -> None:
    """Stop with a clear error on a NaN/Inf loss instead of training on garbage."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{stage}: the loss became {float(loss)} at step {step}; lower the learning rate")


def log_progress(stage: str, step: int, total: int, loss: torch.Tensor, clock: Stopwatch) -> None:
    """Log the loss and elapsed time at every tenth of a stage (progress bars vanish when output is not a TTY)."""
    if (step + 1) % max(1, total // 10) == 0 or step + 1 == total:
        logger.info("%s: step %d/%d, loss %.4f, %.0f s", stage, step + 1, total, loss.item(), clock.seconds())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Stopwatch:
    """Wall-clock seconds of a stage, synchronising CUDA so GPU work is counted."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start = time.perf_counter()

    def seconds(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return round(time.perf_counter() - self.start, 2)
