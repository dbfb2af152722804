"""UCE: key selection of each ``keys`` value, the closed form against an explicit least-squares solve, prompt
expansion, and erasekit's edit against the figures recorded from the authors' code (tests/fixtures/uce_parity.json)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

import erasekit
import erasekit.methods.uce as uce_module
from erasekit.methods.uce import UCEConfig, aligned_rows, random_words
from erasekit.models import DiffusionHandle
from erasekit.ops import uce_closed_form
from erasekit.ops.uce import expand_prompt_pairs, uce_erase_positions, uce_preserve_positions

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "uce_parity.json"

# Hand-checked with the CLIP BPE tokenizer: "a cat" -> BOS a cat EOS, "Van Gogh style" -> BOS van gogh style EOS,
# "art" -> BOS art EOS, "" -> BOS EOS. A prompt's last word sits at its number of word tokens.
WORDS = {"a cat": 2, "Van Gogh style": 3, "art": 1, "": 0, "dog": 1, "a dog": 2}


def test_hand_checked_token_counts(tiny_handle):
    tok = tiny_handle.pipe.tokenizer
    assert {p: len(tok(p, add_special_tokens=False).input_ids) for p in WORDS} == WORDS


# ---- which token positions each `keys` value takes --------------------------------------------------------------


def test_last_word_takes_one_key_per_prompt():
    assert uce_erase_positions("last_word", 3, 1, 77) == ([3], [1])  # "Van Gogh style" -> "style", guide "art"
    assert uce_erase_positions("last_word", 2, 0, 77) == ([2], [0])  # "a cat" -> "cat", guide "" -> BOS
    assert uce_preserve_positions("last_word", 1, 77) == [1]  # "dog" -> "dog"


def test_from_last_word_takes_the_last_word_eos_and_padding_aligned_from_the_last_words():
    rows, guide = uce_erase_positions("from_last_word", 3, 1, 77)  # "Van Gogh style" against "art"
    assert rows == list(range(3, 77)) and guide == list(range(1, 75))  # both runs cut to 77 - 3 positions
    rows, guide = uce_erase_positions("from_last_word", 1, 3, 77)  # a guide longer than the concept
    assert rows == list(range(1, 75)) and guide == list(range(3, 77))
    rows, guide = uce_erase_positions("from_last_word", 2, 0, 8)  # "a cat" against "" in 8 positions
    assert rows == [2, 3, 4, 5, 6, 7] and guide == [0, 1, 2, 3, 4, 5]
    assert uce_preserve_positions("from_last_word", 1, 77) == list(range(77))  # BOS and padding included


def test_words_eos_takes_every_word_and_eos_with_the_guide_aligned_from_the_end():
    assert uce_erase_positions("words_eos", 3, 1, 77) == ([1, 2, 3, 4], [0, 0, 1, 2])  # van gogh style EOS
    assert uce_erase_positions("words_eos", 2, 0, 77) == ([1, 2, 3], [0, 0, 1])  # a cat EOS <- BOS BOS EOS
    assert uce_preserve_positions("words_eos", 2, 77) == [1, 2, 3]


def test_unknown_keys_value_is_an_error():
    with pytest.raises(ValueError, match="keys must be one of"):
        uce_erase_positions("all", 1, 1, 77)
    with pytest.raises(ValueError, match="keys"):
        UCEConfig(keys="all")
    with pytest.raises(ValueError, match="expand_prompts"):
        UCEConfig(expand_prompts="art")


def _captured(monkeypatch, handle, concept, **options) -> dict:
    """The keys and values UCE hands to the closed form (first targeted layer)."""
    seen = {}

    def spy(w0, erase_keys, erase_values, preserve_keys=None, *args, **kwargs):
        seen.setdefault("w0", w0)
        seen.setdefault("erase_keys", erase_keys)
        seen.setdefault("erase_values", erase_values)
        seen.setdefault("preserve_keys", preserve_keys)
        return uce_closed_form(w0, erase_keys, erase_values, preserve_keys, *args, **kwargs)

    monkeypatch.setattr(uce_module, "uce_closed_form", spy)
    erasekit.erase(handle, "uce", concept, progress=False, **options)
    return seen


@pytest.mark.parametrize(
    ("keys", "concept_rows", "guide_rows", "preserve_rows"),
    [
        ("last_word", [3], [1], {"": None, "dog": [1], "a dog": [2]}),
        ("from_last_word", list(range(3, 77)), list(range(1, 75)), {"": list(range(77)), "dog": list(range(77))}),
        ("words_eos", [1, 2, 3, 4], [0, 0, 1, 2], {"": None, "dog": [1, 2], "a dog": [1, 2, 3]}),
    ],
)
def test_the_method_uses_the_embeddings_at_those_positions(
    monkeypatch, tiny_handle, keys, concept_rows, guide_rows, preserve_rows
):
    preserve = ["dog", "a dog"]
    seen = _captured(monkeypatch, tiny_handle, "Van Gogh style", guide="art", preserve=preserve, keys=keys)
    emb = {p: tiny_handle.encode_prompts([p])[0].double() for p in ["Van Gogh style", "art", "", *preserve]}
    torch.testing.assert_close(seen["erase_keys"], emb["Van Gogh style"][concept_rows])
    torch.testing.assert_close(seen["erase_values"], emb["art"][guide_rows] @ seen["w0"].T)
    order = ([""] if keys == "from_last_word" else []) + preserve  # that release always preserves ""
    rows = {"a dog": list(range(77))} if keys == "from_last_word" else {}
    expected = torch.cat([emb[p][{**preserve_rows, **rows}[p]] for p in order])
    torch.testing.assert_close(seen["preserve_keys"], expected)


# ---- the closed form against an explicit solve ------------------------------------------------------------------


def test_closed_form_equals_an_explicit_least_squares_solve():
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    c_e, v_e = torch.randn(2, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64)
    c_p = torch.randn(3, 4, generator=g, dtype=torch.float64)
    lam, s = 0.5, 0.7
    # min_W  lam·|W − W0|² + Σ_e |W c_e − v_e|² + s·Σ_p |W c_p − W0 c_p|², one stacked least-squares problem per row
    a = torch.cat([lam**0.5 * torch.eye(4, dtype=torch.float64), c_e, s**0.5 * c_p])
    b = torch.cat([lam**0.5 * w0.T, v_e, s**0.5 * (c_p @ w0.T)])
    explicit = torch.linalg.lstsq(a, b).solution.T
    torch.testing.assert_close(uce_closed_form(w0, c_e, v_e, c_p, None, lam, s), explicit, rtol=1e-10, atol=1e-12)


# ---- prompt expansion ------------------------------------------------------------------------------------------


def test_prompt_expansion_gives_the_five_phrasings_of_each_kind_for_concept_and_guide():
    assert expand_prompt_pairs([("Ink", "art")], "none") == [("Ink", "art")]
    assert expand_prompt_pairs([("Ink", "art")], "style") == [
        ("Ink", "art"),
        ("painting by Ink", "painting by art"),
        ("art by Ink", "art by art"),
        ("artwork by Ink", "artwork by art"),
        ("picture by Ink", "picture by art"),
        ("style of Ink", "style of art"),
    ]
    pairs = expand_prompt_pairs([("apple", ""), ("pear", "")], "object")
    assert [e for e, _ in pairs] == [
        "apple",
        "pear",
        *(f"{t} apple" for t in ("image of", "photo of", "portrait of", "picture of", "painting of")),
        *(f"{t} pear" for t in ("image of", "photo of", "portrait of", "picture of", "painting of")),
    ]
    assert pairs[2][1] == "image of "  # the empty guide phrased the same way


def test_expanded_prompts_each_give_their_own_key(monkeypatch, tiny_handle):
    seen = _captured(monkeypatch, tiny_handle, "a cat", guide="", expand_prompts="object")
    prompts = [e for e, _ in expand_prompt_pairs([("a cat", "")], "object")]
    emb = tiny_handle.encode_prompts(prompts).double()
    counts = [len(tiny_handle.pipe.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    assert counts == [2, 4, 4, 4, 4, 4]  # "photo of a cat": photo of a cat
    torch.testing.assert_close(seen["erase_keys"], torch.stack([e[n] for e, n in zip(emb, counts, strict=True)]))


# ---- erasekit against the authors' code (figures recorded from one run of their script) -----------------------


def _projections(w: torch.Tensor, n: int) -> torch.Tensor:
    """``w @ v`` for ``n`` fixed ±1/d vectors (|v|₁ = 1, so each entry moves by at most max |Δw|)."""
    g = torch.Generator().manual_seed(0)
    v = (torch.randint(0, 2, (w.shape[1], n), generator=g, dtype=torch.float64) * 2 - 1) / w.shape[1]
    return w.double() @ v


@pytest.fixture(scope="module")
def minicanvas():
    try:
        return erasekit.load_model("minicanvas")
    except Exception as err:  # noqa: BLE001 - the shipped world is optional for a library install
        pytest.skip(f"the MiniCanvas world is not available: {err}")


PARITY = json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("case", PARITY["cases"], ids=lambda c: c["target"])
def test_last_word_edit_matches_the_authors_recorded_weights(minicanvas, case):
    """max |Δ| between erasekit's and the authors' edited weights, bounded through fixed projections."""
    handle = DiffusionHandle(minicanvas.pipe) if not isinstance(minicanvas, DiffusionHandle) else minicanvas
    for name, fp in case["base_sha256"].items():
        w = handle.named_parameters()[name].detach().float().contiguous()
        if hashlib.sha256(w.numpy().tobytes()).hexdigest() != fp:
            pytest.skip("the shipped MiniCanvas weights changed since the figures were recorded; rerun the parity")
    patch = erasekit.erase(handle, "uce", case["concept"], progress=False, **case["options"])
    params = handle.named_parameters()
    assert sorted(patch.deltas) == sorted(case["tensors"])
    for name, rec in case["tensors"].items():
        w = params[name].detach().double() + patch.deltas[name].to_dense().double()
        proj = _projections(w, len(rec["projections"])).T  # [n, out], as recorded
        bound = case["tolerance"] * rec["max_abs"]
        diff = (proj - torch.tensor(rec["projections"], dtype=torch.float64)).abs().max()
        assert diff <= bound, f"{name}: {float(diff):.3g} > {bound:.3g}"


# ---- the edit on the tiny pipeline -----------------------------------------------------------------------------


def _rows(handle, prompt: str) -> torch.Tensor:
    n = len(handle.token_ids(prompt))
    return handle.encode_prompts([prompt])[0][1 : n + 2].double()


def test_uce_edits_only_kv_and_sends_the_concept_to_the_guide_values(tiny_pipe):
    handle = DiffusionHandle(tiny_pipe)
    before = {k: v.detach().double().clone() for k, v in handle.named_parameters().items()}
    patch = erasekit.erase(
        tiny_pipe, "uce", "a cat", guide="art", preserve=["dog"], lam=1e-6, keys="words_eos", progress=False
    )
    assert patch.deltas and all(re.fullmatch(r"unet\..*\.attn2\.to_[kv]\.weight", k) for k in patch.deltas)
    assert patch.metadata["anchor"] == "art" and patch.metadata["stats"]["erase_seconds"] >= 0
    c_e, c_p = _rows(handle, "a cat"), _rows(handle, "dog")
    guide = handle.encode_prompts(["art"])[0].double()[aligned_rows(2, 1)]  # "a", "cat", EOS <- BOS, "art", EOS
    for key, delta in patch.deltas.items():
        w0 = before[key]
        w = w0 + delta.to_dense().double()
        target = guide @ w0.T
        assert (c_e @ w.T - target).norm() < 1e-2 * (c_e @ w0.T - target).norm(), key
        torch.testing.assert_close(c_p @ w.T, c_p @ w0.T, rtol=0, atol=1e-3 * float(w0.abs().max()))


def test_uce_guide_defaults_and_bad_targets(tiny_pipe):
    assert erasekit.erase(tiny_pipe, "uce", "a cat", progress=False).metadata["anchor"] == ""
    assert erasekit.erase(tiny_pipe, "uce", "a cat", anchor="a dog", progress=False).metadata["anchor"] == "a dog"
    with pytest.raises(ValueError, match="to_k/to_v"):
        erasekit.erase(tiny_pipe, "uce", "a cat", target="xattn", progress=False)


def test_uce_alignment_and_random_words():
    assert aligned_rows(2, 0) == [0, 0, 1]  # words -> BOS, EOS -> EOS
    assert aligned_rows(1, 3) == [3, 4]  # a longer guide: its last word and EOS
    from erasekit.models.tiny import _cached_tokenizer

    tok = _cached_tokenizer()
    a = random_words(tok, 5, torch.Generator().manual_seed(0), {"cat"})
    assert a == random_words(tok, 5, torch.Generator().manual_seed(0), {"cat"})
    assert a != random_words(tok, 5, torch.Generator().manual_seed(1), {"cat"})
    assert all(w.isalpha() and len(w) >= 3 and w != "cat" for w in a)
