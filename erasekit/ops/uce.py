"""UCE's closed-form edit of a linear projection (Gandikota et al., "Unified Concept Editing in Diffusion Models",
WACV 2024, arXiv 2308.14761).

W = (λ·W₀ + Σ_e v*_e c_eᵀ + s·Σ_p v_p c_pᵀ) · (λ·I + Σ_e c_e c_eᵀ + s·Σ_p c_p c_pᵀ)⁻¹

minimises λ‖W − W₀‖² + Σ_e ‖W c_e − v*_e‖² + s·Σ_p ‖W c_p − v_p‖²: erased keys c_e are sent to new values v*_e,
preserved keys c_p keep v_p = W₀ c_p, and λ ties everything else to the original weights.

Which token embeddings of a prompt are keys differs between the authors' releases; :func:`uce_erase_positions` and
:func:`uce_preserve_positions` give the positions of each choice, :func:`expand_prompt_pairs` the authors' prompt
expansion.
"""

from __future__ import annotations

import torch


def uce_closed_form(
    w0: torch.Tensor,
    erase_keys: torch.Tensor,
    erase_values: torch.Tensor,
    preserve_keys: torch.Tensor | None = None,
    preserve_values: torch.Tensor | None = None,
    lam: float = 0.1,
    preserve_scale: float = 1.0,
) -> torch.Tensor:
    """The edited weight, computed in float64 with ``torch.linalg.solve`` (no explicit inverse).

    Args:
        w0: the original weight ``[out, d]`` (a linear map of d-dimensional text embeddings).
        erase_keys: ``[n_e, d]`` embeddings to redirect (one row per token embedding c_e).
        erase_values: ``[n_e, out]`` the values v*_e they must produce.
        preserve_keys: ``[n_p, d]`` embeddings whose outputs must stay; ``None`` for none.
        preserve_values: ``[n_p, out]`` their target values; default ``w0 @ c_p`` (unchanged outputs).
        lam: λ > 0, the pull towards W₀ (small λ: the constraints win; large λ: W stays near W₀).
        preserve_scale: s ≥ 0, the weight of the preservation terms.

    Returns:
        The new weight ``[out, d]`` in float64.

    Example:
        >>> uce_closed_form(torch.eye(2), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), lam=1.0)
        tensor([[0.5000, 0.0000],
                [1.0000, 1.0000]], dtype=torch.float64)
    """
    if lam <= 0:
        raise ValueError(f"lam must be > 0 (it keeps the system invertible), got {lam!r}.")
    w0 = w0.detach().double()
    d = w0.shape[1]
    c_e, v_e = erase_keys.detach().double(), erase_values.detach().double()
    if c_e.ndim != 2 or c_e.shape[1] != d or v_e.shape != (c_e.shape[0], w0.shape[0]):
        raise ValueError(
            f"erase keys {tuple(c_e.shape)} / values {tuple(v_e.shape)} do not fit a {tuple(w0.shape)} W."
        )
    lhs = lam * w0 + v_e.T @ c_e  # [out, d]
    gram = lam * torch.eye(d, dtype=torch.float64, device=w0.device) + c_e.T @ c_e  # [d, d]
    if preserve_keys is not None and preserve_keys.numel():
        c_p = preserve_keys.detach().double()
        v_p = c_p @ w0.T if preserve_values is None else preserve_values.detach().double()
        lhs = lhs + preserve_scale * (v_p.T @ c_p)
        gram = gram + preserve_scale * (c_p.T @ c_p)
    # W·gram = lhs with gram symmetric  =>  W = solve(gram, lhsᵀ)ᵀ
    return torch.linalg.solve(gram, lhs.T).T


UCE_KEYS = ("last_word", "from_last_word", "words_eos")  # which token embeddings of a prompt are UCE's keys


def aligned_rows(n_concept: int, n_guide: int) -> list[int]:
    """Guide positions for a concept's n word rows and EOS: aligned from the end, clamped to BOS (position 0).

    Example:
        >>> aligned_rows(2, 0)  # two words + EOS against "" (BOS, EOS): words -> BOS, EOS -> EOS
        [0, 0, 1]
    """
    k = n_concept + 1
    return [max(0, n_guide + 1 - (k - 1 - i)) for i in range(k)]


def uce_erase_positions(keys: str, n_prompt: int, n_guide: int, length: int) -> tuple[list[int], list[int]]:
    """Token positions of an erased prompt's keys and, row for row, of the guide embeddings that give their values.

    A prompt of ``n`` word tokens is encoded as BOS (position 0), its words (1..n), EOS (n+1) and padding up to
    ``length``; its last word sits at ``n`` (BOS when ``n`` is 0, as for the empty guide).

    Args:
        keys: ``"last_word"`` (one key: the last word, paired with the guide's last word),
            ``"from_last_word"`` (the last word, EOS and the padding after it, paired position by position with the
            guide's from its last word, both cut to the shorter run), or ``"words_eos"`` (every word and EOS,
            paired with the guide aligned from the end, see :func:`aligned_rows`).
        n_prompt: word tokens of the erased prompt (after truncation to ``length - 2``).
        n_guide: word tokens of its guide prompt.
        length: the encoded sequence length (77 for CLIP).

    Example:
        >>> uce_erase_positions("last_word", 2, 1, 77)
        ([2], [1])
        >>> uce_erase_positions("from_last_word", 2, 0, 6)
        ([2, 3], [0, 1])
    """
    if keys == "last_word":
        return [n_prompt], [n_guide]
    if keys == "from_last_word":
        run = length - max(n_prompt, n_guide)
        return list(range(n_prompt, n_prompt + run)), list(range(n_guide, n_guide + run))
    if keys == "words_eos":
        return list(range(1, n_prompt + 2)), aligned_rows(n_prompt, n_guide)
    raise ValueError(f"keys must be one of {UCE_KEYS}, got {keys!r}.")


def uce_preserve_positions(keys: str, n_words: int, length: int) -> list[int]:
    """Token positions of a preserved prompt's keys: its last word, every position, or its words and EOS.

    Example:
        >>> uce_preserve_positions("last_word", 3, 77), uce_preserve_positions("words_eos", 2, 77)
        ([3], [1, 2, 3])
        >>> len(uce_preserve_positions("from_last_word", 2, 77))  # BOS, words, EOS and padding
        77
    """
    if keys == "last_word":
        return [n_words]
    if keys == "from_last_word":
        return list(range(length))
    if keys == "words_eos":
        return list(range(1, n_words + 2))
    raise ValueError(f"keys must be one of {UCE_KEYS}, got {keys!r}.")


EXPANSION_TEMPLATES = {  # the five extra phrasings per concept of the authors' --expand_prompts, by concept kind
    "style": ("painting by {}", "art by {}", "artwork by {}", "picture by {}", "style of {}"),
    "object": ("image of {}", "photo of {}", "portrait of {}", "picture of {}", "painting of {}"),
}


def expand_prompt_pairs(pairs: list[tuple[str, str]], kind: str) -> list[tuple[str, str]]:
    """``(erased, guide)`` pairs followed by each pair phrased in the five templates of ``kind`` (both sides).

    ``kind`` is ``"none"`` (no expansion), ``"style"`` or ``"object"``.

    Example:
        >>> expand_prompt_pairs([("Ink", "art")], "style")[:2]
        [('Ink', 'art'), ('painting by Ink', 'painting by art')]
    """
    if kind == "none":
        return list(pairs)
    if kind not in EXPANSION_TEMPLATES:
        raise ValueError(f"expand_prompts must be 'none', 'style' or 'object', got {kind!r}.")
    extra = [(t.format(e), t.format(g)) for e, g in pairs for t in EXPANSION_TEMPLATES[kind]]
    return list(pairs) + extra
