"""UCE: Unified Concept Editing (Gandikota et al., "Unified Concept Editing in Diffusion Models", WACV 2024,
arXiv 2308.14761). A baseline.

A closed-form edit of every cross-attention key/value projection W (``xattn_kv``), per layer
(``erasekit.ops.uce_closed_form``): W = (λW₀ + Σ_e v*_e c_eᵀ + s·Σ_p W₀c_p c_pᵀ)(λI + Σ_e c_e c_eᵀ + s·Σ_p c_p c_pᵀ)⁻¹.

- Keys c are the text encoder's output embeddings of a prompt's *non-padding* tokens after BOS: its word tokens
  and EOS (BOS is left out: under CLIP's causal mask its embedding is the same for every prompt, so it carries no
  concept). Every erased concept (the main one plus ``erase``) contributes one key per such token.
- Values v*_e = W₀ c_guide: the guide prompt's embeddings, aligned from the end (EOS ↔ EOS, last word ↔ last
  word, ...); concept tokens that run past the start of a shorter guide take the guide's BOS embedding (the
  "nothing" every prompt starts with). The guide is ``guide``, else the ``anchor`` argument, else "" (the
  unconditional prompt); the paper uses "art" for artistic styles and "" for objects.
- Preserved concepts (``preserve``, plus ``preserve_random`` vocabulary words drawn with the seed) keep W₀ c_p.

Deliberate departures from the reference code: keys are exactly the concept's word tokens and EOS (the reference
takes the last word, EOS and the padding after it); the solve is float64 ``torch.linalg.solve`` rather than an
explicit inverse; the seed only matters when ``preserve_random`` > 0. UCE has no training loop: ``steps``, ``lr``,
``batch_size``, the optimiser and checkpoint options are accepted (shared by every method) and ignored.
"""

from __future__ import annotations

import datetime
import logging
import re
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from .. import __version__
from ..models.base import component_fingerprint
from ..ops import uce_closed_form
from ..patch import DenseDelta, ErasurePatch, resolve_targets
from .base import EraseMethod, register_method
from .config import MethodConfig, option

logger = logging.getLogger(__name__)

_KV = re.compile(r"unet\..*\.attn2\.to_[kv]\.weight")  # the parameters UCE's closed form applies to


@dataclass
class UCEConfig(MethodConfig):
    steps: int = option(1, "ignored: UCE is one closed-form solve (the shared loop options do not apply)")
    target: Any = option("xattn_kv", "linear maps of the text embeddings to edit (cross-attention to_k / to_v)")
    erase: list = option([], "further concepts erased with the main one, all mapped to the guide")
    preserve: list = option([], "concepts whose keys/values must stay unchanged (e.g. other artists' names)")
    guide: str | None = option(
        None, "what erased concepts become: default the anchor argument if given, else '' (paper: 'art' for styles)"
    )
    lam: float = option(0.1, "λ > 0: pull towards the original weights (paper default 0.1)")
    preserve_scale: float = option(1.0, "weight s of the preservation terms")
    preserve_random: int = option(0, "also preserve this many random vocabulary words drawn with the seed (0: off)")

    def __post_init__(self):
        super().__post_init__()
        if not self.lam > 0 or self.preserve_scale < 0 or self.preserve_random < 0:
            raise ValueError("lam must be > 0, preserve_scale and preserve_random >= 0.")
        for name in ("erase", "preserve"):
            if not all(isinstance(p, str) and p.strip() for p in getattr(self, name)):
                raise ValueError(f"{name} must be a list of non-empty prompts, got {getattr(self, name)!r}.")


def aligned_rows(n_concept: int, n_guide: int) -> list[int]:
    """Guide positions for a concept's key rows (its n words then EOS): aligned from the end, clamped to BOS (0).

    Example:
        >>> aligned_rows(2, 0)  # two words + EOS against "" (BOS, EOS): words -> BOS, EOS -> EOS
        [0, 0, 1]
    """
    k = n_concept + 1
    return [max(0, n_guide + 1 - (k - 1 - i)) for i in range(k)]


def random_words(tokenizer, n: int, generator: torch.Generator, exclude: set[str]) -> list[str]:
    """``n`` whole-word vocabulary entries (alphabetic, ≥ 3 letters, not in ``exclude``) drawn with ``generator``."""
    words = sorted(
        t[:-4] for t in tokenizer.get_vocab() if t.endswith("</w>") and t[:-4].isascii() and t[:-4].isalpha()
    )
    words = [w for w in words if len(w) >= 3 and w.lower() not in exclude]
    return [words[i] for i in torch.randperm(len(words), generator=generator)[:n].tolist()]


@register_method("uce")
class UCE(EraseMethod):
    """Closed-form key/value edit; produces a dense patch on ``xattn_kv``."""

    config_class = UCEConfig
    summary = "UCE baseline: closed-form edit of cross-attention keys/values (seconds, no training)"

    def seed_matters(self) -> bool:
        return self.config.preserve_random > 0

    def default_target(self) -> Any:
        return self.config.target

    def erase(self, model, concept: str, anchor: str | None = None, callbacks=()) -> ErasurePatch:
        from ..models import load_model

        cfg = self.config
        handle = load_model(model)
        if handle.kind not in self.kinds:
            raise ValueError(f"uce works on {self.kinds} models, not {handle.kind}.")
        if callbacks:
            logger.warning("uce has no training loop; callbacks are ignored")
        erased = [concept, *cfg.erase]
        ids = {c: handle.check_concept(c) for c in erased + list(cfg.preserve)}
        guide = cfg.guide if cfg.guide is not None else (anchor or "")
        params = handle.named_parameters()
        names = self._targets(handle, params)
        started = time.perf_counter()
        erase_keys, erase_guides = self._erase_rows(handle, erased, ids, guide)
        preserved = list(cfg.preserve)
        if cfg.preserve_random:
            exclude = {w.lower() for text in erased + [guide] for w in text.split()}
            preserved += random_words(handle.pipe.tokenizer, cfg.preserve_random, self._generator(), exclude)
        preserve_keys = self._keys(handle, preserved) if preserved else None
        deltas = {}
        for name in names:
            w0 = params[name].detach().double().cpu()
            w = uce_closed_form(w0, erase_keys, erase_guides @ w0.T, preserve_keys, None, cfg.lam, cfg.preserve_scale)
            diff = (w - w0).float()
            if torch.count_nonzero(diff):
                deltas[name] = DenseDelta(diff)
        if not deltas:
            raise RuntimeError("uce left every targeted weight unchanged (the concept already maps to the guide).")
        logger.info(
            "uce: %d keys erased, %d preserved, %d weights edited", len(erase_keys), len(preserved), len(deltas)
        )
        return ErasurePatch(deltas, self._metadata(handle, concept, guide, deltas, time.perf_counter() - started))

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.config.seed)

    def _targets(self, handle, params: dict) -> list[str]:
        names = resolve_targets(self.default_target(), params, handle.kind)
        dim = int(handle.pipe.text_encoder.config.hidden_size)
        bad = [n for n in names if not _KV.fullmatch(n) or params[n].ndim != 2 or params[n].shape[1] != dim]
        if bad:
            raise ValueError(
                f"UCE edits only the cross-attention to_k/to_v weights, linear maps of the {dim}-d text embeddings; "
                f"{bad[0]} (shape {tuple(params[bad[0]].shape)}) is not one. Use target='xattn_kv' or a subset of it."
            )
        return names

    @staticmethod
    def _rows(emb: torch.Tensor, n_tokens: int) -> torch.Tensor:
        return emb[1 : n_tokens + 2].double().cpu()  # word tokens and EOS (BOS left out)

    def _keys(self, handle, prompts: list[str]) -> torch.Tensor:
        tok = handle.pipe.tokenizer
        emb = handle.encode_prompts(prompts)
        return torch.cat(
            [self._rows(e, len(tok(p, add_special_tokens=False).input_ids)) for e, p in zip(emb, prompts, strict=True)]
        )

    def _erase_rows(self, handle, erased: list[str], ids: dict, guide: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys of every erased concept and, row for row, the guide embeddings their values are taken from."""
        n_guide = len(handle.pipe.tokenizer(guide, add_special_tokens=False).input_ids)
        if n_guide + 2 > handle.pipe.tokenizer.model_max_length:
            raise ValueError(f"The guide {guide!r} is longer than the text encoder reads; shorten it.")
        emb = handle.encode_prompts(erased + [guide]).double().cpu()
        guide_emb = emb[-1]
        keys = [self._rows(e, len(ids[c])) for e, c in zip(emb[:-1], erased, strict=True)]
        guides = [guide_emb[aligned_rows(len(ids[c]), n_guide)] for c in erased]
        return torch.cat(keys), torch.cat(guides)

    def _metadata(self, handle, concept: str, guide: str, deltas: dict, seconds: float) -> dict:
        components = handle.components
        touched = sorted({k.split(".", 1)[0] for k in deltas})
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return {
            "method": self.name,
            "concept": concept,
            "anchor": guide,
            "config": self.config.to_dict(),
            "base_model": getattr(handle, "spec", None),
            "base_fingerprint": {c: component_fingerprint(components[c]) for c in touched},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "erasekit_version": __version__,
            "stats": {
                "erase_seconds": round(seconds, 3),
                "steps_run": 1,
                "device": str(handle.device),
                "peak_gpu_memory_bytes": None,
                "peak_process_rss_bytes": rss,
                "torch": torch.__version__,
            },
        }
