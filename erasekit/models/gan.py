"""A handle over a StyleGAN2 generator: parameters addressed ``generator.<name>``, seeded sampling, and synthesis
with trained tensors swapped in (the caller's generator is never written by a method).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .base import ModelHandle


def is_generator(obj) -> bool:
    """Anything with the StyleGAN2-ADA interface (``mapping``, ``synthesis``, ``z_dim``, ``num_ws``)."""
    return isinstance(obj, nn.Module) and all(hasattr(obj, a) for a in ("mapping", "synthesis", "z_dim", "num_ws"))


class StyleGANHandle(ModelHandle):
    """Wraps a generator with ``mapping(z, c) -> ws`` and ``synthesis(ws) -> img``.

    Example:
        >>> handle = StyleGANHandle(load_generator("faces.safetensors"))
        >>> ws = handle.sample_ws([0, 1, 2])
        >>> images = handle.synthesize(ws)          # [3, 3, H, W] in [0, 1]
    """

    kind = "stylegan"
    spec: str | None = None  # how the model was named when loaded, recorded in patch metadata
    world: Path | None = None  # the world folder it came from (``minifaces:DIR``): methods find its CLIP there
    suite_name: str | None = None  # the registered suite that judges the world it came from

    def __init__(self, generator: nn.Module):
        if not is_generator(generator):
            raise TypeError(
                f"{type(generator).__name__} is not a StyleGAN2 generator (needs mapping, synthesis, "
                "z_dim and num_ws)."
            )
        self.generator = generator

    @property
    def components(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def image_size(self) -> int:
        return int(self.generator.img_resolution)

    @torch.no_grad()
    def sample_ws(self, seeds: Sequence[int], truncation_psi: float = 1.0) -> torch.Tensor:
        """W+ codes ``[N, num_ws, w_dim]`` for seeds; z depends only on the seed (drawn on the CPU)."""
        z = torch.stack(
            [torch.randn(self.generator.z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        ).to(self.device)
        was_training = self.generator.training
        self.generator.eval()  # never move w_avg while sampling
        try:
            return self.generator.mapping(z, None, truncation_psi=truncation_psi)
        finally:
            self.generator.train(was_training)

    def synthesize(
        self, ws: torch.Tensor, params: dict[str, torch.Tensor] | None = None, noise_mode: str = "const"
    ) -> torch.Tensor:
        """Images in ``[0, 1]`` from W+ codes; ``params`` (``"generator.<name>" -> tensor``) replace weights."""
        overrides = {k[len("generator.") :]: v for k, v in (params or {}).items() if k.startswith("generator.")}
        synthesis = self.generator.synthesis
        if overrides:
            inner = {k[len("synthesis.") :]: v for k, v in overrides.items() if k.startswith("synthesis.")}
            if len(inner) != len(overrides):
                raise ValueError("Only synthesis-network parameters can be swapped in during synthesis.")
            img = torch.func.functional_call(synthesis, inner, (ws,), {"noise_mode": noise_mode}, strict=False)
        else:
            img = synthesis(ws, noise_mode=noise_mode)
        return (img.float().clamp(-1, 1) + 1) / 2

    @torch.no_grad()
    def generate(self, seeds: Sequence[int], truncation_psi: float = 1.0) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` in ``[0, 1]``, one per seed."""
        return self.synthesize(self.sample_ws(seeds, truncation_psi))
