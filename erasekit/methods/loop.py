"""The one training loop every fine-tuning method shares.

A method overrides ``prepare`` (build embeddings, data, masks), ``training_step`` (return the loss and the values to
log) and optionally ``transform_gradients`` (masks, gradient surgery) and ``make_patch``. The loop owns the
optimizer, seeding, the NaN/Inf guard, checkpoints/resume, progress, timing and the patch metadata.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import __version__, distributed
from .._killpoints import kill_point
from ..models.base import component_fingerprint
from ..patch import DenseDelta, ErasurePatch, resolve_targets
from .base import EraseMethod
from .callbacks import Callback, Checkpointer, ProgressBar
from .checkpoint import load_checkpoint, save_checkpoint
from .config import MethodConfig, RunConfig

logger = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf. ``.patch`` holds the erasure at the last good step (or ``None`` at step 0)."""

    def __init__(self, message: str, patch: ErasurePatch | None):
        super().__init__(message)
        self.patch = patch


@dataclass
class TrainState:
    """Everything a step needs; methods keep their own extras in ``ctx``."""

    method: TrainedMethod
    handle: Any
    concept: str  # the concept, or several joined by ", " (for logs and checkpoints)
    anchor: str | None
    config: MethodConfig
    params: dict[str, torch.Tensor]  # trainable fp32 copies keyed "<component>.<name>"
    base: dict[str, torch.Tensor]  # the caller's parameters (never written)
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    device: torch.device
    step: int = 0
    should_stop: bool = False
    ctx: dict = field(default_factory=dict)
    concepts: list[str] = field(default_factory=list)  # every concept erased in this run (one or more)
    weights: Any = None  # what forward passes run with, when not ``params`` themselves (e.g. MaskedWeights)

    @property
    def trained(self) -> Any:
        """The ``params=`` argument of the handle's calls that use the weights being trained."""
        return self.params if self.weights is None else self.weights

    @property
    def total_steps(self) -> int:
        return self.config.steps

    def step_generator(self, stream: int = 0) -> torch.Generator:
        """A generator for draws shared by the whole step (the same on every process), e.g. a timestep."""
        return torch.Generator().manual_seed(mix_seeds(self.config.seed, self.step, -1 - stream))

    def sample_generators(self, batch_size: int) -> list[torch.Generator]:
        """One generator per sample of this process's share of a ``batch_size`` global batch.

        Sample ``i`` of step ``s`` always gets the same draws, so one process with batch B and N processes with
        B/N each see exactly the same samples (data parallelism changes nothing but speed).
        """
        return [
            torch.Generator().manual_seed(mix_seeds(self.config.seed, self.step, i))
            for i in distributed.shard(batch_size)
        ]

    @property
    def method_name(self) -> str:
        return self.method.name


@contextlib.contextmanager
def frozen(handle):
    """The caller's parameters stop requiring gradients for the run (only the trained copies do), so backward
    passes neither compute nor store gradients for them; every flag is restored afterwards."""
    flags = {p: p.requires_grad for p in handle.named_parameters().values()}
    try:
        for p in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


class TrainedMethod(EraseMethod):
    """A method that fine-tunes a copy of the targeted parameters with the shared loop."""

    def default_target(self) -> Any:
        return self.config.target

    def prepare(self, state: TrainState) -> None:
        """Build what the steps need (prompt embeddings, data, masks) into ``state.ctx``."""

    def training_step(self, state: TrainState) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def transform_gradients(self, state: TrainState) -> None:
        """Edit ``p.grad`` of ``state.params`` in place before the optimizer step (masks, surgery)."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Method-owned tensors to checkpoint (e.g. a discriminator)."""
        return {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def trainable_copies(self, base: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
        """The tensors the optimizer trains: float32 copies of the targeted parameters (the caller's stay as they
        are)."""
        return {n: base[n].detach().float().clone().requires_grad_(True) for n in names}

    def make_patch(self, state: TrainState) -> dict:
        """Deltas from the trained copies; unchanged tensors are left out."""
        deltas = {}
        for key, p in state.params.items():
            diff = p.detach().float() - state.base[key].detach().float()
            if torch.count_nonzero(diff):
                deltas[key] = DenseDelta(diff.cpu())
        return deltas

    # ---- the loop ---------------------------------------------------------------------------------------------
    def erase(self, model, concept: str | list[str], anchor: str | None = None, callbacks=()) -> ErasurePatch:
        from ..models import load_model

        handle = load_model(model)
        distributed.init()
        if handle.kind not in self.kinds:
            raise ValueError(f"{self.name} works on {self.kinds} models, not {handle.kind}.")
        concepts = concept_list(concept)
        for c in concepts:
            handle.check_concept(c)
        with frozen(handle):
            state = self._init_state(handle, ", ".join(concepts), anchor)
            state.concepts = concepts
            self.prepare(state)
            callbacks = self._callbacks(state, list(callbacks))
            started = time.perf_counter()
            if state.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(state.device)
            with self._run_context(handle):
                self._run(state, callbacks)
        seconds = time.perf_counter() - started
        _release_training_memory(state)
        return self._finish(state, seconds)

    @contextlib.contextmanager
    def _run_context(self, handle):
        """Gradient checkpointing, memory format and compilation for the run; the caller's settings come back."""
        cfg = self.run
        was = handle.gradient_checkpointing(cfg.gradient_checkpointing)
        try:
            with handle.memory_format(cfg.channels_last), handle.compiled(cfg.compile):
                yield
        finally:
            handle.gradient_checkpointing(was)

    def _init_state(self, handle, concept: str, anchor: str | None) -> TrainState:
        cfg = self.config
        base = handle.named_parameters()
        names = resolve_targets(self.default_target(), base, handle.kind)
        params = self.trainable_copies(base, names)
        device = next(iter(params.values())).device
        extra = _reference_states(self.run, base, names)
        optimizer = torch.optim.AdamW(
            [*params.values(), *extra], lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
        )
        generator = torch.Generator().manual_seed(cfg.seed)
        state = TrainState(self, handle, concept, anchor, cfg, params, base, optimizer, generator, device)
        state.ctx["_reference_params"] = extra
        return state

    def _callbacks(self, state: TrainState, extra: list[Callback]) -> list[Callback]:
        cfg = self.run
        main = distributed.is_main()
        out: list[Callback] = [ProgressBar(f"{self.name}: {state.concept}")] if cfg.progress and main else []
        ckpt_dir = cfg.checkpoint_dir
        if cfg.resume:
            if not ckpt_dir:
                raise ValueError("resume=True needs checkpoint_dir (the folder of the interrupted run).")
            if load_checkpoint(state, ckpt_dir):
                logger.info("resumed %s from step %d", self.name, state.step)
        if cfg.checkpoint_every:
            if not ckpt_dir:
                raise ValueError("checkpoint_every needs checkpoint_dir (or use the CLI, which sets it).")
            if main:  # every process holds the same state; one writes it
                out.append(Checkpointer(ckpt_dir, cfg.checkpoint_every))
        return out + extra

    def _run(self, state: TrainState, callbacks: list[Callback]) -> None:
        for cb in callbacks:
            cb.on_train_start(state)
        try:
            while state.step < state.total_steps and not state.should_stop:
                logs = self._step(state)
                state.step += 1
                for cb in callbacks:
                    cb.on_step_end(state, logs)
        finally:
            for cb in callbacks:
                cb.on_train_end(state)

    def _step(self, state: TrainState) -> dict[str, float]:
        cfg = self.config
        state.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.run.mixed_precision, state.device):
            loss, logs = self.training_step(state)
        loss.backward()
        kill_point("step")
        grads = [p.grad for p in state.params.values() if p.grad is not None]
        loss = loss.detach().float().reshape(1)
        distributed.all_reduce_mean_([*grads, loss])  # data parallel: average before any gradient transform
        self.transform_gradients(state)
        norms = torch.stack(torch._foreach_norm(grads)) if grads else loss.new_zeros(1)
        bad = ~(torch.isfinite(loss).all() & torch.isfinite(norms).all())  # stays on the device
        seen = state.ctx.get("_nonfinite_seen")
        state.ctx["_nonfinite_seen"] = bad if seen is None else seen | bad  # remembered until the next sync
        on_device = _can_skip_on_device(state.optimizer)
        sync = not on_device or (state.step + 1) % self.run.sync_every == 0
        if sync and bool(state.ctx["_nonfinite_seen"]):  # skipped steps changed nothing: the state is the last good
            self._stop_non_finite(state, "loss or gradient")
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(state.params.values()), cfg.max_grad_norm)
        for p in state.ctx["_reference_params"]:
            p.grad = torch.zeros_like(p)  # reference-style full optimizer state: zero gradients, zero updates
        if on_device:
            state.optimizer.found_inf = bad.float()  # fused AdamW skips a non-finite update without a host sync
        state.optimizer.step()
        return {"loss": float(loss), **logs} if sync else dict(logs)

    def _stop_non_finite(self, state: TrainState, what: str) -> None:
        where = ""
        if self.run.checkpoint_dir and distributed.is_main():
            where = f" Last good state saved to {save_checkpoint(state, self.run.checkpoint_dir)}."
        patch = self._finish(state, float("nan")) if state.step else None
        raise NonFiniteError(
            f"{self.name}: non-finite {what} at step {state.step}; stopped with the last good state (e.patch).{where} "
            "Lower lr or check the inputs.",
            patch,
        )

    def _finish(self, state: TrainState, seconds: float) -> ErasurePatch:
        deltas = self.make_patch(state)
        if not deltas:
            raise RuntimeError(f"{self.name} left every targeted parameter unchanged; raise steps or lr.")
        touched = sorted({k.split(".", 1)[0] for k in deltas})
        components = state.handle.components
        meta = {
            "method": self.name,
            "concept": state.concepts[0] if len(state.concepts) == 1 else list(state.concepts),
            "anchor": state.anchor,
            "config": self.config.to_dict(),
            "base_model": getattr(state.handle, "spec", None),
            "base_fingerprint": {c: component_fingerprint(components[c]) for c in touched},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "erasekit_version": __version__,
            "stats": _stats(state, seconds),
        }
        return ErasurePatch(deltas, meta)


def _release_training_memory(state: TrainState) -> None:
    """Drop the optimizer's moments and the gradients once training is over: the patch is built from the trained
    weights alone, and at Stable Diffusion's size those buffers are three float32 copies of the trained tensors."""
    state.optimizer.state.clear()
    for p in state.params.values():
        p.grad = None


def _autocast(mode: str, device: torch.device):
    """bf16 autocast for 'bf16', or for 'auto' on CUDA; a no-op otherwise."""
    enabled = mode == "bf16" or (mode == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _can_skip_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Fused optimizers accept a device-side ``found_inf`` flag (as with AMP), so no host sync is needed."""
    return bool(optimizer.defaults.get("fused"))


def _reference_states(cfg: RunConfig, base: dict[str, torch.Tensor], names: list[str]) -> list[torch.Tensor]:
    """For ``optimizer_states='full'``: fp32 copies of the untargeted parameters of the touched components."""
    if cfg.optimizer_states != "full":
        return []
    chosen = set(names)
    components = {n.split(".", 1)[0] for n in names}
    return [
        p.detach().float().clone().requires_grad_(True)
        for n, p in base.items()
        if n not in chosen and n.split(".", 1)[0] in components
    ]


def concept_list(concept: str | list[str] | tuple[str, ...]) -> list[str]:
    """One concept or several: ``"a cat"`` -> ``["a cat"]``, ``["a", "b"]`` -> itself; an empty list is refused."""
    concepts = [concept] if isinstance(concept, str) else list(concept)
    if not concepts or not all(isinstance(c, str) for c in concepts):
        raise ValueError(f"concept must be a prompt or a non-empty list of prompts, got {concept!r}.")
    return concepts


def mix_seeds(*values: int) -> int:
    """A 63-bit seed from integers (stable across processes and runs)."""
    digest = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _stats(state: TrainState, seconds: float) -> dict:
    peak_gpu = torch.cuda.max_memory_allocated(state.device) if state.device.type == "cuda" else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {
        "erase_seconds": round(seconds, 3),
        "steps_run": state.step,
        "device": str(state.device),
        "peak_gpu_memory_bytes": peak_gpu,
        "peak_process_rss_bytes": rss,
        "torch": torch.__version__,
    }
