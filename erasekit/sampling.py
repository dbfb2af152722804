"""Seeded, batched image generation over prompts x seeds, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from . import distributed


def generate_grid(
    handle,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int = 25,
    guidance: float = 7.5,
    batch_size: int = 16,
    progress: bool = True,
) -> torch.Tensor:
    """Images for every (prompt, seed), row-major by prompt: ``[len(prompts) * len(seeds), 3, H, W]`` in [0, 1].

    Each image's starting noise depends only on its seed, so batching does not change results. Under a
    data-parallel launch each process samples its share and every process receives the whole grid.
    """
    if not seeds:
        raise ValueError("No seeds given.")
    return generate_pairs(handle, [(p, s) for p in prompts for s in seeds], steps, guidance, batch_size, progress)


def generate_pairs(
    handle,
    pairs: Sequence[tuple[str, int]],
    steps: int = 25,
    guidance: float = 7.5,
    batch_size: int = 16,
    progress: bool = True,
) -> torch.Tensor:
    """One image per ``(prompt, seed)`` pair, in the given order: ``[len(pairs), 3, H, W]`` in [0, 1].

    :func:`generate_grid` is this over the full prompts x seeds product; use this when each prompt has its own
    seeds (an image depends only on its prompt and seed, so the two give identical images for the same pair).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1.")
    pairs = [(str(p), int(s)) for p, s in pairs]
    mine = [pairs[i] for i in distributed.shard(len(pairs))]
    out = []
    show = progress and distributed.is_main()
    for i in tqdm(range(0, len(mine), batch_size), desc="generating", unit="batch", disable=not show):
        chunk = mine[i : i + batch_size]
        out.append(handle.generate([p for p, _ in chunk], [s for _, s in chunk], steps, guidance))
    local = torch.cat(out) if out else torch.zeros(0, 3, handle.image_size, handle.image_size, device=handle.device)
    return distributed.gather_cat(local.float(), len(pairs)).cpu()
