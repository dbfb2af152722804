"""The real CLIP BPE tokenizer, built offline from the vocabulary file that open-clip-torch ships.

No model hub is needed: the merges list in ``bpe_simple_vocab_16e6.txt.gz`` fully determines CLIP's 49,408-token
vocabulary (256 byte symbols, the same with an end-of-word marker, one token per merge, two special tokens).
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources

N_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges from the shipped file


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """Return CLIP's ``(vocab, merges)`` as the Hugging Face CLIP tokenizer expects them."""
    path = resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"
    with resources.as_file(path) as p, gzip.open(p, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1 : N_MERGES + 1]
    merges = [line for line in lines if line]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_tokenizer(model_max_length: int = 77):
    """Build a ``transformers.CLIPTokenizer`` identical to OpenAI CLIP's, without any download.

    Example:
        >>> tok = clip_tokenizer()
        >>> tok("a photo of a cat").input_ids[:3]
        [49406, 320, 1125]
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    pairs = [tuple(m.split()) for m in merges]
    return CLIPTokenizer(vocab=dict(vocab), merges=pairs, model_max_length=model_max_length)
