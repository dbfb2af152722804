"""SalUn: saliency unlearning for diffusion (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based
Weight Saliency in Both Image Classification and Generation", ICLR 2024, arXiv 2310.12508).

1. Saliency mask: on forget data x_f with the concept prompt c_f, L_f = MSE(target, (1 + w)·ε(x_t, c_f) − w·ε(x_t, ∅))
   with w = 7.5 and ∅ the *empty* prompt. The gradient of L_f over the whole forget set is taken at the original
   weights; its magnitude is ranked globally across all candidate tensors and the top ``mask_ratio`` is kept.
2. Unlearning: minimise MSE(ε_θ(x_t, c_f), sg[ε_θ(x_t, c')]) + α·MSE(ε_θ(x_r,t, c_r), target_r) with c' a misaligned
   prompt (the paper's random label) and (x_r, c_r) retain data (α is ``retain_weight``); gradients are multiplied
   by the mask before every optimiser step.
3. Output: a sparse patch with only the masked entries that changed.

Several concepts at once: a list of concepts shares one mask (the saliency of all their forget samples) and one
run; their forget samples are drawn in turn.

Guarded against two mistakes of a known port (pinned by tests): the null prompt of the saliency loss is "", not the
concept, and the mask keeps the *most* salient weights, not the least. The saliency is |Σ∇L_f|, the magnitude of
the gradient of the whole forget-set loss as the paper defines it.

The defaults are the paper's settings for Stable Diffusion. Three advanced options, off by default, are what the
MiniCanvas preset (``erasekit_worlds/minicanvas/presets/salun.yaml``) adds, each measured there (docs/methods.md,
"SalUn on MiniCanvas"): ``retain_target="frozen"`` regresses the retain loss to the original model's prediction
instead of the sampled noise (with the noise target every other style drifted: Watercolor IRA 61-72 % against
92-99 %); ``null_weight`` keeps the unconditional prediction ε(x_t, '') at the original model's (classifier-free
guidance moves every output by (w − 1) times its drift); ``misaligned_share`` draws part of the forget batch from
samples of c' (the erased model's own trajectories pass there: Ink UA 20 % before, 100 % after).

Robust training (``robust_every``, off by default; :mod:`erasekit.methods.adversarial`) refreshes adversarial tokens
appended to the forget prompts every few steps and applies the forget loss to the attacked prompts too (AdvUnlearn).

Deliberate departures from the reference code: forget/retain data default to samples the frozen model generates
itself (final latents of its own sampler, no decode/encode round trip) instead of a fixed image set; "target" means
ε or v as the scheduler predicts; the mask and the data are checkpointed so a resumed run is exact.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..models.masked import MaskedWeights
from ..ops import global_topk_mask, saliency_loss
from ..patch import SparseDelta
from .adversarial import AdversarialPrompts, RobustOptions
from .base import register_method
from .config import TrainingConfig, check_choice, option
from .diffusion_data import (
    batched_predict,
    folder_latents,
    generated_latents,
    in_turn,
    noisy,
    pick,
    require_unet_targets,
)
from .loop import TrainedMethod, TrainState

logger = logging.getLogger(__name__)

GENERIC_PROMPTS = ["a photo", "a picture", "an image"]
# masked_training='auto' trains the mask's entries only from this many candidate entries (a 0.2 GB float32 copy):
# building each weight per submodule costs time a small model need not spend (MiniCanvas: 6.6 M entries)
MASKED_TRAINING_MIN_ENTRIES = 50_000_000
MISALIGNED_PROMPTS = ["a photo of a landscape", "a photo of a room", "a photo of a street", "a photo of the sea"]


@dataclass
class SalUnConfig(RobustOptions, TrainingConfig):
    renamed: ClassVar[dict[str, str]] = {"alpha": "retain_weight"}

    steps: int = option(
        500,
        "optimisation steps (paper: 5 epochs at batch 8, ~500 steps at SD scale; MiniCanvas preset: 200, styles 160, objects 150)",
    )
    lr: float = option(
        1e-5, "learning rate (paper: 1e-5 on SD; MiniCanvas preset: 1e-4, styles 1.25e-4, objects 2e-4)"
    )
    batch_size: int = option(8, "forget samples and retain samples per step (paper: 8; MiniCanvas preset: 4)")
    target: Any = option("unet", "candidate parameters the saliency mask is chosen from (preset, 're:<regex>', list)")
    mask_ratio: float = option(
        0.5, "fraction of candidate weights kept trainable: the most salient, ranked globally (paper: 0.5)"
    )
    saliency_guidance: float = option(
        7.5, "w in the saliency loss MSE(target, (1+w)·ε(x_t,c) − w·ε(x_t,'')) (paper: 7.5)"
    )
    retain_weight: float = option(
        0.5, "weight of the retain loss that keeps everything else (paper's α: 0.5, range 0.1 to 1; formerly alpha)"
    )
    retain_target: str = option(
        "data",
        "what the retain loss regresses to: 'data' (the sampled noise, the paper's standard diffusion loss) or "
        "'frozen' (the original model's prediction for the same input: keeps retain predictions where they were; "
        "MiniCanvas preset)",
        advanced=True,
    )
    null_weight: float = option(
        0.0,
        "weight of a loss keeping the unconditional prediction ε(x_t, '') where the original model had it, on the "
        "step's forget and retain inputs; classifier-free guidance at scale w moves every prompt's output by (w − 1) "
        "times its drift (paper: 0; MiniCanvas preset: 1)",
        advanced=True,
    )
    misaligned_share: float = option(
        0.0,
        "share of the forget batch noised from the frozen model's own samples of the misaligned prompts instead "
        "of the concept's (each paired with its forget sample when pair_misaligned): the concept is also mapped to "
        "c' on the latents an erased model's trajectories pass through (paper: 0; MiniCanvas preset: 0.5)",
        advanced=True,
    )
    misaligned_prompts: list = option(
        MISALIGNED_PROMPTS,
        "prompts c' (one drawn per sample) whose predictions the concept is mapped to (the paper's random labels); "
        "not the concept",
    )
    pair_misaligned: bool = option(
        False,
        "pair misaligned_prompts with forget_prompts by position (sample of forget_prompts[i] -> misaligned_prompts"
        "[i], e.g. the same object in another style) instead of drawing one at random",
        advanced=True,
    )
    forget_images: str | None = option(None, "folder of images of the concept; default: the model generates them")
    num_forget: int = option(16, "forget samples generated from the concept prompt (when forget_images is not set)")
    forget_prompts: list | None = option(
        None,
        "prompts of the forget data, used in turn, each sample paired with its prompt in both losses (default: "
        "the concepts, in turn); e.g. the concept in every context it appears in",
    )
    retain_images: str | None = option(None, "folder of retain images, paired with retain_prompts in turn")
    retain_prompts: list = option(GENERIC_PROMPTS, "prompts of the retain data (generated from them by default)")
    num_retain: int | None = option(
        None,
        "retain samples generated from retain_prompts when retain_images is not set (default: one per retain "
        "prompt, at least 16)",
    )
    sample_steps: int = option(
        50, "sampler steps when the model generates forget/retain samples (paper: 50 DDIM; MiniCanvas preset: 20)"
    )
    sample_guidance: float = option(7.5, "CFG scale when the model generates forget/retain samples (paper: 7.5)")
    sample_batch_size: int = option(
        16,
        "samples per sampler call when the model generates its own data (speed only: results move by float rounding)",
        advanced=True,
    )

    def __post_init__(self):
        super().__post_init__()
        self.check_robust()
        if not 0.0 < self.mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {self.mask_ratio!r}.")
        if self.retain_weight < 0 or self.weight_decay:
            raise ValueError(
                "retain_weight must be >= 0 and weight_decay 0 (decay would move weights outside the mask)."
            )
        if self.null_weight < 0:
            raise ValueError(f"null_weight must be >= 0, got {self.null_weight!r}.")
        if not 0.0 <= self.misaligned_share <= 1.0:
            raise ValueError(f"misaligned_share must be in [0, 1], got {self.misaligned_share!r}.")
        check_choice("retain_target", self.retain_target, ("frozen", "data"))
        if min(self.num_forget, 1 if self.num_retain is None else self.num_retain, self.sample_steps) < 1 or (
            self.sample_batch_size < 1
        ):
            raise ValueError("num_forget, num_retain, sample_steps and sample_batch_size must be >= 1.")
        for name in ("misaligned_prompts", "retain_prompts", "forget_prompts"):
            value = getattr(self, name)
            if name == "forget_prompts" and value is None:
                continue
            if not value or not all(isinstance(p, str) for p in value):
                raise ValueError(f"{name} must be a non-empty list of prompts, got {value!r}.")
        if self.pair_misaligned and len(self.misaligned_prompts) != len(self.forget_prompts or [None]):
            raise ValueError(
                f"pair_misaligned needs one misaligned prompt per forget prompt: got {len(self.misaligned_prompts)} "
                f"misaligned for {len(self.forget_prompts or [None])} forget prompt(s) (without forget_prompts, the "
                "concept is the one forget prompt)."
            )


@register_method("salun")
class SalUn(TrainedMethod):
    """Saliency-masked unlearning; produces a sparse patch inside the mask. After ``erase``, ``self.mask`` holds it."""

    config_class = SalUnConfig
    summary = "SalUn: unlearn only the most salient weights (global top-k of |∇ forget loss|); sparse patch"

    def prepare(self, state: TrainState) -> None:
        cfg, handle, ctx, concepts = self.config, state.handle, state.ctx, state.concepts
        require_unet_targets(state)
        for concept in concepts:
            bad = [p for p in cfg.misaligned_prompts if concept.strip().lower() in p.lower()]
            if bad:
                raise ValueError(f"misaligned_prompts must not mention the concept {concept!r}: {bad}.")
        ctx["forget"], ctx["retain"], retain_prompts = self._data(state)
        if cfg.misaligned_share:  # sample i from the misaligned prompt forget sample i is mapped to (when paired)
            prompts = in_turn(cfg.misaligned_prompts, len(ctx["forget"]))
            ctx["misaligned_x0"] = generated_latents(
                handle, prompts, state.generator, cfg.sample_steps, cfg.sample_guidance, cfg.sample_batch_size
            )
        ctx["retain_emb"] = handle.encode_prompts(retain_prompts)
        ctx["forget_emb"] = handle.encode_prompts(self.forget_prompts(concepts, len(ctx["forget"])))
        ctx["null_emb"] = handle.encode_prompts([""])  # SalUn's ∅: the empty prompt, never the concept
        ctx["misaligned_emb"] = handle.encode_prompts(cfg.misaligned_prompts)
        ctx["mask"] = global_topk_mask(self.saliency(state), cfg.mask_ratio)
        self._state = weakref.ref(state)  # for load_extra_state; the method keeps no run's tensors alive after it
        if self._masked_training(state.base, list(state.params)):
            self._train_masked_entries(state)
        if cfg.robust_every:  # the attacker appends its tokens to each forget sample's prompt
            prompts = self.forget_prompts(concepts, len(ctx["forget"]))
            ctx["robust"] = AdversarialPrompts(
                handle, cfg, cfg.seed, prompts, ctx["forget"], keep=retain_prompts, concepts=concepts
            )
        self.mask, self._ctx = ctx["mask"], ctx
        kept = sum(int(m.sum()) for m in self.mask.values())
        logger.info("salun: mask keeps %d of %d candidate weights", kept, sum(m.numel() for m in self.mask.values()))

    def trainable_copies(self, base: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
        """Training the mask's entries only, the saliency needs no copy of float32 weights: it takes its gradient
        on leaves that share the caller's storage (nothing writes to them; the optimizer built on them never steps
        and is replaced with the values' own). Weights of other dtypes are copied to float32, as the loop does."""
        if not self._masked_training(base, names):
            return super().trainable_copies(base, names)
        return {n: base[n].detach().float().requires_grad_(True) for n in names}

    def _masked_training(self, base: dict[str, torch.Tensor], names: list[str]) -> bool:
        """Whether to train the mask's entries only (``masked_training``; never with reference-style full
        optimizer states): 'auto' where the candidates are large enough for a full copy's memory to matter."""
        mode = self.run.masked_training
        if self.run.optimizer_states == "full" or mode == "off":
            return False
        return mode == "on" or sum(base[n].numel() for n in names) >= MASKED_TRAINING_MIN_ENTRIES

    def _train_masked_entries(self, state: TrainState) -> None:
        """From here on the trained tensors are the values of the mask's entries (one 1-D leaf per tensor, built
        into full weights one submodule at a time by :class:`MaskedWeights`), not full copies: the same updates,
        with values, gradients and AdamW's moments for the masked entries only. Each full copy is freed as its
        values are taken."""
        mask, values = state.ctx["mask"], {}
        state.optimizer = None  # it references the full copies
        for key in list(state.params):
            values[key] = state.params.pop(key).detach()[mask[key]].requires_grad_(True)
        self._use_values(state, values)
        state.ctx["_check_gradients"] = True

    def _use_values(self, state: TrainState, values: dict[str, torch.Tensor]) -> None:
        """Train ``values`` (the entries of ``state.ctx['mask']``) with a fresh AdamW, as the loop would."""
        state.params = values
        state.weights = MaskedWeights(state.base, state.ctx["mask"], values)
        state.optimizer = torch.optim.AdamW(
            list(values.values()),
            lr=self.config.lr,
            weight_decay=self.config.weight_decay,
            fused=state.device.type == "cuda",
        )

    def forget_prompts(self, concepts: list[str], n: int) -> list[str]:
        """The prompt of each of the ``n`` forget samples: ``forget_prompts`` in turn, else the concepts in turn."""
        return in_turn(self.config.forget_prompts or concepts, n)

    def _data(self, state: TrainState) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Forget and retain x₀ latents (folders first, so a bad folder fails before any sampling)."""
        cfg, handle, gen, b = self.config, state.handle, state.generator, self.config.batch_size
        forget = folder_latents(handle, cfg.forget_images, gen, b) if cfg.forget_images else None
        retain = folder_latents(handle, cfg.retain_images, gen, b) if cfg.retain_images else None
        n_retain = len(retain) if retain is not None else cfg.num_retain or max(16, len(cfg.retain_prompts))
        retain_prompts = in_turn(cfg.retain_prompts, n_retain)
        if forget is None:
            n = cfg.num_forget if cfg.forget_prompts else max(cfg.num_forget, len(state.concepts))  # each concept
            prompts = self.forget_prompts(state.concepts, n)
            forget = generated_latents(
                handle, prompts, gen, cfg.sample_steps, cfg.sample_guidance, cfg.sample_batch_size
            )
        if retain is None:
            retain = generated_latents(
                handle, retain_prompts, gen, cfg.sample_steps, cfg.sample_guidance, cfg.sample_batch_size
            )
        logger.info("salun: %d forget and %d retain samples", len(forget), len(retain))
        return forget, retain, retain_prompts

    def saliency(self, state: TrainState) -> dict[str, torch.Tensor]:
        """|∇_θ L_f| at the original weights, L_f the CFG-combined forget loss averaged over the forget set.

        The batches' gradients accumulate in place in the trained copies' ``.grad`` (one buffer per tensor, no
        second copy of the gradient), and their magnitudes are taken in place too: at Stable Diffusion's size the
        saliency costs one UNet of float32 beyond the weights, not three."""
        cfg, handle, ctx = self.config, state.handle, state.ctx
        x0_all = ctx["forget"]
        for p in state.params.values():
            p.grad = None
        for i in range(0, len(x0_all), cfg.batch_size):
            x0 = x0_all[i : i + cfg.batch_size]
            n = x0.shape[0]
            x_t, t, target = noisy(handle, x0, [state.generator] * n)
            eps_c = handle.predict_noise(x_t, t, ctx["forget_emb"][i : i + n], params=state.trained)
            eps_u = handle.predict_noise(x_t, t, ctx["null_emb"].expand(n, -1, -1), params=state.trained)
            loss = saliency_loss(target, eps_c, eps_u, cfg.saliency_guidance) * (n / len(x0_all))
            loss.backward()
        scores = {}
        for key, p in state.params.items():
            scores[key] = p.grad.abs_() if p.grad is not None else torch.zeros_like(p)
            if p.grad is None:  # not in the forget loss's graph: no gradient is expected in training either
                state.ctx.setdefault("_no_saliency", set()).add(key)
            p.grad = None
        return scores

    def training_step(self, state: TrainState) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, handle, ctx = self.config, state.handle, state.ctx
        robust, logs = ctx.get("robust"), {}
        if robust is not None and robust.due(state.step):
            logs.update(robust.refresh(state, cfg.batch_size))
        gens = state.sample_generators(cfg.batch_size)  # this process's share of the batch
        f_idx = pick(len(ctx["forget"]), gens)
        x0 = ctx["forget"][f_idx]
        if cfg.misaligned_share:  # some inputs from where the erased model's trajectories go: c' samples
            share = torch.cat([torch.rand(1, generator=g) < cfg.misaligned_share for g in gens]).to(x0.device)
            x0 = torch.where(share[:, None, None, None], ctx["misaligned_x0"][f_idx], x0)
        f_t, f_step, _ = noisy(handle, x0, gens)
        misaligned, forget_emb = ctx["misaligned_emb"][self.misaligned_index(f_idx, gens)], ctx["forget_emb"][f_idx]
        with torch.no_grad():
            f_target = self.misaligned_target(state, f_t, f_step, misaligned, forget_emb)
        idx = pick(len(ctx["retain"]), gens)
        r_t, r_step, r_target = noisy(handle, ctx["retain"][idx], gens)
        inputs = [(f_t, f_step, forget_emb), (r_t, r_step, ctx["retain_emb"][idx])]
        if cfg.null_weight:  # ε(x_t, '') on the same forget and retain inputs
            both_t = torch.cat([f_t, r_t])
            inputs.append((both_t, torch.cat([f_step, r_step]), ctx["null_emb"].expand(len(both_t), -1, -1)))
        # fixed targets from the original weights in one forward, then every trained prediction in one forward:
        # at small batches per-call overhead dominates on a CPU
        fixed = inputs[1 if cfg.retain_target == "frozen" else 2 :]
        with torch.no_grad():
            targets = batched_predict(handle, fixed)
        if cfg.retain_target == "frozen":
            r_target = targets.pop(0)
        if robust is not None:  # the attacked forget prompts, mapped to c' like the plain ones
            inputs.append((f_t, f_step, robust.embeddings[f_idx]))
        preds = batched_predict(handle, inputs, state.trained)
        forget, retain = F.mse_loss(preds[0], f_target), F.mse_loss(preds[1], r_target)
        loss = forget + cfg.retain_weight * retain
        logs.update(forget=float(forget.detach()), retain=float(retain.detach()))
        if cfg.null_weight:
            null = F.mse_loss(preds[2], targets[-1])
            loss, logs["null"] = loss + cfg.null_weight * null, float(null.detach())
        if robust is not None:
            attacked = F.mse_loss(preds[-1], f_target)
            loss, logs["attacked"] = loss + cfg.robust_weight * attacked, float(attacked.detach())
        return loss, logs

    def misaligned_target(self, state: TrainState, x_t, t, misaligned, forget_emb) -> torch.Tensor:
        """ε(x_t, c') of the weights being trained (the paper's stop-gradient target; called under no_grad)."""
        return state.handle.predict_noise(x_t, t, misaligned, params=state.trained).float()

    def misaligned_index(self, forget_idx: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """Which misaligned prompt each forget sample is mapped to: its partner (forget sample i was made from
        forget prompt i mod len) when ``pair_misaligned``, else one drawn at random."""
        n = len(self._ctx["misaligned_emb"])
        return forget_idx % n if self.config.pair_misaligned else pick(n, generators)

    def transform_gradients(self, state: TrainState) -> None:
        if state.weights is not None:  # the values are the mask's entries: nothing outside it has a gradient
            if state.ctx.pop("_check_gradients", False):
                self._check_gradients(state)
            return
        for key, p in state.params.items():
            if p.grad is not None:
                p.grad.mul_(state.ctx["mask"][key])

    @staticmethod
    def _check_gradients(state: TrainState) -> None:
        """Every trained tensor with masked entries must get a gradient in the first step: a weight its submodule
        does not read inside its own forward would be left at the base value without an error."""
        unused = state.ctx.get("_no_saliency", set())
        missing = [k for k, v in state.params.items() if v.numel() and v.grad is None and k not in unused]
        if missing:
            raise RuntimeError(
                f"salun: {len(missing)} trained tensor(s) got no gradient (e.g. {missing[0]}): the model reads them "
                "outside their own submodule's forward; run with masked_training='off'."
            )

    def make_patch(self, state: TrainState) -> dict:
        """Sparse deltas: only masked entries that changed."""
        deltas = {}
        for key, p in state.params.items():
            trained = state.weights.full_values(key) if state.weights is not None else p.detach().float()
            diff = (trained - state.base[key].detach().float()).cpu()
            delta = SparseDelta.from_dense(diff, state.ctx["mask"][key].cpu())
            if delta.indices.numel():
                deltas[key] = delta
        return deltas

    def extra_state(self) -> dict[str, torch.Tensor]:
        """The mask and the data it came from, so a resumed run continues with exactly the same ones."""
        ctx = self._ctx
        data = {k: ctx[k] for k in ("forget", "retain", "misaligned_x0") if k in ctx}
        robust = ctx["robust"].state() if "robust" in ctx else {}
        return {**data, **robust, **{f"mask::{k}": m for k, m in ctx["mask"].items()}}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        ctx = self._ctx
        device = ctx["forget"].device
        for key in ("forget", "retain", "misaligned_x0"):
            if key in tensors:
                ctx[key] = tensors[key].to(device)
        for key in ctx["mask"]:
            ctx["mask"][key] = tensors[f"mask::{key}"].to(device).bool()
        state = self._state()
        if state.weights is not None:  # the values follow the saved mask (the checkpoint's values are loaded next)
            mask = ctx["mask"]
            self._use_values(
                state, {k: state.base[k].detach().float()[mask[k]].requires_grad_(True) for k in state.params}
            )
        if "robust" in ctx:
            ctx["robust"].x0 = ctx["forget"]
            ctx["robust"].load_state(tensors)
