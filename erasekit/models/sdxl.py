"""A handle over a diffusers ``StableDiffusionXLPipeline`` (Podell et al., "SDXL: Improving Latent Diffusion Models
for High-Resolution Image Synthesis", arXiv 2307.01952).

SDXL conditions its UNet on three things a prompt gives: the penultimate hidden states of two CLIP text encoders,
concatenated (768 + 1280 = 2048 wide; what cross-attention reads), the second encoder's pooled projection, and six
"added time ids" (original size, crop corner, target size) that go with the pooled embedding into the time
embedding. :meth:`SDXLHandle.encode_prompts` returns the first two as one tensor (the pooled vector as an extra row,
:func:`~erasekit.models.sd.pack_conditioning`); the time ids follow from the latents' size. The empty prompt, the
unconditional side of classifier-free guidance, is all zeros when the pipeline says so
(``force_zeros_for_empty_prompt``, SDXL base's setting), exactly as the pipeline's own sampling does.

SDXL checkpoints sample with Euler, whose latents live on a σ scale; :class:`~erasekit.models.DiffusionHandle`
rescales them to what the UNet reads, so partial sampling, ``add_noise`` and the training targets agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .sd import DiffusionHandle, _call, pack_conditioning, unpack_conditioning

SDXL_COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler", "vae")


def _sdxl_unet_forward(unet: nn.Module, overrides, latents, t, emb, added: dict) -> torch.Tensor:
    return _call(unet, overrides, latents, t, encoder_hidden_states=emb, added_cond_kwargs=added).sample


class SDXLHandle(DiffusionHandle):
    """Wraps a ``StableDiffusionXLPipeline`` (unet, two text encoders and tokenizers, scheduler, vae).

    Example:
        >>> handle = SDXLHandle(pipe)            # or DiffusionHandle(pipe), which picks this class
        >>> cond = handle.encode_prompts(["a cat"])  # [1, 77 + 1, 2048]: tokens, then the pooled row
        >>> eps = handle.predict_noise(latents, t, cond)
    """

    required = SDXL_COMPONENTS
    _unet_fn = staticmethod(_sdxl_unet_forward)

    @property
    def components(self) -> dict[str, nn.Module]:
        p = self.pipe
        return {"unet": p.unet, "text_encoder": p.text_encoder, "text_encoder_2": p.text_encoder_2, "vae": p.vae}

    @property
    def text_embedding_dim(self) -> int:
        """Width of the concatenated hidden states of both text encoders (what cross-attention keys/values read)."""
        return sum(int(e.config.hidden_size) for e in (self.pipe.text_encoder, self.pipe.text_encoder_2))

    @property
    def pooled_dim(self) -> int:
        """Width of the pooled text embedding (the second encoder's projection)."""
        return int(self.pipe.text_encoder_2.config.projection_dim)

    def _encode(self, prompts: Sequence[str], params) -> tuple[torch.Tensor, torch.Tensor]:
        """Both encoders' penultimate hidden states, concatenated, and the second one's pooled projection."""
        states, pooled = [], None
        for name, tok in (("text_encoder", self.pipe.tokenizer), ("text_encoder_2", self.pipe.tokenizer_2)):
            hidden, first = self._clip_states(prompts, name, tok, tok.model_max_length, params)
            states.append(hidden)
            if first.ndim == 2:  # the encoder with a projection gives the pooled embedding
                pooled = first
        return torch.cat(states, dim=-1), pooled

    def encode_prompts(self, prompts: Sequence[str], params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The conditioning ``[N, 77 + k, text_embedding_dim]``: token states, then the pooled embedding in ``k``
        rows; the empty prompt "" is all zeros when the pipeline's ``force_zeros_for_empty_prompt`` is set."""
        tokens, pooled = self._encode(prompts, params)
        empty = torch.tensor([p == "" for p in prompts], device=tokens.device)
        if self.pipe.config.get("force_zeros_for_empty_prompt", False) and bool(empty.any()):
            tokens = torch.where(empty[:, None, None], torch.zeros_like(tokens), tokens)
            pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        return pack_conditioning(tokens, pooled)

    def token_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """Both encoders' token states, concatenated, ``[N, 77, text_embedding_dim]`` (the empty prompt's too)."""
        return self._encode(prompts, None)[0]

    def split_conditioning(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token states, pooled embedding)`` of a conditioning tensor from :meth:`encode_prompts`."""
        return unpack_conditioning(emb, self.max_prompt_tokens, self.pooled_dim)

    def time_ids(self, latents: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """SDXL's added time ids for images the size of ``latents``: (h, w, crop top 0, crop left 0, h, w), per row
        (the pipeline's defaults: no crop, target size = original size)."""
        h, w = (int(s) * int(self.pipe.vae_scale_factor) for s in latents.shape[-2:])
        ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=dtype, device=latents.device)
        return ids.expand(latents.shape[0], -1)

    def predict_noise(self, latents, t, emb, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The UNet's raw output at timestep(s) ``t`` for conditioning ``emb`` (tokens, pooled text, time ids)."""
        t = torch.as_tensor(t, device=latents.device)
        if t.ndim == 0:
            t = t.expand(latents.shape[0])
        tokens, pooled = self.split_conditioning(emb)
        added = {"text_embeds": pooled, "time_ids": self.time_ids(latents, tokens.dtype)}
        return self._unet_fn(self.pipe.unet, self._split(params, "unet"), latents, t, tokens, added)

    def _pipeline_conditioning(self, cond: torch.Tensor, uncond: torch.Tensor, latents: torch.Tensor) -> dict:
        (tokens, pooled), (neg_tokens, neg_pooled) = self.split_conditioning(cond), self.split_conditioning(uncond)
        h, w = (int(s) * int(self.pipe.vae_scale_factor) for s in latents.shape[-2:])
        return {
            "prompt_embeds": tokens,
            "pooled_prompt_embeds": pooled,
            "negative_prompt_embeds": neg_tokens,
            "negative_pooled_prompt_embeds": neg_pooled,
            "height": h,
            "width": w,
        }

    def _vae_input(self, latents: torch.Tensor) -> torch.Tensor:
        config = self.pipe.vae.config
        mean, std = config.get("latents_mean"), config.get("latents_std")
        if mean is None or std is None:
            return latents / config.scaling_factor
        mean, std = (torch.tensor(v).view(1, -1, 1, 1).to(latents) for v in (mean, std))
        return latents * std / config.scaling_factor + mean

    def _from_vae(self, z: torch.Tensor) -> torch.Tensor:
        config = self.pipe.vae.config
        mean, std = config.get("latents_mean"), config.get("latents_std")
        if mean is None or std is None:
            return z * config.scaling_factor
        mean, std = (torch.tensor(v).view(1, -1, 1, 1).to(z) for v in (mean, std))
        return (z - mean) * config.scaling_factor / std
