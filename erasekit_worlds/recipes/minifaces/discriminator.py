"""The discriminator the MiniFaces StyleGAN2 trains against: StyleGAN2's residual design, written for erasekit.

Karras et al. 2020 (arXiv 1912.04958), §4.1 "resnet" discriminator: fromRGB, then per resolution two 3×3
convolutions (the second halving the resolution) with a 1×1 residual shortcut, the sum scaled by 1/√2; at 4×4 a
minibatch standard-deviation channel, a 3×3 conv and two fully connected layers. Every layer uses the equalized
learning rate. Simplification: downsampling is a 2×2 average pool rather than NVlabs' [1, 3, 3, 1] FIR filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from erasekit.models.stylegan import EqualizedLinear

_SQRT2 = math.sqrt(2.0)


@dataclass
class DiscriminatorConfig:
    """Channels at resolution r are ``min(channel_base // r, channel_max)``."""

    resolution: int = 64  # input side, a power of 2 >= 8
    channel_base: int = 8192  # channels = channel_base // r ...
    channel_max: int = 256  # ... capped at channel_max
    mbstd_group: int = 4  # minibatch-stddev group size (the batch must be divisible by min(group, batch))

    def __post_init__(self):
        r = self.resolution
        if r < 8 or r & (r - 1):
            raise ValueError(f"resolution must be a power of 2 >= 8, got {r}")
        if self.channel_base < r or self.channel_max < 1 or self.mbstd_group < 1:
            raise ValueError(f"channel_base must be >= resolution, channel_max and mbstd_group >= 1: {self}")

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)


class EqualizedConv2d(nn.Module):
    """A convolution whose unit-scale weight is multiplied by 1/√fan_in at run time (equalized learning rate)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.gain, self.pad = 1 / math.sqrt(c_in * kernel * kernel), kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.gain, self.bias, padding=self.pad)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * _SQRT2


class DiscriminatorBlock(nn.Module):
    """Two 3×3 convs (the second downsampling) plus a 1×1 downsampling shortcut, summed and scaled by 1/√2."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv0, self.conv1 = EqualizedConv2d(c_in, c_in, 3), EqualizedConv2d(c_in, c_out, 3)
        self.skip = EqualizedConv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(F.avg_pool2d(x, 2))
        x = _lrelu(self.conv0(x))
        x = _lrelu(F.avg_pool2d(self.conv1(x), 2))
        return (x + y) / _SQRT2


class Discriminator(nn.Module):
    """Logits ``[N]`` (real > 0) for images ``[N, 3, R, R]`` in ``[-1, 1]``."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        c = config.channels
        res = [2**i for i in range(int(math.log2(config.resolution)), 2, -1)]  # R, R/2, ..., 8
        self.from_rgb = EqualizedConv2d(3, c(config.resolution), 1)
        self.blocks = nn.ModuleList(DiscriminatorBlock(c(r), c(r // 2)) for r in res)
        self.conv = EqualizedConv2d(c(4) + 1, c(4), 3)
        self.fc = EqualizedLinear(c(4) * 16, c(4), act=True)
        self.out = EqualizedLinear(c(4), 1)

    def minibatch_std(self, x: torch.Tensor) -> torch.Tensor:
        """Append the mean (over features) standard deviation within groups of samples as one channel."""
        n, ch, h, w = x.shape
        g = min(self.config.mbstd_group, n)
        if n % g:
            raise ValueError(f"the batch ({n}) must be divisible by the minibatch-stddev group ({g})")
        y = x.reshape(g, -1, ch, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])  # [n / g]
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        r = self.config.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"expected images [N, 3, {r}, {r}], got {tuple(images.shape)}")
        x = _lrelu(self.from_rgb(images))
        for block in self.blocks:
            x = block(x)
        x = _lrelu(self.conv(self.minibatch_std(x)))
        return self.out(self.fc(x.flatten(1))).squeeze(1)
