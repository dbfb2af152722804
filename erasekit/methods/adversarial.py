"""Robust unlearning with adversarial prompts, in the manner of AdvUnlearn (Zhang et al., "Defensive Unlearning with
Adversarial Training for Robust Concept Erasure in Diffusion Models", NeurIPS 2024, arXiv 2405.15234).

A plain erasure maps the concept's prompts away, but a few optimised tokens often bring the concept back (the
``prompt`` and ``inversion`` attacks of :mod:`erasekit.attacks` measure this). Robust training is a game between the
two: every ``robust_every`` steps an inner attack optimises ``robust_tokens`` token embeddings appended to the forget
prompts so that the model *being trained* denoises the concept's own samples as well as it can (the standard
diffusion loss on them, minimised over the tokens only), and from then on the method's forget loss is applied to
the attacked prompts too, with weight ``robust_weight``. The tokens are warm-started from the previous round, so
the attacker keeps up with the model as it changes.

AdvUnlearn's attacker is unconstrained, and so is this one by default. ``robust_avoid_kept`` forbids it what the
erasure keeps: every word of the retain prompts except the concept's own (on a world, the other classes' names and
the styles an object is drawn in). Discrete tokens never pick those words; soft tokens carry no component along
their embeddings (each measured from the table's mean, which every token shares). Left free, the attacker finds
them: erasing Neon from MiniCanvas, a discrete attacker's best words were "blueprint", "watercolor" and "pop", and
erasing fish a soft one drifted to "pixel", so SalUn's forget loss reached those classes too. Forbidding them is not
always enough: SalUn with a Neon attacker restricted to words like "getaway" still keeps only 61.5 % of the other
styles' images (docs/guides/robustness.md has the measurements).

The inner attack runs the same draws on every process (its batch comes from the step's shared generators), so data
parallelism and resume leave it unchanged; its tokens are checkpointed with the method's state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import check_choice, option
from .diffusion_data import noisy, pick
from .loop import TrainState, mix_seeds

logger = logging.getLogger(__name__)

ROBUST_MODES = ("soft", "discrete")
_STREAM = 7919  # keeps the attack's draws apart from the step's own


@dataclass
class RobustOptions:
    """The adversarial-training options SalUn and DoCo share (mixed into their configs)."""

    robust_every: int = option(
        0,
        "robust training (AdvUnlearn, arXiv 2405.15234): every this many steps an inner attack refreshes adversarial "
        "tokens appended to the forget prompts, and the forget loss is applied to the attacked prompts too; 0 = off "
        "(the paper method). AdvUnlearn attacks at every step; each refresh costs robust_attack_steps forward and "
        "backward passes",
    )
    robust_tokens: int = option(3, "adversarial tokens appended to every forget prompt (robust training)")
    robust_attack_steps: int = option(
        10, "inner attack steps per refresh: Adam steps on the tokens' input embeddings (robust training)"
    )
    robust_lr: float = option(
        0.5, "inner attack learning rate, in units of the token embedding table's standard deviation"
    )
    robust_mode: str = option(
        "soft",
        "'soft': the tokens stay continuous embeddings (AdvUnlearn's default, the stronger attacker); 'discrete': "
        "projected on whole vocabulary words after every step, a prompt anyone could type",
    )
    robust_weight: float = option(1.0, "weight of the forget loss on the attacked prompts, relative to the plain one")
    robust_avoid_kept: bool = option(
        False,
        "forbid the inner attacker what the erasure keeps: the retain prompts' words except the concept's own "
        "(discrete tokens never pick them; soft tokens carry no component along their embeddings). AdvUnlearn's "
        "attacker is unconstrained (false); left free, it can pick the kept classes' names, and the forget loss then "
        "erases them too",
    )

    def check_robust(self) -> None:
        check_choice("robust_mode", self.robust_mode, ROBUST_MODES)
        if self.robust_every < 0:
            raise ValueError(f"robust_every must be >= 0 (0 turns robust training off), got {self.robust_every!r}.")
        if self.robust_every and (self.robust_tokens < 1 or self.robust_attack_steps < 1):
            raise ValueError("robust_tokens and robust_attack_steps must be >= 1 when robust_every is set.")
        if not self.robust_lr > 0 or self.robust_weight < 0:
            raise ValueError("robust_lr must be > 0 and robust_weight >= 0.")


class AdversarialPrompts:
    """The attacker of robust training: suffix tokens for a fixed list of forget prompts, refreshed against the
    weights being trained.

    ``embeddings`` (one row per forget sample, detached) is what the forget loss reads between refreshes. ``keep``
    (the retain prompts) and ``concepts`` (the erased concepts' own text) are required together: with
    ``robust_avoid_kept``, the attacker is forbidden every word of ``keep`` but those of ``concepts``, and a caller
    that left ``concepts`` out would forbid the concept's own words.
    """

    def __init__(
        self,
        handle,
        cfg: RobustOptions,
        seed: int,
        prompts: list[str],
        x0: torch.Tensor,
        *,
        keep: list[str],
        concepts: list[str],
    ):
        from ..attacks.tokens import (
            embedding_scale,
            placeholders,
            require_token_injection,
            single_token_words,
            word_mask,
        )

        require_token_injection(handle)
        self.handle, self.cfg, self.seed, self.x0 = handle, cfg, seed, x0
        table = handle.token_embedding_table().float()
        self.table = table.to(handle.device)
        discrete = cfg.robust_mode == "discrete"
        self.words = single_token_words(handle) if discrete else {}
        self.allowed = word_mask(self.words, len(table)) if discrete else None
        self.kept = kept_token_ids(handle, keep, concepts) if cfg.robust_avoid_kept else []
        if self.allowed is not None:
            self.allowed[self.kept] = False
        self._avoid = _avoided_directions(self.table, self.kept) if not discrete and self.kept else None
        if self.kept:
            logger.info(
                "robust training: the attacker avoids %d words of what the erasure keeps%s",
                len(self.kept),
                ""
                if self._avoid is None
                else f" ({self._avoid[1].shape[1]} of {table.shape[1]} embedding directions)",
            )
        slots = placeholders(handle, cfg.robust_tokens, " ".join(prompts))  # words no forget prompt uses
        self.slots = [tid for tid, _ in slots]
        suffix = " ".join(word for _, word in slots)
        self.texts = [f"{p} {suffix}" for p in prompts]  # one per forget sample
        self.scale = embedding_scale(table)
        init = torch.Generator().manual_seed(mix_seeds(seed, _STREAM))
        start = torch.randint(0, len(table), (len(self.slots),), generator=init)
        self.vectors = self._keep_away(self.table[start].clone())
        self.embeddings: torch.Tensor | None = None

    def _keep_away(self, vectors: torch.Tensor) -> torch.Tensor:
        """Soft tokens without their components along the kept words' directions (unchanged otherwise)."""
        if self._avoid is None:
            return vectors
        mean, basis = self._avoid
        centred = vectors - mean
        return vectors - (centred @ basis) @ basis.T

    def _used(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.allowed is None:
            return vectors
        from ..ops.vocab import project_straight_through

        return project_straight_through(vectors, self.table, self.allowed)[0]

    def encode(self, vectors: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The conditioning of the forget prompts (``rows`` of them) with the suffix tokens read as ``vectors``."""
        texts = self.texts if rows is None else [self.texts[int(i)] for i in rows]
        used = self._used(vectors)
        with self.handle.injected_tokens({tid: used[j] for j, tid in enumerate(self.slots)}):
            return self.handle.encode_prompts(texts)

    def due(self, step: int) -> bool:
        return bool(self.cfg.robust_every) and (self.embeddings is None or step % self.cfg.robust_every == 0)

    def refresh(self, state: TrainState, batch_size: int) -> dict[str, float]:
        """Optimise the tokens against the weights being trained (``state.trained``): minimise the diffusion loss on
        the concept's samples under the attacked prompts (the model regenerates the concept as well as these tokens
        let it). The attack's gradients reach the tokens only; the trained weights' ``.grad`` is untouched."""
        cfg, handle = self.cfg, self.handle
        vectors = self.vectors.clone().requires_grad_(True)
        opt = torch.optim.Adam([vectors], lr=cfg.robust_lr * self.scale)
        first = last = None
        for j in range(cfg.robust_attack_steps):
            gens = [
                torch.Generator().manual_seed(mix_seeds(self.seed, state.step, _STREAM, j, i))
                for i in range(batch_size)
            ]
            rows = pick(len(self.x0), gens)
            x_t, t, target = noisy(handle, self.x0[rows], gens)
            cond = self.encode(vectors, rows)
            loss = F.mse_loss(handle.predict_noise(x_t, t, cond, params=state.trained).float(), target)
            (grad,) = torch.autograd.grad(loss, [vectors])
            opt.zero_grad(set_to_none=True)
            vectors.grad = grad
            opt.step()
            with torch.no_grad():
                vectors.copy_(self._keep_away(vectors))
            value = float(loss.detach())
            first, last = (value if first is None else first), value
        self.vectors = vectors.detach()
        with torch.no_grad():
            self.embeddings = self.encode(self.vectors).detach()
        if logger.isEnabledFor(logging.INFO):  # the words a user could type that bring the concept back
            logger.info(
                "robust training, step %d: the attacker's %s %r (loss %.4f -> %.4f)",
                state.step,
                "words are" if self.allowed is not None else "tokens are nearest to the words",
                self.nearest_words(),
                first,
                last,
            )
        return {"attack_start": float(first), "attack_end": float(last)}

    def nearest_words(self) -> str:
        """The vocabulary words the tokens read as (discrete) or lie nearest to (soft)."""
        from ..attacks.tokens import single_token_words, word_mask
        from ..ops.vocab import nearest_tokens

        if not self.words:
            self.words = single_token_words(self.handle)
        allowed = self.allowed if self.allowed is not None else word_mask(self.words, len(self.table))
        ids = nearest_tokens(self.vectors, self.table, allowed).tolist()
        return " ".join(self.words.get(int(i), "?") for i in ids)

    def state(self) -> dict[str, torch.Tensor]:
        """The tokens once refreshed (before the first refresh there is nothing to keep: a resumed run refreshes
        at the same step as an uninterrupted one)."""
        return {} if self.embeddings is None else {"robust::vectors": self.vectors.cpu()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if "robust::vectors" in tensors:
            self.vectors = tensors["robust::vectors"].to(self.table.device).float()
            with torch.no_grad():
                self.embeddings = self.encode(self.vectors).detach()


def kept_token_ids(handle, keep, concepts) -> list[int]:
    """The token ids of the ``keep`` prompts that no text of ``concepts`` uses: every word of what an erasure keeps,
    the contexts it keeps them in included, except the concept's own words."""
    used = {i for p in concepts for i in handle.token_ids(p)}
    return sorted({i for p in keep for i in handle.token_ids(p)} - used)


def _avoided_directions(table: torch.Tensor, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, basis)``: the table's mean row and an orthonormal basis ``[D, k]`` of the rows ``ids`` measured from
    it (at most D - 1 directions, so a token keeps room to move)."""
    mean = table.mean(0)
    u, sv, _ = torch.linalg.svd((table[ids] - mean).T, full_matrices=False)  # u: [D, k]
    rank = int((sv > 1e-6 * sv.max()).sum()) if len(sv) else 0
    return mean, u[:, : min(rank, table.shape[1] - 1)]
