"""A handle over a diffusers Stable Diffusion pipeline: the few operations erasure methods and evaluation need.

Trained weights never touch the caller's pipeline: methods pass ``params`` (``"<component>.<name>" -> tensor``) and
the handle runs the component with those tensors swapped in through ``torch.func.functional_call``, or a
:class:`~erasekit.models.masked.MaskedWeights` whose weights are built one submodule at a time.

``DiffusionHandle(pipe)`` picks the handle of the pipeline's architecture, as ``pathlib.Path`` picks the path class
of the system: :class:`~erasekit.models.SDXLHandle` for a ``StableDiffusionXLPipeline``,
:class:`~erasekit.models.SD3Handle` for a ``StableDiffusion3Pipeline``, this class for Stable Diffusion 1.x/2.x.

Every handle speaks the same conventions, so a method written against one runs on all of them:

- A prompt's conditioning is one tensor ``[N, rows, D]`` from :meth:`DiffusionHandle.encode_prompts`; methods only
  slice, expand and concatenate it along the batch dimension. (SDXL and SD3 append their pooled text embedding as
  extra rows, see :func:`pack_conditioning`; only the handle reads the parts.)
- Timesteps are what the denoiser is called with; latents are what it reads at that timestep; the training loss
  regresses the denoiser's output to :meth:`DiffusionHandle.training_target` (ε or v for SD/SDXL, the flow-matching
  velocity for SD3) on :meth:`DiffusionHandle.add_noise`'s inputs at :meth:`DiffusionHandle.training_timesteps`.
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
from .masked import MaskedWeights

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


def _call(module: nn.Module, overrides: dict[str, torch.Tensor] | MaskedWeights | None, *args, **kwargs):
    if not overrides:
        return module(*args, **kwargs)
    masked = isinstance(overrides, MaskedWeights)  # built one submodule at a time, not all up front
    if not masked:
        dtype = next(module.parameters()).dtype
        overrides = {k: v.to(dtype) for k, v in overrides.items()}
    previous = getattr(_active, "call", None)
    _active.call = (module, overrides)
    try:
        if masked:
            with overrides.swapped_into(module):
                return module(*args, **kwargs)
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
        if isinstance(overrides, MaskedWeights):  # the recomputation saves its tensors through checkpoint's hooks
            return contextlib.nullcontext(), overrides.swapped_into(root, save_references=False)
        return contextlib.nullcontext(), _reparametrize_module(root, overrides, strict=False)

    return checkpoint(block.__call__, *args, use_reentrant=False, context_fn=contexts)


def _unet_forward(unet: nn.Module, overrides: dict[str, torch.Tensor], latents, t, emb) -> torch.Tensor:
    return _call(unet, overrides, latents, t, encoder_hidden_states=emb).sample


def pack_conditioning(tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """One conditioning tensor from token states ``[N, L, D]`` and a pooled embedding ``[N, P]``: the pooled vector,
    zero-padded to whole rows of width D, follows the tokens as ``ceil(P / D)`` extra rows.

    Methods treat every handle's conditioning as one tensor they slice and concatenate along the batch dimension;
    this keeps SDXL's and SD3's pooled embedding attached to its prompt through all of that.

    Example:
        >>> pack_conditioning(torch.zeros(2, 77, 2048), torch.ones(2, 1280)).shape
        torch.Size([2, 78, 2048])
    """
    n, _, d = tokens.shape
    rows = -(-pooled.shape[1] // d)
    padded = torch.nn.functional.pad(pooled.to(tokens.dtype), (0, rows * d - pooled.shape[1]))
    return torch.cat([tokens, padded.reshape(n, rows, d)], dim=1)


def unpack_conditioning(emb: torch.Tensor, length: int, pooled_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [N, length, D], pooled [N, pooled_dim])`` of a tensor made by :func:`pack_conditioning`."""
    return emb[:, :length], emb[:, length:].reshape(emb.shape[0], -1)[:, :pooled_dim]


def handle_class(pipe) -> type[DiffusionHandle]:
    """The handle class for a pipeline: by its class (SDXL, SD3), else the Stable Diffusion 1.x/2.x one."""
    from diffusers import StableDiffusion3Pipeline, StableDiffusionXLPipeline

    if isinstance(pipe, StableDiffusionXLPipeline):
        from .sdxl import SDXLHandle

        return SDXLHandle
    if isinstance(pipe, StableDiffusion3Pipeline):
        from .sd3 import SD3Handle

        return SD3Handle
    return DiffusionHandle


class DiffusionHandle(ModelHandle):
    """Wraps a ``StableDiffusionPipeline``-like object (unet, text_encoder, tokenizer, scheduler, vae).

    Example:
        >>> handle = DiffusionHandle(pipe)
        >>> emb = handle.encode_prompts(["a cat"])
        >>> eps = handle.predict_noise(latents, t, emb)
    """

    kind = "diffusion"
    spec: str | None = None  # how the model was named when loaded, recorded in patch metadata
    denoiser_name = "unet"  # the component that predicts noise (SD3: "transformer")
    required = REQUIRED_COMPONENTS
    _unet_fn = staticmethod(_unet_forward)

    def __new__(cls, pipe=None, *args, **kwargs):
        if cls is DiffusionHandle and pipe is not None:
            cls = handle_class(pipe)  # the architecture's handle, as pathlib.Path picks PosixPath
        return super().__new__(cls)

    def __init__(self, pipe):
        missing = [c for c in self.required if getattr(pipe, c, None) is None]
        if missing:
            raise TypeError(
                f"{type(pipe).__name__} lacks {missing}; erasekit needs a Stable Diffusion-style pipeline with "
                f"{', '.join(self.required)} (e.g. diffusers.StableDiffusionPipeline)."
            )
        if type(self) is DiffusionHandle and getattr(pipe, "text_encoder_2", None) is not None:
            raise TypeError(
                f"{type(pipe).__name__} has a second text encoder that a Stable Diffusion 1.x/2.x handle would ignore; "
                "erasekit supports StableDiffusionPipeline, StableDiffusionXLPipeline and StableDiffusion3Pipeline "
                "(load the text-to-image pipeline of the checkpoint)."
            )
        self.pipe = pipe

    @property
    def components(self) -> dict[str, nn.Module]:
        return {"unet": self.pipe.unet, "text_encoder": self.pipe.text_encoder, "vae": self.pipe.vae}

    @property
    def denoiser(self) -> nn.Module:
        """The network that predicts noise (or velocity): the UNet, or SD3's transformer."""
        return getattr(self.pipe, self.denoiser_name)

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    @property
    def image_size(self) -> int:
        return int(self.denoiser.config.sample_size) * int(self.pipe.vae_scale_factor)

    @property
    def prediction_type(self) -> str:
        return self.pipe.scheduler.config.get("prediction_type", "epsilon")

    @staticmethod
    def _split(params, component: str) -> dict[str, torch.Tensor] | MaskedWeights:
        if isinstance(params, MaskedWeights):
            return params.component(component)
        prefix = component + "."
        return {k[len(prefix) :]: v for k, v in (params or {}).items() if k.startswith(prefix)}

    def _clip_states(
        self, prompts, name: str, tokenizer, max_length: int, params
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A CLIP text encoder's penultimate hidden states and its first output (the pooled projection where the
        encoder has one), for SDXL and SD3; gradients flow only when ``params`` override that encoder's weights."""
        ids = tokenizer(
            list(prompts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        overrides = self._split(params, name)
        with contextlib.nullcontext() if overrides else torch.no_grad():
            out = _call(getattr(self.pipe, name), overrides, ids, output_hidden_states=True)
        return out.hidden_states[-2], out[0]

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
        """The conditioning of ``prompts``: text-encoder hidden states ``[N, max_length, D]`` (gradients flow only
        through params). SDXL and SD3 append their pooled embedding (see :func:`pack_conditioning`)."""
        tok = self.pipe.tokenizer
        ids = tok(
            list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        overrides = self._split(params, "text_encoder")
        grad = overrides or any(v.requires_grad for v in getattr(self, "_injected", {}).values())
        with contextlib.nullcontext() if grad else torch.no_grad():
            return _call(self.pipe.text_encoder, overrides, ids)[0]

    @contextlib.contextmanager
    def injected_tokens(self, vectors: dict[int, torch.Tensor]) -> Iterator[None]:
        """Inside the block, wherever token id ``i`` occurs in a prompt, the text encoder reads ``vectors[i]``
        instead of its own input embedding (textual inversion and soft-prompt attacks; the weights never change).

        Gradients flow to the vectors when they require grad.

        Example:
            >>> (tid,) = handle.token_ids("zebra")
            >>> with handle.injected_tokens({tid: learned}):
            ...     images = handle.generate(["a zebra painting"], [0])
        """
        table = self.pipe.text_encoder.get_input_embeddings()
        ids = torch.tensor(sorted(vectors), dtype=torch.long)
        rows = [vectors[int(i)] for i in ids]

        def hook(module, args, output):
            input_ids = args[0]
            out = output
            for tid, vec in zip(ids.tolist(), rows, strict=True):
                mask = (input_ids == tid).unsqueeze(-1)
                if bool(mask.any()):
                    out = torch.where(mask, vec.to(out.device, out.dtype), out)
            return out

        previous = getattr(self, "_injected", {})
        self._injected = {**previous, **vectors}
        handle = table.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()
            self._injected = previous

    def token_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """The text states the cross-attention keys and values read, one row per token position, ``[N, L,
        text_embedding_dim]`` (no pooled rows; what UCE's closed form edits the key/value projections on)."""
        return self.encode_prompts(prompts)

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
        self._unet_fn = torch.compile(type(self)._unet_fn)
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
        self.denoiser.to(memory_format=torch.channels_last)
        try:
            yield
        finally:
            self.denoiser.to(memory_format=torch.contiguous_format)

    def gradient_checkpointing(self, enable: bool) -> bool:
        """Switch the UNet's activation checkpointing; returns the previous setting so it can be restored.

        Checkpointed blocks recompute under the trained tensors swapped in (:func:`checkpoint_swapped`).
        """
        unet = self.denoiser
        if not getattr(unet, "_supports_gradient_checkpointing", False):
            return False
        was = bool(unet.is_gradient_checkpointing)
        if enable != was:
            if enable:
                unet.enable_gradient_checkpointing(checkpoint_swapped)
            else:
                unet.disable_gradient_checkpointing()
        return was

    def training_timesteps(self, draws: torch.Tensor) -> torch.Tensor:
        """The denoiser's timesteps for integer draws in ``[0, num_train_timesteps)`` (0 = least noise): the draws
        themselves for a DDPM-style schedule; SD3 reads them off its scheduler's sigma table."""
        return draws

    @property
    def _sigma_space(self) -> bool:
        """Whether the pipeline's sampler keeps latents as x₀ + σ·ε (Euler, Heun, LMS ...: ``init_noise_sigma`` > 1)
        rather than as the denoiser reads them, √ᾱ·x₀ + √(1−ᾱ)·ε; such latents are rescaled on the way out."""
        return float(getattr(self.pipe.scheduler, "init_noise_sigma", None) or 1.0) > 1.0

    def _alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        a = self.pipe.scheduler.alphas_cumprod.to(like.device)[t.long()].float()
        return a.view(-1, *([1] * (like.ndim - 1)))

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target of the standard diffusion loss for this scheduler (ε, or v for v-prediction)."""
        if self.prediction_type == "v_prediction":
            if self._sigma_space or not hasattr(self.pipe.scheduler, "get_velocity"):
                a = self._alpha_bar(t, x0)
                return a.sqrt() * noise - (1 - a).sqrt() * x0
            return self.pipe.scheduler.get_velocity(x0, noise, t)
        return noise

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t at training timesteps ``t`` as the denoiser reads it: √ᾱ_t·x₀ + √(1−ᾱ_t)·ε.

        The scheduler's own ``add_noise`` computes exactly that only for the DDPM family (DDPM, DDIM, PNDM). A
        σ-space sampler's (Euler, Heun, LMS) gives x₀ + σ·ε, and a multistep solver's (DPM-Solver, UniPC, DEIS)
        looks ``t`` up in its inference schedule, so a training timestep gets another timestep's noise level (the
        reversed one before any sampling, the last sampling step's after); every scheduler with a ``sigmas`` table
        is therefore noised from its ᾱ table here."""
        scheduler = self.pipe.scheduler
        if self._sigma_space or getattr(scheduler, "sigmas", None) is not None:
            a = self._alpha_bar(t, x0).to(x0.dtype)
            return a.sqrt() * x0 + (1 - a).sqrt() * noise
        return scheduler.add_noise(x0, noise, t)

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
        return int(self.denoiser.config.in_channels), side, side

    def initial_latents(self, n: int, generator: torch.Generator, size: int | None = None) -> torch.Tensor:
        """Standard-normal starting latents drawn from a (CPU) generator, so results do not depend on the device.

        The pipeline scales them by its sampler's ``init_noise_sigma`` itself (1 for DDIM; Euler's σ scale)."""
        shape = (n, *self.latent_shape(size))
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
        return noise.to(self.device, self.dtype)

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
        ``__call__``. Returns the latents, as the denoiser reads them at that timestep, and the timestep they sit at
        (0 when sampling ran to the end).
        """
        state = {"t": torch.tensor(0), "sigma": None}
        timesteps = None
        sigma_space = self._sigma_space

        def on_step_end(pipe, i, t, kwargs):
            nonlocal timesteps
            timesteps = pipe.scheduler.timesteps
            if sigma_space:  # where the latents now sit on the sampler's σ scale
                state["sigma"] = pipe.scheduler.sigmas[getattr(pipe.scheduler, "step_index", None) or i + 1]
            if stop_after is not None and i + 1 >= stop_after:
                pipe._interrupt = True
                state["t"] = timesteps[i + 1] if i + 1 < len(timesteps) else self._end_timestep()
            return kwargs

        if stop_after == 0:
            return self._start(latents, num_inference_steps)
        out = self.pipe(
            **self._pipeline_conditioning(cond, uncond, latents),
            latents=latents,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            output_type="latent",
            callback_on_step_end=on_step_end,
        )
        return self._denoiser_scale(out.images, state["sigma"]), state["t"]

    def _pipeline_conditioning(self, cond: torch.Tensor, uncond: torch.Tensor, latents: torch.Tensor) -> dict:
        """The pipeline's keyword arguments for conditioning made by :meth:`encode_prompts`."""
        return {"prompt_embeds": cond, "negative_prompt_embeds": uncond}

    def _end_timestep(self) -> torch.Tensor:
        return torch.tensor(0)

    def _start(self, latents: torch.Tensor, num_inference_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Starting latents as the denoiser reads them, and the sampler's first timestep."""
        sched = self.pipe.scheduler
        sched.set_timesteps(num_inference_steps, device=self.device)
        if not self._sigma_space:
            return latents, sched.timesteps[0]
        scaled = latents * float(sched.init_noise_sigma)  # what the pipeline starts from, on the σ scale
        return self._denoiser_scale(scaled, sched.sigmas[0]), sched.timesteps[0]

    @staticmethod
    def _denoiser_scale(latents: torch.Tensor, sigma: torch.Tensor | None) -> torch.Tensor:
        """σ-space latents x₀ + σ·ε as the denoiser reads them, (x₀ + σ·ε)/√(σ²+1); unchanged without a σ."""
        if sigma is None:
            return latents
        return (latents / (float(sigma) ** 2 + 1) ** 0.5).to(latents.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode latents to images in ``[0, 1]``, shape ``[N, 3, H, W]``, float32."""
        return self.decode_with_grad(latents)

    def decode_with_grad(self, latents: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` with gradients flowing to ``latents`` (attacks that judge decoded images)."""
        vae = self.pipe.vae
        images = vae.decode(self._vae_input(latents.to(vae.dtype))).sample
        return (images.float() / 2 + 0.5).clamp(0, 1)

    def token_embedding_table(self) -> torch.Tensor:
        """The text encoder's input embedding table ``[vocab, D]`` (read-only; prompt attacks project onto it)."""
        return self.pipe.text_encoder.get_input_embeddings().weight.detach()

    def _vae_input(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents in the VAE's own scale (what ``vae.decode`` reads)."""
        return latents / self.pipe.vae.config.scaling_factor

    def _from_vae(self, z: torch.Tensor) -> torch.Tensor:
        """A VAE posterior sample in the denoiser's latent scale."""
        return z * self.pipe.vae.config.scaling_factor

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """VAE-encode images in ``[-1, 1]`` to scaled latents (a sample of the posterior)."""
        vae = self.pipe.vae
        dist = vae.encode(images.to(self.device, vae.dtype)).latent_dist
        return self._from_vae(dist.sample(generator))

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
    installed and CUDA is present; ``eager`` is the plain reference implementation. SD3's joint attention has only
    the SDPA processor in diffusers: its transformer keeps that one (and refuses ``eager`` and ``xformers``).
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"Unknown attention backend {backend!r}; choose one of {ATTENTION_BACKENDS}.")
    has_xformers = importlib.util.find_spec("xformers") is not None and torch.cuda.is_available()
    if getattr(pipe, "unet", None) is None:
        return _set_transformer_attention(pipe, backend)
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


def _set_transformer_attention(pipe, backend: str) -> str:
    """SDPA for a transformer pipeline (SD3): its joint attention stays on diffusers' SDPA processor, the VAE too."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    if backend in ("eager", "xformers"):
        raise ValueError(
            f"{type(pipe).__name__}'s joint attention runs on PyTorch SDPA only (diffusers has no {backend} processor "
            "for it); use --attention sdpa."
        )
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    return "sdpa"


def _attention_modules(pipe) -> tuple[nn.Module, ...]:
    return tuple(
        m for m in (getattr(pipe, "unet", None), getattr(pipe, "transformer", None), pipe.vae) if m is not None
    )


@contextlib.contextmanager
def attention_backend(pipe, backend: str) -> Iterator[str]:
    """Temporarily switch the attention backend; the previous processors are restored on exit."""
    saved = {m: m.attn_processors for m in _attention_modules(pipe)}
    try:
        yield set_attention_backend(pipe, backend)
    finally:
        for module, processors in saved.items():
            module.set_attn_processor(processors)
