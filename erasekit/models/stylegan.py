"""A StyleGAN2 generator in plain PyTorch, written for erasekit from the paper (Karras et al. 2020, arXiv 1912.04958).

Architecture: the "config F" skip generator — mapping MLP with equalized learning rate, modulated/demodulated 3×3
convolutions, per-layer noise, 2× upsampling by a transposed convolution followed by a fixed [1, 3, 3, 1] blur, and
skip-connected toRGB outputs. The interface follows StyleGAN2-ADA: ``G.mapping(z, c) -> ws`` ([N, num_ws, w_dim]),
``G.synthesis(ws) -> img`` ([N, C, H, W], roughly in [-1, 1]) and ``G(z, c)``.

Parameter names (erasure targets address them as ``generator.<name>``; they equal NVlabs' names, so converting an
NVlabs ``G_ema`` is near identity)::

    mapping.embed.{weight,bias}          class embedding, only when c_dim > 0
    mapping.fc{i}.{weight,bias}          i = 0 .. mapping_layers - 1
    mapping.w_avg                        buffer: running mean of w (truncation centre)
    synthesis.b4.const                   [C4, 4, 4] learned input
    synthesis.b{res}.conv0.*             3×3 upsampling conv, res >= 8
    synthesis.b{res}.conv1.*             3×3 conv
        .weight [out, in, 3, 3]  .bias [out]  .affine.weight [in, w_dim]  .affine.bias [in]
        .noise_strength []  .noise_const [res, res] (buffer)
    synthesis.b{res}.torgb.{weight [C, in, 1, 1], bias [C], affine.weight, affine.bias}

Presets: synthesis convolutions = ``synthesis\\.b\\d+\\.conv[01]\\.weight``; toRGB = ``synthesis\\.b\\d+\\.torgb\\.``.
w indices: block b{res} reads ws[i] for conv0, ws[i+1] for conv1 and ws[i+2] for torgb, with i advancing by 2 per
block (b4 uses ws[0] for conv1 and ws[1] for torgb); num_ws = 2 * log2(img_resolution) - 2.

Equalized learning rate: tensors are stored unit-scale and scaled at run time. Linear layers compute
``x @ (W * lr / sqrt(in)).T + b * lr`` (the convention of NVlabs and rosinality alike, so stored tensors copy as-is);
convolutions multiply the weight by ``1 / sqrt(in * k * k)`` before modulation (as rosinality does; NVlabs applies
the same gain to the styles of toRGB and omits it where demodulation cancels it — identical up to the 1e-8 epsilon).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

CONFIG_KEY = "erasekit_stylegan2_config"
NOISE_MODES = ("random", "const", "none")
_SQRT2 = math.sqrt(2.0)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"StyleGAN2Config.{message}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class StyleGAN2Config:
    """Architecture of a StyleGAN2 generator; channels at resolution r are ``min(channel_base // r, channel_max)``."""

    z_dim: int = field(default=512, metadata={"help": "Dimension of the input latent z."})
    w_dim: int = field(default=512, metadata={"help": "Dimension of the intermediate latent w."})
    c_dim: int = field(default=0, metadata={"help": "Dimension of the class label c; 0 = unconditional."})
    img_resolution: int = field(default=256, metadata={"help": "Output resolution, a power of 2 >= 4."})
    img_channels: int = field(default=3, metadata={"help": "Output image channels (3 = RGB)."})
    mapping_layers: int = field(default=8, metadata={"help": "Number of fully connected layers in the mapping MLP."})
    lr_multiplier: float = field(default=0.01, metadata={"help": "Learning-rate multiplier of the mapping MLP."})
    w_avg_beta: float = field(default=0.995, metadata={"help": "EMA decay of the tracked w_avg (training mode)."})
    channel_base: int = field(default=32768, metadata={"help": "Channels at resolution r = channel_base // r ..."})
    channel_max: int = field(default=512, metadata={"help": "... capped at channel_max."})
    conv_clamp: float | None = field(default=None, metadata={"help": "Clamp conv outputs to ±value; None = off."})

    def __post_init__(self) -> None:
        for name in ("z_dim", "w_dim", "img_channels", "mapping_layers", "channel_max", "c_dim"):
            value, low = getattr(self, name), 0 if name == "c_dim" else 1
            _check(_is_int(value) and value >= low, f"{name} must be an int >= {low}, got {value!r}.")
        res, base = self.img_resolution, self.channel_base
        pow2 = _is_int(res) and res >= 4 and not res & (res - 1)
        _check(pow2, f"img_resolution must be a power of 2 >= 4 (4, 8, ..., 1024), got {res!r}.")
        _check(_is_int(base) and base >= res, f"channel_base={base!r} leaves no channels at {res} px; use >= {res}.")
        _check(self.lr_multiplier > 0, f"lr_multiplier must be > 0, got {self.lr_multiplier!r}.")
        _check(0 <= self.w_avg_beta < 1, f"w_avg_beta must be in [0, 1), got {self.w_avg_beta!r}.")
        _check(self.conv_clamp is None or self.conv_clamp > 0, f"conv_clamp must be > 0 or None: {self.conv_clamp!r}.")

    @property
    def num_ws(self) -> int:
        """Number of per-layer w vectors the synthesis network consumes."""
        return 2 * int(math.log2(self.img_resolution)) - 2

    @property
    def resolutions(self) -> list[int]:
        """Block resolutions 4, 8, ..., img_resolution."""
        return [2**i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    def channels(self, res: int) -> int:
        """Feature channels of the block at resolution ``res``."""
        return min(self.channel_base // res, self.channel_max)

    @classmethod
    def from_dict(cls, data: dict) -> StyleGAN2Config:
        """Build a config from a dict, rejecting unknown keys with the list of known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown StyleGAN2Config keys {unknown}; known keys: {sorted(known)}.")
        return cls(**data)


def rosinality_config(
    size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2, lr_mlp: float = 0.01
) -> StyleGAN2Config:
    """The config matching rosinality's ``Generator(size, style_dim, n_mlp, channel_multiplier, lr_mlp=lr_mlp)``."""
    if channel_multiplier not in (1, 2):  # other multipliers break the min(base // r, max) channel rule
        raise ValueError(f"rosinality_config: channel_multiplier must be 1 or 2, got {channel_multiplier!r}.")
    base = 16384 * channel_multiplier  # rosinality: 512 up to 32 px, then 256 * multiplier * 64 / r
    return StyleGAN2Config(style_dim, style_dim, 0, size, 3, n_mlp, lr_mlp, channel_base=base, channel_max=512)


def _blur_filter() -> torch.Tensor:
    """The 4×4 separable [1, 3, 3, 1] low-pass filter, normalised to sum 4 (gain 2² for 2× upsampling)."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(f, f) / f.sum() ** 2 * 4


def _blur(x: torch.Tensor, f: torch.Tensor, pad: int) -> torch.Tensor:
    """Depthwise FIR filtering of ``x`` with the symmetric 2-D filter ``f``."""
    c = x.shape[1]
    return F.conv2d(F.pad(x, [pad] * 4), f.to(x.dtype).expand(c, 1, *f.shape), groups=c)


def _upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2× upsampling: zero insertion followed by the blur filter (one transposed depthwise conv)."""
    c = x.shape[1]
    return F.conv_transpose2d(x, f.to(x.dtype).expand(c, 1, *f.shape), stride=2, padding=1, groups=c)


def _bias_lrelu(x: torch.Tensor, bias: torch.Tensor, clamp: float | None) -> torch.Tensor:
    x = F.leaky_relu(x + bias.view(1, -1, *[1] * (x.ndim - 2)), 0.2) * _SQRT2  # sqrt(2) keeps unit variance
    return x.clamp(-clamp, clamp) if clamp is not None else x


class EqualizedLinear(nn.Module):
    """Fully connected layer with equalized learning rate (Karras et al. 2018/2020), optional leaky ReLU."""

    def __init__(self, in_f: int, out_f: int, bias_init: float = 0.0, lr_multiplier: float = 1.0, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_f, in_f) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_f,), float(bias_init)))
        self.weight_gain, self.lr_multiplier, self.act = lr_multiplier / math.sqrt(in_f), lr_multiplier, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act:
            return _bias_lrelu(F.linear(x, self.weight * self.weight_gain), self.bias * self.lr_multiplier, None)
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_multiplier)


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z (and optional class c) → per-layer w codes; tracks ``w_avg`` for the truncation trick."""

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = config.z_dim, config.c_dim, config.w_dim
        self.num_ws, self.num_layers, self.w_avg_beta = config.num_ws, config.mapping_layers, config.w_avg_beta
        if config.c_dim:
            self.embed = EqualizedLinear(config.c_dim, config.w_dim)
        in_f = config.z_dim + (config.w_dim if config.c_dim else 0)
        for i in range(config.mapping_layers):
            layer = EqualizedLinear(in_f if i == 0 else config.w_dim, config.w_dim, 0.0, config.lr_multiplier, True)
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool | None = None,
    ) -> torch.Tensor:
        """Map z [N, z_dim] (and c [N, c_dim]) to ws [N, num_ws, w_dim] (Karras et al. 2020, arXiv 1912.04958).

        Truncation moves the first ``truncation_cutoff`` ws (all when None) towards ``w_avg``:
        ``w_avg + psi * (w - w_avg)``. ``w_avg`` is updated by EMA when ``update_w_avg`` (default: training mode).
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}.")
        x = _normalize_2nd_moment(z)
        if self.c_dim:
            if c is None or c.shape != (z.shape[0], self.c_dim):
                got = None if c is None else list(c.shape)
                raise ValueError(
                    f"This generator is conditional: pass c of shape [{z.shape[0]}, {self.c_dim}], got {got}."
                )
            x = torch.cat([x, _normalize_2nd_moment(self.embed(c.to(x.dtype)))], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if self.training if update_w_avg is None else update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], truncation_psi)
        return ws


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution with optional weight demodulation and 2× upsampling (arXiv 1912.04958, §2.2).

    Each sample gets its own weights ``w' = g * w * s`` (s = affine(w_latent), g = 1/sqrt(fan_in)); demodulation
    rescales each output channel by ``1 / sqrt(sum w'^2 + 1e-8)``. All samples run as one grouped convolution.
    """

    def __init__(
        self, in_ch: int, out_ch: int, w_dim: int, kernel_size: int, demodulate: bool = True, up: bool = False
    ):
        super().__init__()
        self.in_ch, self.out_ch, self.k, self.demodulate, self.up = in_ch, out_ch, kernel_size, demodulate, up
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.affine = EqualizedLinear(w_dim, in_ch, bias_init=1.0)
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        self.register_buffer("resample_filter", _blur_filter(), persistent=False)

    def modulated_conv(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Apply the conv to x [N, in, H, W] with styles from w [N, w_dim]; returns [N, out, H', W']."""
        n, _, h, wd = x.shape
        styles = self.affine(w)
        weight = self.weight.unsqueeze(0) * self.weight_gain * styles[:, None, :, None, None]
        if self.demodulate:
            weight = weight * (weight.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
        x = x.reshape(1, n * self.in_ch, h, wd)
        if self.up:  # transposed conv (stride 2) then blur: the resampling of the paper, without custom ops
            weight = weight.transpose(1, 2).reshape(n * self.in_ch, self.out_ch, self.k, self.k)
            x = _blur(F.conv_transpose2d(x, weight, stride=2, groups=n), self.resample_filter, pad=1)
        else:
            weight = weight.reshape(n * self.out_ch, self.in_ch, self.k, self.k)
            x = F.conv2d(x, weight, padding=self.k // 2, groups=n)
        return x.reshape(n, self.out_ch, *x.shape[2:])


class SynthesisLayer(ModulatedConv2d):
    """Modulated 3×3 conv + scaled per-pixel noise + bias + leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: bool, conv_clamp: float | None):
        super().__init__(in_ch, out_ch, w_dim, 3, demodulate=True, up=up)
        self.resolution, self.conv_clamp = resolution, conv_clamp
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        x = self.modulated_conv(x, w)
        if noise_mode == "random":
            shape = (x.shape[0], 1, self.resolution, self.resolution)
            x = x + torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return _bias_lrelu(x, self.bias, self.conv_clamp)


class ToRGB(ModulatedConv2d):
    """Modulated 1×1 conv to image channels, without demodulation, plus bias."""

    def __init__(self, in_ch: int, img_channels: int, w_dim: int, conv_clamp: float | None):
        super().__init__(in_ch, img_channels, w_dim, 1, demodulate=False)
        self.conv_clamp = conv_clamp
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.modulated_conv(x, w) + self.bias.view(1, -1, 1, 1)
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class SynthesisBlock(nn.Module):
    """One resolution: (const | upsampling conv0), conv1, and a toRGB added to the upsampled skip image."""

    def __init__(self, config: StyleGAN2Config, res: int):
        super().__init__()
        out_ch, clamp, w_dim = config.channels(res), config.conv_clamp, config.w_dim
        self.resolution, self.num_conv = res, 1 if res == 4 else 2
        if res == 4:
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
        else:
            self.conv0 = SynthesisLayer(config.channels(res // 2), out_ch, w_dim, res, up=True, conv_clamp=clamp)
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, res, up=False, conv_clamp=clamp)
        self.torgb = ToRGB(out_ch, config.img_channels, w_dim, clamp)
        self.register_buffer("resample_filter", _blur_filter(), persistent=False)

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ws: [N, num_conv + 1, w_dim]. Returns the features and the running skip image."""
        if self.resolution == 4:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, generator)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, generator)
            x = self.conv1(x, ws[:, 1], noise_mode, generator)
        y = self.torgb(x, ws[:, self.num_conv])
        return x, y if img is None else _upsample2d(img, self.resample_filter) + y


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] → image [N, img_channels, res, res], skip architecture (arXiv 1912.04958, §4.1)."""

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.w_dim, self.num_ws, self.img_resolution = config.w_dim, config.num_ws, config.img_resolution
        self.block_resolutions = config.resolutions
        for res in self.block_resolutions:
            setattr(self, f"b{res}", SynthesisBlock(config, res))

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Synthesise images; ``noise_mode`` is "const" (stored noise), "random" (from ``generator``) or "none"."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}.")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}.")
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + 1], noise_mode, generator)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """StyleGAN2 generator (Karras et al. 2020, arXiv 1912.04958) with the StyleGAN2-ADA interface.

    Example:
        >>> G = Generator(StyleGAN2Config(img_resolution=16, channel_base=256, channel_max=32, w_dim=32, z_dim=32))
        >>> img = G(torch.randn(2, G.z_dim), None, truncation_psi=0.7)  # [2, 3, 16, 16]
    """

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.config = config
        self.z_dim, self.w_dim, self.c_dim, self.num_ws = config.z_dim, config.w_dim, config.c_dim, config.num_ws
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels
        self.mapping = MappingNetwork(config)
        self.synthesis = SynthesisNetwork(config)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``synthesis(mapping(z, c, truncation_psi, truncation_cutoff), noise_mode)``."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, generator=generator)


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _load_strict(G: Generator, state_dict: dict[str, torch.Tensor], source: str) -> Generator:
    """Copy ``state_dict`` into ``G``, raising a ValueError that lists missing/unexpected/misshapen keys."""
    expected = G.state_dict()
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    shared = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    bad = [f"{k}: expected {list(expected[k].shape)}, got {list(state_dict[k].shape)}" for k in shared]
    if missing or unexpected or bad:
        found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": bad}
        parts = [f"{what} ({len(keys)}): {_few(keys)}" for what, keys in found.items() if keys]
        raise ValueError(
            f"{source} does not fit StyleGAN2Config {dataclasses.asdict(G.config)}: {'; '.join(parts)}. "
            "Check img_resolution, mapping_layers, c_dim and channel_base/channel_max."
        )
    G.load_state_dict(state_dict, strict=True)
    return G


def save_generator(G: Generator, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Save ``G`` atomically as one ``.safetensors`` file with its config as JSON under the header key
    ``"erasekit_stylegan2_config"``; ``dtype`` (e.g. ``torch.float16``) converts floating tensors on the way."""
    from erasekit._io import save_safetensors

    tensors = {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v for k, v in G.state_dict().items()}
    return save_safetensors(tensors, path, {CONFIG_KEY: json.dumps(dataclasses.asdict(G.config))})


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """Load a generator written by :func:`save_generator` (fp32 in memory, whatever the stored dtype)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable .safetensors file (truncated or another format?): {e}") from e
    if CONFIG_KEY not in meta:
        raise ValueError(
            f"{path} has no {CONFIG_KEY!r} entry in its safetensors header, so it is not an erasekit StyleGAN2 file. "
            "Convert rosinality checkpoints with load_rosinality_checkpoint() and NVlabs pickles with "
            "load_nvlabs_pickle(), then save them with save_generator()."
        )
    try:
        config = StyleGAN2Config.from_dict(json.loads(meta[CONFIG_KEY]))
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path}: the {CONFIG_KEY!r} header entry is not a valid config JSON object ({e}).") from e
    G = _load_strict(Generator(config), load_file(str(path)), str(path))
    return G.eval().to(device)


_ROSINALITY_MODULATED = (
    ("conv.weight", "weight"),
    ("conv.modulation.weight", "affine.weight"),
    ("conv.modulation.bias", "affine.bias"),
)
_ROSINALITY_STYLED = (*_ROSINALITY_MODULATED, ("noise.weight", "noise_strength"), ("activate.bias", "bias"))
_ROSINALITY_TO_RGB = (*_ROSINALITY_MODULATED, ("bias", "bias"))
_ROSINALITY_FIXED = re.compile(r"^(convs\.\d+\.conv\.blur\.kernel|to_rgbs\.\d+\.upsample\.kernel)$")


def _rosinality_table(config: StyleGAN2Config) -> dict[str, str]:
    """rosinality ``stylegan2-pytorch`` generator key → erasekit key (shapes differ only by singleton dims).

    style.{i+1}.{weight,bias} → mapping.fc{i}.*           (style.0 is the parameter-free PixelNorm)
    input.input [1,C,4,4] → synthesis.b4.const; conv1.* → synthesis.b4.conv1.*; to_rgb1.* → synthesis.b4.torgb.*
    convs.{2j} / convs.{2j+1} / to_rgbs.{j} → synthesis.b{2^(j+3)}.conv0 / .conv1 / .torgb
    noises.noise_0 → b4.conv1.noise_const; noise_{2j+1} / noise_{2j+2} → b{2^(j+3)}.conv0 / conv1 .noise_const
    Inside a StyledConv: conv.weight [1,out,in,k,k] → weight; conv.modulation.* → affine.*; noise.weight [1] →
    noise_strength; activate.bias → bias. Inside a ToRGB: conv.weight → weight, conv.modulation.* → affine.*,
    bias [1,C,1,1] → bias. Fixed blur buffers (convs.{2j}.conv.blur.kernel, to_rgbs.{j}.upsample.kernel) are
    checked against our filter and dropped.
    """
    table = {
        f"style.{i + 1}.{p}": f"mapping.fc{i}.{p}" for i in range(config.mapping_layers) for p in ("weight", "bias")
    }
    table["input.input"] = "synthesis.b4.const"

    def add(src: str, dst: str, pairs: tuple[tuple[str, str], ...]) -> None:
        table.update({f"{src}.{a}": f"{dst}.{b}" for a, b in pairs})

    add("conv1", "synthesis.b4.conv1", _ROSINALITY_STYLED)
    add("to_rgb1", "synthesis.b4.torgb", _ROSINALITY_TO_RGB)
    table["noises.noise_0"] = "synthesis.b4.conv1.noise_const"
    for j, res in enumerate(config.resolutions[1:]):
        add(f"convs.{2 * j}", f"synthesis.b{res}.conv0", _ROSINALITY_STYLED)
        add(f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1", _ROSINALITY_STYLED)
        add(f"to_rgbs.{j}", f"synthesis.b{res}.torgb", _ROSINALITY_TO_RGB)
        table[f"noises.noise_{2 * j + 1}"] = f"synthesis.b{res}.conv0.noise_const"
        table[f"noises.noise_{2 * j + 2}"] = f"synthesis.b{res}.conv1.noise_const"
    return table


def load_rosinality_state_dict(
    state_dict: dict[str, torch.Tensor], config: StyleGAN2Config, w_avg: torch.Tensor | None = None, seed: int = 0
) -> Generator:
    """Convert a rosinality ``stylegan2-pytorch`` generator state dict (e.g. ``ckpt["g_ema"]``) into a Generator.

    The mapping is explicit (see ``_rosinality_table``); every key must be consumed. rosinality stores no w_avg in
    the generator: pass ``w_avg`` (its checkpoints' ``latent_avg``) or it is estimated from 4096 seeded z samples.
    Implements Karras et al. 2020 (arXiv 1912.04958) with the same equalized-lr conventions, so values copy as-is.
    """
    if config.c_dim or config.z_dim != config.w_dim:
        raise ValueError("rosinality generators are unconditional with z_dim == w_dim (style_dim); fix the config.")
    table, G = _rosinality_table(config), Generator(config)
    fixed = {k: v for k, v in state_dict.items() if _ROSINALITY_FIXED.match(k)}
    for key, value in fixed.items():
        if value.shape != (4, 4) or not torch.allclose(value.float().cpu(), _blur_filter(), atol=1e-6):
            raise ValueError(f"{key} is not the [1, 3, 3, 1] blur filter this implementation supports.")
    missing = sorted(set(table) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(table) - set(fixed))
    if missing or unexpected:
        raise ValueError(
            f"Not a rosinality generator for this config: missing keys ({len(missing)}): {_few(missing)}; unexpected "
            f"keys ({len(unexpected)}): {_few(unexpected)}. Check size/img_resolution, n_mlp/mapping_layers, and that "
            "you passed the 'g_ema' state dict."
        )
    ours = G.state_dict()
    converted = {}
    for src, dst in table.items():
        value = state_dict[src]
        if [d for d in value.shape if d != 1] != [d for d in ours[dst].shape if d != 1]:  # equal up to singletons
            hint = "check channel_base/channel_max (channel_multiplier) and style_dim"
            raise ValueError(f"{src}: shape {list(value.shape)} does not fit {dst} {list(ours[dst].shape)}; {hint}.")
        converted[dst] = value.reshape(ours[dst].shape)
    if w_avg is None:
        logger.info("No latent_avg given: estimating w_avg from 4096 random z (seed %d).", seed)
        gen = torch.Generator().manual_seed(seed)
        G.mapping.load_state_dict({k[8:]: v for k, v in converted.items() if k.startswith("mapping.")}, strict=False)
        with torch.no_grad():
            w_avg = G.mapping(torch.randn(4096, config.z_dim, generator=gen), update_w_avg=False)[:, 0].mean(0)
    converted["mapping.w_avg"] = w_avg.reshape(-1)
    return _load_strict(G, converted, "converted rosinality state dict").eval()


def load_rosinality_checkpoint(
    path: str | os.PathLike, config: StyleGAN2Config, trust_pickle: bool = False
) -> Generator:
    """Load a rosinality checkpoint (``.pt`` holding ``{"g_ema": ..., "latent_avg": ...}``, or a flat state dict;
    ``.safetensors`` is always accepted). Pickles load with ``torch.load(weights_only=True)`` (``argparse.Namespace``
    allowed, for the ``args`` entry) unless ``trust_pickle=True``, which runs arbitrary code from the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        ckpt: dict = load_file(str(path))
    elif trust_pickle:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    else:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(
                f"{path} contains Python objects beyond tensors, and unpickling them can run arbitrary code. If you "
                "trust its origin, pass trust_pickle=True (CLI: --trust-pickle); otherwise re-save its 'g_ema' "
                f"state dict as .safetensors. Details: {str(e).splitlines()[0]}"
            ) from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} holds a {type(ckpt).__name__}, expected a dict (state dict or {{'g_ema': ...}}).")
    state = ckpt.get("g_ema", ckpt)
    w_avg = ckpt.get("latent_avg")
    state = {k: v for k, v in state.items() if k != "latent_avg"}
    return load_rosinality_state_dict(state, config, w_avg=w_avg)


def convert_nvlabs_state_dict(state_dict: dict[str, torch.Tensor], config: StyleGAN2Config) -> Generator:
    """Build a Generator from an NVlabs StyleGAN2-ADA ``G_ema.state_dict()`` (names are identical to ours; the
    fixed ``resample_filter`` buffers are dropped, and a missing ``w_avg`` is zero-filled with a warning)."""
    state = {k: v for k, v in state_dict.items() if not k.endswith("resample_filter")}
    if "mapping.w_avg" not in state:
        logger.warning("NVlabs state dict has no mapping.w_avg (w_avg_beta=None); truncation will pull towards 0.")
        state["mapping.w_avg"] = torch.zeros(config.w_dim)
    return _load_strict(Generator(config), state, "NVlabs G_ema state dict").eval()


def _config_from_nvlabs(G_ema) -> StyleGAN2Config:
    """Read an NVlabs generator's architecture from its attributes and ``init_kwargs``."""
    kwargs = dict(getattr(G_ema, "init_kwargs", None) or {})
    mk, sk = dict(kwargs.get("mapping_kwargs") or {}), dict(kwargs.get("synthesis_kwargs") or {})
    if sk.get("architecture", "skip") != "skip":
        raise ValueError(f"Only the 'skip' synthesis architecture is supported, got {sk['architecture']!r}.")
    n_fc = sum(1 for k in G_ema.state_dict() if re.fullmatch(r"mapping\.fc\d+\.weight", k))
    dims = [int(getattr(G_ema, a)) for a in ("z_dim", "w_dim", "c_dim", "img_resolution", "img_channels")]
    lr, beta = float(mk.get("lr_multiplier", 0.01)), float(mk.get("w_avg_beta") or 0.995)
    base, cmax = int(sk.get("channel_base", 32768)), int(sk.get("channel_max", 512))
    return StyleGAN2Config(*dims, n_fc, lr, beta, channel_base=base, channel_max=cmax, conv_clamp=sk.get("conv_clamp"))


def load_nvlabs_pickle(path: str | os.PathLike, trust_pickle: bool = False, device: str = "cpu") -> Generator:
    """Load ``G_ema`` from an NVlabs StyleGAN2-ADA ``.pkl`` (Karras et al. 2020, arXiv 1912.04958).

    NVlabs pickles embed source code that runs on load, so this refuses unless ``trust_pickle=True``, and needs
    NVlabs' ``dnnlib`` and ``torch_utils`` importable. Save the result with :func:`save_generator` to never unpickle
    it again. NVlabs runs its top resolutions in fp16 (``num_fp16_res``); this runs fp32, so images agree to fp16
    precision, not bit for bit.
    """
    path = Path(path)
    if not trust_pickle:
        raise ValueError(
            f"Refusing to unpickle {path}: NVlabs pickles execute code embedded in the file. If you trust its origin, "
            "pass trust_pickle=True (CLI: --trust-pickle), then save_generator() it to safetensors."
        )
    for module in ("dnnlib", "torch_utils"):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ImportError(
                f"Unpickling NVlabs networks needs their '{module}' package: put a checkout of "
                "https://github.com/NVlabs/stylegan2-ada-pytorch on PYTHONPATH (e.g. PYTHONPATH=/path/to/repo)."
            ) from e
    with open(path, "rb") as f:
        data = pickle.load(f)  # the caller opted in with trust_pickle=True
    if not isinstance(data, dict) or "G_ema" not in data:
        raise ValueError(f"{path} does not hold an NVlabs network dict with a 'G_ema' entry.")
    G_ema = data["G_ema"]
    return convert_nvlabs_state_dict(G_ema.state_dict(), _config_from_nvlabs(G_ema)).to(device)
