"""A handle over a diffusers Stable Diffusion pipeline: the few operations erasure methods and evaluation need.

Trained weights never touch the caller's pipeline: methods pass ``params`` (``"<component>.<name>" -> tensor``) and
the handle runs the component with those tensors swapped in through ``torch.func.functional_call``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..ops.diffusion import x0_from_prediction
from .base import ModelHandle

logger = logging.getLogger(__name__)

REQUIRED_COMPONENTS = ("unet", "text_encoder", "tokenizer", "scheduler", "vae")
ATTENTION_BACKENDS = ("auto", "sdpa", "xformers", "eager")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """fp32 on CPU; bf16 on CUDA devices that support it, fp16 otherwise."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


_active = threading.local()  # (module, overrides) of the functional call running in this thread, if any


def _call(module: nn.Module, overrides: dict[str, torch.Tensor] | None, *args, **kwargs):
    if not overrides:
        return module(*args, **kwargs)
    dtype = next(module.parameters()).dtype
    overrides = {k: v.to(dtype) for k, v in overrides.items()}
    previous = getattr(_active, "call", None)
    _active.call = (module, overrides)
    try:
        return torch.func.functional_call(module, overrides, args, kwargs, strict=False)
    finally:
        _active.call = previous


def checkpoint_swapped(block: nn.Module, *args):
    """diffusers' gradient-checkpointing function for modules run with swapped-in tensors.

    The backward pass recomputes a checkpointed block after the functional call has returned; plain checkpointing
    would then recompute it with the module's own weights (different activations, or a "different number of saved
    tensors" error). This one recomputes under the same swapped-in tensors as the forward pass.
    """
    from torch.nn.utils.stateless import _reparametrize_module  # what torch.func.functional_call uses
    from torch.utils.checkpoint import checkpoint

    active = getattr(_active, "call", None)
    if active is None:
        return checkpoint(block.__call__, *args, use_reentrant=False)
    root, overrides = active

    def contexts():
        return contextlib.nullcontext(), _reparametrize_module(root, overrides, strict=False)

    return checkpoint(block.__call__, *args, use_reentrant=False, context_fn=contexts)


def _unet_forward(unet: nn.Module, overrides: dict[str, torch.Tensor], latents, t, emb) -> torch.Tensor:
    return _call(unet, overrides, latents, t, encoder_hidden_states=emb).sample


class DiffusionHandle(ModelHandle):
    """Wraps a ``StableDiffusionPipeline``-like object (unet, text_encoder, tokenizer, scheduler, vae).

    Example:
        >>> handle = DiffusionHandle(pipe)
        >>> emb = handle.encode_prompts(["a cat"])
        >>> eps = handle.predict_noise(latents, t, emb)
    """

    kind = "diffusion"
    spec: str | None = None  # how the model was named when loaded, recorded in patch metadata
    _unet_fn = staticmethod(_unet_forward)

    def __init__(self, pipe):
        missing = [c for c in REQUIRED_COMPONENTS if getattr(pipe, c, None) is None]
        if missing:
            raise TypeError(
                f"{type(pipe).__name__} lacks {missing}; erasekit needs a Stable Diffusion-style pipeline with "
                f"{', '.join(REQUIRED_COMPONENTS)} (e.g. diffusers.StableDiffusionPipeline)."
            )
        self.pipe = pipe

    @property
    def components(self) -> dict[str, nn.Module]:
        return {"unet": self.pipe.unet, "text_encoder": self.pipe.text_encoder, "vae": self.pipe.vae}

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.unet.dtype

    @property
    def image_size(self) -> int:
        return int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)

    @property
    def prediction_type(self) -> str:
        return self.pipe.scheduler.config.get("prediction_type", "epsilon")

    @staticmethod
    def _split(params: dict[str, torch.Tensor] | None, component: str) -> dict[str, torch.Tensor]:
        prefix = component + "."
        return {k[len(prefix) :]: v for k, v in (params or {}).items() if k.startswith(prefix)}

    def check_concept(self, concept: str) -> list[int]:
        """Token ids of ``concept`` without special tokens; a clear error if it is empty or too long."""
        if not isinstance(concept, str) or not concept.strip():
            raise ValueError("The concept is empty: pass the words to erase, e.g. --concept 'Van Gogh style'.")
        ids = self.token_ids(concept)
        if not ids:
            raise ValueError(f"The concept {concept!r} matches no token of the tokenizer; rephrase it in words.")
        if len(ids) > self.max_prompt_tokens - 2:
            raise ValueError(
                f"The concept {concept!r} is {len(ids)} tokens; the text encoder reads at most "
                f"{self.max_prompt_tokens - 2}. Shorten it."
            )
        return ids

    def token_ids(self, text: str) -> list[int]:
        """The tokenizer's ids of ``text`` without special tokens (BOS/EOS), unchecked."""
        return self.pipe.tokenizer(text, add_special_tokens=False).input_ids

    @property
    def max_prompt_tokens(self) -> int:
        """Tokens the text encoder reads per prompt, BOS and EOS included."""
        return int(self.pipe.tokenizer.model_max_length)

    @property
    def text_embedding_dim(self) -> int:
        """Width of the text encoder's hidden states (what cross-attention keys and values read)."""
        return int(self.pipe.text_encoder.config.hidden_size)

    def vocabulary_words(self) -> list[str]:
        """The whole words of the tokenizer's vocabulary, sorted (CLIP BPE marks a word's end with ``</w>``)."""
        return sorted(t[:-4] for t in self.pipe.tokenizer.get_vocab() if t.endswith("</w>"))

    def encode_prompts(self, prompts: Sequence[str], params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Text-encoder hidden states ``[N, max_length, D]`` for ``prompts`` (gradients flow only through params)."""
        tok = self.pipe.tokenizer
        ids = tok(
            list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        overrides = self._split(params, "text_encoder")
        with contextlib.nullcontext() if overrides else torch.no_grad():
            return _call(self.pipe.text_encoder, overrides, ids)[0]

    def predict_noise(self, latents, t, emb, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The UNet's raw output (ε or v, see :attr:`prediction_type`) at timestep(s) ``t``."""
        t = torch.as_tensor(t, device=latents.device)
        if t.ndim == 0:
            t = t.expand(latents.shape[0])
        return self._unet_fn(self.pipe.unet, self._split(params, "unet"), latents, t, emb)

    @contextlib.contextmanager
    def compiled(self, enable: bool = True) -> Iterator[None]:
        """Inside the block, UNet calls (frozen and with swapped-in tensors) go through ``torch.compile``."""
        if not enable:
            yield
            return
        self._unet_fn = torch.compile(_unet_forward)
        try:
            yield
        finally:
            del self._unet_fn  # back to the class's eager function

    @contextlib.contextmanager
    def memory_format(self, channels_last: bool) -> Iterator[None]:
        """Run the UNet in channels_last inside the block; the layout is restored after (values never change)."""
        if not channels_last:
            yield
            return
        self.pipe.unet.to(memory_format=torch.channels_last)
        try:
            yield
        finally:
            self.pipe.unet.to(memory_format=torch.contiguous_format)

    def gradient_checkpointing(self, enable: bool) -> bool:
        """Switch the UNet's activation checkpointing; returns the previous setting so it can be restored.

        Checkpointed blocks recompute under the trained tensors swapped in (:func:`checkpoint_swapped`).
        """
        unet = self.pipe.unet
        if not getattr(unet, "_supports_gradient_checkpointing", False):
            return False
        was = bool(unet.is_gradient_checkpointing)
        if enable != was:
            if enable:
                unet.enable_gradient_checkpointing(checkpoint_swapped)
            else:
                unet.disable_gradient_checkpointing()
        return was

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target of the standard diffusion loss for this scheduler (ε, or v for v-prediction)."""
        if self.prediction_type == "v_prediction":
            return self.pipe.scheduler.get_velocity(x0, noise, t)
        return noise

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.pipe.scheduler.add_noise(x0, noise, t)

    def predicted_x0(self, x_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """x̂₀ (fp32) from the UNet's ``output`` at ``x_t`` and timesteps ``t``, with the scheduler's ᾱ_t and
        prediction type (:func:`erasekit.ops.x0_from_prediction`)."""
        alphas = getattr(self.pipe.scheduler, "alphas_cumprod", None)
        if alphas is None:
            raise ValueError(
                f"x̂₀ needs a scheduler with alphas_cumprod; {type(self.pipe.scheduler).__name__} lacks it."
            )
        return x0_from_prediction(x_t, output, alphas.to(x_t.device)[t], self.prediction_type)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.pipe.scheduler.config.num_train_timesteps)

    def latent_shape(self, size: int | None = None) -> tuple[int, int, int]:
        """``(channels, side, side)`` of one latent for ``size``-pixel images (default: :attr:`image_size`)."""
        side = (size or self.image_size) // int(self.pipe.vae_scale_factor)
        return int(self.pipe.unet.config.in_channels), side, side

    def initial_latents(self, n: int, generator: torch.Generator, size: int | None = None) -> torch.Tensor:
        """Standard-normal starting latents drawn from a (CPU) generator, so results do not depend on the device."""
        shape = (n, *self.latent_shape(size))
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
        return (noise * self.pipe.scheduler.init_noise_sigma).to(self.device, self.dtype)

    @torch.no_grad()
    def sample_latents(
        self,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        latents: torch.Tensor,
        num_inference_steps: int,
        guidance_scale: float,
        stop_after: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the pipeline's own sampling loop from ``latents``; stop after ``stop_after`` steps if given.

        Stopping goes through ``callback_on_step_end`` (the pipeline's ``interrupt`` flag), never a forked
        ``__call__``. Returns the latents and the timestep they sit at (0 when sampling ran to the end).
        """
        state = {"t": torch.tensor(0)}
        timesteps = None

        def on_step_end(pipe, i, t, kwargs):
            nonlocal timesteps
            timesteps = pipe.scheduler.timesteps
            if stop_after is not None and i + 1 >= stop_after:
                pipe._interrupt = True
                state["t"] = timesteps[i + 1] if i + 1 < len(timesteps) else torch.tensor(0)
            return kwargs

        if stop_after == 0:
            self.pipe.scheduler.set_timesteps(num_inference_steps, device=self.device)
            return latents, self.pipe.scheduler.timesteps[0]
        out = self.pipe(
            prompt_embeds=cond,
            negative_prompt_embeds=uncond,
            latents=latents,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            output_type="latent",
            callback_on_step_end=on_step_end,
        )
        return out.images, state["t"]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode latents to images in ``[0, 1]``, shape ``[N, 3, H, W]``, float32."""
        vae = self.pipe.vae
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return (images.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """VAE-encode images in ``[-1, 1]`` to scaled latents (a sample of the posterior)."""
        vae = self.pipe.vae
        dist = vae.encode(images.to(self.device, vae.dtype)).latent_dist
        return dist.sample(generator) * vae.config.scaling_factor

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        negative_prompt: str = "",
    ) -> torch.Tensor:
        """One image per (prompt, seed) pair, ``[N, 3, H, W]`` in ``[0, 1]``; each seed drives its own generator."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: pass one seed per prompt.")
        latents = torch.cat([self.initial_latents(1, torch.Generator().manual_seed(int(s))) for s in seeds])
        cond = self.encode_prompts(prompts)
        uncond = self.encode_prompts([negative_prompt] * len(prompts))
        out, _ = self.sample_latents(cond, uncond, latents, num_inference_steps, guidance_scale)
        return self.decode(out)


def set_attention_backend(pipe, backend: str = "auto") -> str:
    """Choose the UNet/VAE attention implementation; returns the backend actually set.

    ``sdpa`` (PyTorch's fused scaled-dot-product attention) is the default; ``auto`` picks xformers only when it is
    installed and CUDA is present; ``eager`` is the plain reference implementation.
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"Unknown attention backend {backend!r}; choose one of {ATTENTION_BACKENDS}.")
    has_xformers = importlib.util.find_spec("xformers") is not None and torch.cuda.is_available()
    if backend == "auto":
        backend = "xformers" if has_xformers else "sdpa"
    if backend == "xformers":
        if not has_xformers:
            raise ValueError(
                "xformers attention needs the xformers package and a CUDA device: `pip install erasekit[cuda]` "
                "on a CUDA machine, or use --attention sdpa."
            )
        pipe.enable_xformers_memory_efficient_attention()
        return backend
    processor = AttnProcessor2_0 if backend == "sdpa" else AttnProcessor
    for module in (pipe.unet, pipe.vae):
        module.set_attn_processor(processor())
    return backend


@contextlib.contextmanager
def attention_backend(pipe, backend: str) -> Iterator[str]:
    """Temporarily switch the attention backend; the previous processors are restored on exit."""
    saved = {m: m.attn_processors for m in (pipe.unet, pipe.vae)}
    try:
        yield set_attention_backend(pipe, backend)
    finally:
        for module, processors in saved.items():
            module.set_attn_processor(processors)
