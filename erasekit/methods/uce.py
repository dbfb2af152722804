"""UCE: Unified Concept Editing (Gandikota et al., "Unified Concept Editing in Diffusion Models", WACV 2024,
arXiv 2308.14761). A baseline.

A closed-form edit of every cross-attention key/value projection W (``xattn_kv``), per layer
(``erasekit.ops.uce_closed_form``): W = (λW₀ + Σ_e v*_e c_eᵀ + s·Σ_p W₀c_p c_pᵀ)(λI + Σ_e c_e c_eᵀ + s·Σ_p c_p c_pᵀ)⁻¹.
Keys c are text-encoder output embeddings; an erased prompt's value v*_e = W₀ g is the original projection of its
guide prompt's embedding g at the paired position; preserved prompts keep W₀ c_p.

Which positions are keys (``keys``) follows one of the authors' two releases, or erasekit's earlier choice:

- ``last_word`` (default; the authors' current code, ``trainscripts/uce_sd_erase.py``, April 2025 on): one key per
  prompt, the embedding at its last word token (position = attention-mask sum − 2, i.e. BOS for the empty prompt),
  paired with the guide's last word; each preserved prompt also gives its last word only. Under CLIP's causal mask
  that embedding has seen the whole prompt, so for "Ink style" the key is "style" read after "Ink".
- ``from_last_word`` (the 2023 release, ``train-scripts/train_erase.py``): the last word, EOS and all padding after
  it, paired position by position with the guide from the guide's last word (both runs cut to the same length);
  preserved prompts give every position (BOS and padding included) and the empty prompt is always preserved.
- ``words_eos`` (erasekit before): every word token and EOS (BOS carries no concept under the causal mask), the
  guide aligned from the end and clamped to its BOS; preserved prompts give their words and EOS.

``expand_prompts`` adds the authors' five phrasings per erased concept and guide (their ``--expand_prompts`` with
``--concept_type art`` or ``object``; the 2023 release expanded the erased concept only). The current code's other
defaults are λ = 0.5, erase and preserve scales 1, and guide "art" for art, "" for objects; the 2023 release also
used λ = 0.5 and defaulted the preserve scale to max(0.1, 1/number of preserved prompts).

Departures from the authors' code: the solve is float64 ``torch.linalg.solve`` (theirs inverts in float32; the
edits agree within float32 round-off, docs/parity.md); one guide serves every erased concept (theirs takes one per
concept); there is no erase scale (theirs defaults to 1); ``preserve_random`` is erasekit's and the seed only
matters when it is > 0. UCE has no training loop, so its config has no training options (steps, lr, batch size,
weight decay, clipping): giving one is an error. Several concepts at once: a list of concepts (or ``erase``) maps
every one of them to the guide in the same solve.
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
from ..ops.uce import UCE_KEYS, expand_prompt_pairs, uce_erase_positions, uce_preserve_positions
from ..ops.uce import aligned_rows as aligned_rows  # re-exported: older imports of it from here keep working
from ..patch import DenseDelta, ErasurePatch, resolve_targets
from .base import EraseMethod, register_method
from .config import MethodConfig, check_choice, option
from .loop import concept_list

logger = logging.getLogger(__name__)

_KV = re.compile(r"unet\..*\.attn2\.to_[kv]\.weight")  # the parameters UCE's closed form applies to


@dataclass
class UCEConfig(MethodConfig):
    target: Any = option("xattn_kv", "linear maps of the text embeddings to edit (cross-attention to_k / to_v)")
    erase: list = option([], "further concepts erased with the given ones, all mapped to the guide")
    preserve: list = option([], "concepts whose keys/values must stay unchanged (e.g. other artists' names)")
    guide: str | None = option(
        None,
        "what erased concepts become: default the anchor argument if given, else '' "
        "(the authors' code: 'art' for art styles, '' for objects)",
    )
    keys: str = option(
        "last_word",
        "token embeddings used as keys: 'last_word' (one per prompt, its last word; the authors' current code, "
        "2025), 'from_last_word' (last word, EOS and padding; preserved prompts at every position plus the empty "
        "prompt; the 2023 release), 'words_eos' (every word and EOS; erasekit's earlier choice)",
    )
    expand_prompts: str = option(
        "none",
        "also erase the concept and map its guide in five more phrasings: 'style' ('painting by', 'art by', "
        "'artwork by', 'picture by', 'style of' + concept) or 'object' ('image of', 'photo of', 'portrait of', "
        "'picture of', 'painting of' + concept); the authors' current code's --expand_prompts, off by default there",
    )
    lam: float = option(0.5, "λ > 0: pull towards the original weights (the authors' code, 2023 and current: 0.5)")
    preserve_scale: float = option(
        1.0, "weight s of the preservation terms (current code: 1; 2023 release: max(0.1, 1/number preserved))"
    )
    preserve_random: int = option(0, "also preserve this many random vocabulary words drawn with the seed (0: off)")

    def __post_init__(self):
        super().__post_init__()
        check_choice("keys", self.keys, UCE_KEYS)
        check_choice("expand_prompts", self.expand_prompts, ("none", "style", "object"))
        if not self.lam > 0 or self.preserve_scale < 0 or self.preserve_random < 0:
            raise ValueError("lam must be > 0, preserve_scale and preserve_random >= 0.")
        for name in ("erase", "preserve"):
            if not all(isinstance(p, str) and p.strip() for p in getattr(self, name)):
                raise ValueError(f"{name} must be a list of non-empty prompts, got {getattr(self, name)!r}.")


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

    def erase(self, model, concept: str | list[str], anchor: str | None = None, callbacks=()) -> ErasurePatch:
        from ..models import load_model

        cfg = self.config
        handle = load_model(model)
        if handle.kind not in self.kinds:
            raise ValueError(f"uce works on {self.kinds} models, not {handle.kind}.")
        if getattr(handle, "denoiser_name", "unet") != "unet":
            raise ValueError(
                f"uce edits cross-attention key/value projections, which {type(handle.pipe).__name__} has none of: "
                "its transformer attends jointly to text and image tokens, so a text key depends on the image and the "
                "timestep and no closed form maps a prompt to it. Use esd, salun or doco."
            )
        if callbacks:
            logger.warning("uce has no training loop; callbacks are ignored")
        concepts = concept_list(concept)
        erased = [*concepts, *cfg.erase]
        for c in erased + list(cfg.preserve):
            handle.check_concept(c)
        guide = cfg.guide if cfg.guide is not None else (anchor or "")
        if len(handle.pipe.tokenizer(guide, add_special_tokens=False).input_ids) + 2 > self._length(handle):
            raise ValueError(f"The guide {guide!r} is longer than the text encoder reads; shorten it.")
        params = handle.named_parameters()
        names = self._targets(handle, params)
        started = time.perf_counter()
        pairs = expand_prompt_pairs([(c, guide) for c in erased], cfg.expand_prompts)
        erase_keys, erase_guides = self._erase_rows(handle, pairs)
        preserved = list(cfg.preserve)
        if cfg.preserve_random:
            exclude = {w.lower() for text in erased + [guide] for w in text.split()}
            preserved += random_words(handle.pipe.tokenizer, cfg.preserve_random, self._generator(), exclude)
        if cfg.keys == "from_last_word":
            preserved = ["", *preserved]  # the 2023 release always preserves the empty prompt
        preserve_keys = self._preserve_rows(handle, preserved) if preserved else None
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
            "uce: %d keys erased (%d prompts), %d preserved keys, %d weights edited",
            len(erase_keys),
            len(pairs),
            0 if preserve_keys is None else len(preserve_keys),
            len(deltas),
        )
        named = concepts[0] if len(concepts) == 1 else concepts
        return ErasurePatch(deltas, self._metadata(handle, named, guide, deltas, time.perf_counter() - started))

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.config.seed)

    def _targets(self, handle, params: dict) -> list[str]:
        names = resolve_targets(self.default_target(), params, handle.kind)
        dim = int(handle.text_embedding_dim)  # SDXL: both text encoders' widths together
        bad = [n for n in names if not _KV.fullmatch(n) or params[n].ndim != 2 or params[n].shape[1] != dim]
        if bad:
            raise ValueError(
                f"UCE edits only the cross-attention to_k/to_v weights, linear maps of the {dim}-d text embeddings; "
                f"{bad[0]} (shape {tuple(params[bad[0]].shape)}) is not one. Use target='xattn_kv' or a subset of it."
            )
        return names

    @staticmethod
    def _length(handle) -> int:
        return int(handle.pipe.tokenizer.model_max_length)

    def _word_counts(self, handle, prompts: list[str]) -> list[int]:
        """Word tokens of each prompt as the encoder reads it (truncated to leave room for BOS and EOS)."""
        tok, most = handle.pipe.tokenizer, self._length(handle) - 2
        return [min(len(tok(p, add_special_tokens=False).input_ids), most) for p in prompts]

    def _erase_rows(self, handle, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys of every erased prompt and, row for row, the guide embeddings their values are taken from."""
        erased, guides = [e for e, _ in pairs], [g for _, g in pairs]
        emb = handle.token_embeddings(erased + guides).double().cpu()
        counts = self._word_counts(handle, erased + guides)
        n, length = len(pairs), emb.shape[1]
        keys, values = [], []
        for i in range(n):
            rows, guide_rows = uce_erase_positions(self.config.keys, counts[i], counts[n + i], length)
            keys.append(emb[i, rows])
            values.append(emb[n + i, guide_rows])
        return torch.cat(keys), torch.cat(values)

    def _preserve_rows(self, handle, prompts: list[str]) -> torch.Tensor:
        emb = handle.token_embeddings(prompts).double().cpu()
        counts = self._word_counts(handle, prompts)
        length = emb.shape[1]
        return torch.cat(
            [e[uce_preserve_positions(self.config.keys, k, length)] for e, k in zip(emb, counts, strict=True)]
        )

    def _metadata(self, handle, concept: str | list[str], guide: str, deltas: dict, seconds: float) -> dict:
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
