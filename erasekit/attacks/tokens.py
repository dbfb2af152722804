"""Token helpers shared by the prompt and inversion attacks: placeholder words whose input embeddings are replaced,
the whole-word vocabulary a discrete attack may choose from, and prompts with a class name swapped for a word."""

from __future__ import annotations

import re

import torch


def require_token_injection(handle) -> None:
    """These attacks replace input token embeddings of a single CLIP text encoder (Stable Diffusion 1.x/2.x)."""
    from ..models.sd import DiffusionHandle

    if (
        getattr(handle, "kind", None) != "diffusion"
        or type(handle).encode_prompts is not DiffusionHandle.encode_prompts
    ):
        raise ValueError(
            f"Prompt and inversion attacks need a Stable Diffusion 1.x/2.x pipeline (one CLIP text encoder); "
            f"{type(handle).__name__} is not supported yet."
        )


def single_token_words(handle) -> dict[int, str]:
    """``{token id: word}`` for every alphabetic vocabulary word that tokenizes to exactly one token."""
    out = {}
    for word in handle.vocabulary_words():
        if word.isascii() and word.isalpha():
            ids = handle.token_ids(word)
            if len(ids) == 1:
                out[ids[0]] = word
    return out


def word_mask(words: dict[int, str], vocab_size: int) -> torch.Tensor:
    """A boolean ``[vocab_size]`` mask of the token ids in ``words`` (what a discrete attack may choose from)."""
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[list(words)] = True
    return mask


def placeholders(handle, k: int, avoid: str = "") -> list[tuple[int, str]]:
    """``k`` single-token words to carry learned embeddings: the rarest (highest-id) whole words, none of which
    occurs in ``avoid``."""
    words = single_token_words(handle)
    taken = set(re.findall(r"[a-z]+", avoid.lower()))
    picks = [(i, w) for i, w in sorted(words.items(), reverse=True) if w.lower() not in taken and len(w) > 2]
    if len(picks) < k:
        raise ValueError(f"The tokenizer has only {len(picks)} usable placeholder words; {k} are needed.")
    return picks[:k]


def replace_name(prompt: str, name: str, word: str) -> str:
    """``prompt`` with the class ``name`` (case-insensitive, underscores as spaces) replaced by ``word``."""
    pattern = re.compile(re.escape(name.replace("_", " ")), re.IGNORECASE)
    if not pattern.search(prompt):
        raise ValueError(f"The prompt {prompt!r} does not contain {name!r}.")
    return pattern.sub(word, prompt)


def embedding_scale(table: torch.Tensor) -> float:
    """The per-coordinate standard deviation of an embedding table (learning rates are given in these units)."""
    return float(table.float().std())
