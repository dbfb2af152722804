"""Data the diffusion methods train on, shared by SalUn (arXiv 2310.12508) and DoCo (arXiv 2405.15304): prompts
used in turn, x₀ latents from the frozen model's own sampler or an image folder, noisy inputs drawn per sample, and
several predictions batched into one forward.

Every draw comes from an explicit ``torch.Generator``; per-sample generators (``TrainState.sample_generators``) make
a sample's draws independent of how the batch is split across processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._killpoints import kill_point
from .loop import TrainState

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def in_turn(prompts: Sequence[str], n: int) -> list[str]:
    """``n`` prompts taking ``prompts`` in turn: sample ``i`` gets ``prompts[i % len(prompts)]``.

    Example:
        >>> in_turn(["a", "b"], 3)
        ['a', 'b', 'a']
    """
    return [prompts[i % len(prompts)] for i in range(n)]


def require_unet_targets(state: TrainState) -> None:
    """These methods train the denoiser, the UNet or SD3's transformer (prompt embeddings are computed once); refuse
    other targets before any work."""
    denoiser = getattr(state.handle, "denoiser_name", "unet")
    other = [k for k in state.params if not k.startswith(denoiser + ".")]
    if other:
        what = "UNet" if denoiser == "unet" else denoiser
        raise ValueError(
            f"{state.method_name} trains {what} parameters only; the target also selects {other[0]!r}. "
            f"Use a {what} preset (unet, xattn, non_xattn, ...)."
        )


def load_image_folder(folder: str | Path, size: int) -> torch.Tensor:
    """The images of ``folder`` (sorted by name), centre-cropped, resized to ``size``, as ``[N, 3, size, size]``
    in ``[-1, 1]`` (the VAE's input range)."""
    from PIL import Image

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"Image folder {folder} does not exist.")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    out = []
    for p in paths:
        img = Image.open(p).convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    return torch.stack(out).float() / 127.5 - 1


def generated_latents(handle, prompts: list[str], generator, steps: int, guidance: float, batch: int):
    """Final latents of the frozen model's own sampler, one per prompt (x₀ samples of what it generates)."""
    out = []
    for i in range(0, len(prompts), batch):
        kill_point("sample")
        chunk = prompts[i : i + batch]
        start = handle.initial_latents(len(chunk), generator)
        cond, uncond = handle.encode_prompts(chunk), handle.encode_prompts([""] * len(chunk))
        out.append(handle.sample_latents(cond, uncond, start, steps, guidance)[0].float())
    return torch.cat(out)


def folder_latents(handle, folder: str, generator, batch: int) -> torch.Tensor:
    """The VAE latents (posterior samples drawn from ``generator``) of the images of ``folder``."""
    images = load_image_folder(folder, handle.image_size)
    return torch.cat(
        [handle.encode_images(images[i : i + batch], generator).float() for i in range(0, len(images), batch)]
    )


def pick(n: int, generators: list[torch.Generator]) -> torch.Tensor:
    """One index in ``range(n)`` per sample, each from that sample's generator."""
    return torch.cat([torch.randint(0, n, (1,), generator=g) for g in generators])


def timestep_bounds(handle, fractions: tuple[float, float] | list[float] = (0.0, 1.0)) -> tuple[int, int]:
    """``[lo, hi)`` training timesteps from fractions of the schedule; never empty."""
    n = handle.num_train_timesteps
    lo = min(int(round(fractions[0] * n)), n - 1)
    return lo, max(lo + 1, int(round(fractions[1] * n)))


def noisy(
    handle,
    x0: torch.Tensor,
    generators: list[torch.Generator],
    t_range: tuple[int, int] | None = None,
    return_noise: bool = False,
):
    """(x_t, t, target[, noise]): noise and a uniform timestep in ``t_range`` (default: the whole schedule) for
    sample i drawn from ``generators[i]``; ``target`` is what the standard diffusion loss regresses to (ε or v; the
    flow-matching velocity for SD3, whose timesteps come from its scheduler's sigma table)."""
    lo, hi = t_range or (0, handle.num_train_timesteps)
    noise = torch.cat([torch.randn((1, *x0.shape[1:]), generator=g) for g in generators]).to(x0.device)
    t = torch.cat([torch.randint(lo, hi, (1,), generator=g) for g in generators])
    t = handle.training_timesteps(t.to(x0.device))  # the draws themselves but for SD3 (its sigma table)
    x_t = handle.add_noise(x0, noise, t).to(handle.dtype)
    target = handle.training_target(x0, noise, t).float()
    return (x_t, t, target, noise) if return_noise else (x_t, t, target)


def batched_predict(handle, inputs: list[tuple], params=None) -> list[torch.Tensor]:
    """``handle.predict_noise`` for several ``(x_t, t, emb)`` groups in one forward (fp32 outputs, one per group);
    ``params`` as there (``None``: the original weights). Empty ``inputs`` give an empty list.

    At small batches the per-call overhead dominates on a CPU, so fixed targets and trained predictions each take
    one forward."""
    if not inputs:
        return []
    x_t, t, emb = (torch.cat(column) for column in zip(*inputs, strict=True))
    out = handle.predict_noise(x_t, t, emb, params=params).float()
    return list(out.split([len(group[0]) for group in inputs]))
