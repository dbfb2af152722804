"""A handle over a diffusers ``StableDiffusion3Pipeline`` (Esser et al., "Scaling Rectified Flow Transformers for
High-Resolution Image Synthesis", arXiv 2403.03206).

SD3 differs from Stable Diffusion in what every erasure method touches:

- The denoiser is an MMDiT (``SD3Transformer2DModel``): text and image tokens each have their own projections and
  attend *jointly*; there is no cross-attention. Its conditioning is the token sequence of two CLIP encoders
  (penultimate states, concatenated and zero-padded to the T5 width) followed by T5's (zeros without T5), plus the
  two CLIP encoders' pooled projections, concatenated; :meth:`SD3Handle.encode_prompts` returns both as one tensor
  (:func:`~erasekit.models.sd.pack_conditioning`).
- Flow matching: x_t = (1 − σ)·x₀ + σ·ε at timestep t = 1000·σ, and the transformer predicts the velocity
  v = ε − x₀, which is the training target; x̂₀ = x_t − σ·v. Training timesteps are read off the scheduler's own
  (shifted) sigma table, so a uniform draw over it has the schedule's emphasis on high noise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from .sd import DiffusionHandle, _call, pack_conditioning, unpack_conditioning

SD3_COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler", "vae")
T5_TOKENS = 256  # T5 sequence length (the pipeline's max_sequence_length default)


def _sd3_forward(transformer: nn.Module, overrides, latents, t, tokens, pooled) -> torch.Tensor:
    return _call(
        transformer,
        overrides,
        hidden_states=latents,
        timestep=t,
        encoder_hidden_states=tokens,
        pooled_projections=pooled,
    ).sample


class SD3Handle(DiffusionHandle):
    """Wraps a ``StableDiffusion3Pipeline`` (MMDiT transformer, CLIP-L, CLIP-G and optional T5, flow matching).

    Example:
        >>> handle = SD3Handle(pipe)             # or DiffusionHandle(pipe), which picks this class
        >>> cond = handle.encode_prompts(["a cat"])  # [1, 77 + 256 + 1, 4096]
        >>> v = handle.predict_noise(latents, t, cond)  # the velocity ε − x₀
    """

    required = SD3_COMPONENTS
    denoiser_name = "transformer"
    t5_tokens = T5_TOKENS
    _unet_fn = staticmethod(_sd3_forward)

    @property
    def components(self) -> dict[str, nn.Module]:
        names = ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")
        return {n: getattr(self.pipe, n) for n in names if getattr(self.pipe, n, None) is not None}

    @property
    def prediction_type(self) -> str:
        return "flow_matching"

    @property
    def text_embedding_dim(self) -> int:
        """Width of the token states the transformer's context embedder reads (T5's width, ``joint_attention_dim``)."""
        return int(self.pipe.transformer.config.joint_attention_dim)

    @property
    def pooled_dim(self) -> int:
        return int(self.pipe.transformer.config.pooled_projection_dim)

    @property
    def sequence_length(self) -> int:
        """Token rows of the conditioning: the CLIP tokens, then T5's."""
        return self.max_prompt_tokens + self.t5_tokens

    # ---- prompts ------------------------------------------------------------------------------------------------
    def _t5(self, prompts: Sequence[str], params) -> torch.Tensor:
        encoder = getattr(self.pipe, "text_encoder_3", None)
        if encoder is None:  # SD3 without T5: zeros in its place, as the pipeline does
            return torch.zeros(len(prompts), self.t5_tokens, self.text_embedding_dim, device=self.device)
        ids = self.pipe.tokenizer_3(
            list(prompts),
            padding="max_length",
            max_length=self.t5_tokens,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        overrides = self._split(params, "text_encoder_3")
        with contextlib.nullcontext() if overrides else torch.no_grad():
            return _call(encoder, overrides, ids)[0]

    def encode_prompts(self, prompts: Sequence[str], params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The conditioning ``[N, 77 + 256 + k, joint_attention_dim]``: CLIP token states (both encoders
        concatenated, zero-padded), T5's, then the pooled CLIP projections in ``k`` rows."""
        states_1, pooled_1 = self._clip_states(
            prompts, "text_encoder", self.pipe.tokenizer, self.max_prompt_tokens, params
        )
        states_2, pooled_2 = self._clip_states(
            prompts, "text_encoder_2", self.pipe.tokenizer_2, self.max_prompt_tokens, params
        )
        clip = torch.cat([states_1, states_2], dim=-1)
        t5 = self._t5(prompts, params).to(clip.dtype)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return pack_conditioning(torch.cat([clip, t5], dim=1), torch.cat([pooled_1, pooled_2], dim=-1))

    def token_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """The token rows of :meth:`encode_prompts` (CLIP then T5), ``[N, 333, joint_attention_dim]``."""
        return self.split_conditioning(self.encode_prompts(prompts))[0]

    def split_conditioning(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token states, pooled embedding)`` of a conditioning tensor from :meth:`encode_prompts`."""
        return unpack_conditioning(emb, self.sequence_length, self.pooled_dim)

    # ---- the transformer and flow matching ----------------------------------------------------------------------
    def predict_noise(self, latents, t, emb, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The transformer's output, the flow-matching velocity ε − x₀, at timestep(s) ``t`` (= 1000·σ)."""
        t = torch.as_tensor(t, device=latents.device)
        if t.ndim == 0:
            t = t.expand(latents.shape[0])
        tokens, pooled = self.split_conditioning(emb)
        return self._unet_fn(self.pipe.transformer, self._split(params, "transformer"), latents, t, tokens, pooled)

    def _sigma(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(t, device=like.device).float() / self.num_train_timesteps
        return sigma.reshape(-1, *([1] * (like.ndim - 1)))

    def training_timesteps(self, draws: torch.Tensor) -> torch.Tensor:
        """1000·σ from the scheduler's training sigma table (its shift applied), ``draws`` = 0 the least noise."""
        table = getattr(self, "_timestep_table", None)
        if table is None:
            fresh = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)  # before any set_timesteps
            table = self._timestep_table = fresh.timesteps.float().flip(0)
        return table.to(draws.device)[draws]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 − σ)·x₀ + σ·ε with σ = t / 1000."""
        sigma = self._sigma(t, x0)
        return (1 - sigma) * x0 + sigma * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The flow-matching velocity ε − x₀ (what the transformer predicts)."""
        return noise - x0

    def predicted_x0(self, x_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """x̂₀ = x_t − σ·v (fp32)."""
        return x_t.float() - self._sigma(t, x_t) * output.float()

    # ---- sampling and the VAE -----------------------------------------------------------------------------------
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

    def _start(self, latents: torch.Tensor, num_inference_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        # every flow-matching schedule starts at σ = 1, whatever its shift
        return latents, torch.tensor(float(self.num_train_timesteps), device=self.device)

    def _vae_input(self, latents: torch.Tensor) -> torch.Tensor:
        config = self.pipe.vae.config
        return latents / config.scaling_factor + config.shift_factor

    def _from_vae(self, z: torch.Tensor) -> torch.Tensor:
        config = self.pipe.vae.config
        return (z - config.shift_factor) * config.scaling_factor
