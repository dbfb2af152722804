"""Robust training (AdvUnlearn-style adversarial prompts) for SalUn and DoCo on the tiny pipeline."""

import types

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST_CONFIGS

import erasekit
from erasekit.methods import LossHistory
from erasekit.methods.adversarial import AdversarialPrompts
from erasekit.methods.diffusion_data import generated_latents, noisy
from erasekit.methods.doco import DoCoConfig
from erasekit.methods.salun import SalUnConfig
from erasekit.models import DiffusionHandle


def _attacker(tiny_pipe, mode="soft", keep=(), concepts=("a cat",), **options):
    handle = DiffusionHandle(tiny_pipe)
    cfg = SalUnConfig(robust_every=1, robust_mode=mode, **options)
    prompts = ["a cat", "a cat sitting"] * 2
    x0 = generated_latents(handle, prompts, torch.Generator().manual_seed(0), 2, 7.5, 4)
    return handle, AdversarialPrompts(handle, cfg, 0, prompts, x0, keep=list(keep), concepts=list(concepts))


def _diffusion_loss(handle, attacker, vectors, draws=16):
    """The attack's objective on fixed draws (not the ones the attack trained on)."""
    gens = [torch.Generator().manual_seed(1000 + i) for i in range(draws)]
    rows = torch.arange(draws) % len(attacker.x0)
    x_t, t, target = noisy(handle, attacker.x0[rows], gens)
    with torch.no_grad():
        return float(F.mse_loss(handle.predict_noise(x_t, t, attacker.encode(vectors, rows)).float(), target))


def test_the_inner_attack_lowers_the_concept_loss_and_touches_only_its_tokens(tiny_pipe):
    handle, attacker = _attacker(tiny_pipe, robust_attack_steps=8, robust_lr=3.0, robust_tokens=2)
    weights = {k: p.detach().clone() for k, p in handle.named_parameters().items()}
    start = attacker.vectors.clone()
    state = types.SimpleNamespace(step=0, trained=None)
    logs = attacker.refresh(state, batch_size=4)
    assert set(logs) == {"attack_start", "attack_end"}
    assert _diffusion_loss(handle, attacker, attacker.vectors) < _diffusion_loss(handle, attacker, start)
    assert all(torch.equal(p, weights[k]) for k, p in handle.named_parameters().items())  # weights never move
    assert all(p.grad is None for p in handle.named_parameters().values())
    # the attacked conditioning differs from the plain prompt's only through the suffix tokens
    assert attacker.embeddings.shape == handle.encode_prompts(attacker.texts).shape
    assert not torch.equal(attacker.embeddings, handle.encode_prompts(attacker.texts))


def test_a_discrete_attacker_conditions_on_a_prompt_anyone_can_type(tiny_pipe, caplog):
    from erasekit.attacks.tokens import single_token_words
    from erasekit.ops.vocab import nearest_tokens

    handle, attacker = _attacker(tiny_pipe, mode="discrete", robust_attack_steps=3)
    with caplog.at_level("INFO", logger="erasekit.methods.adversarial"):
        attacker.refresh(types.SimpleNamespace(step=0, trained=None), batch_size=2)
    words = single_token_words(handle)
    ids = nearest_tokens(attacker.vectors, attacker.table, attacker.allowed).tolist()
    typed = [f"{p} {' '.join(words[i] for i in ids)}" for p in ["a cat", "a cat sitting"] * 2]
    assert torch.allclose(attacker.embeddings, handle.encode_prompts(typed), atol=1e-5)
    assert f"the attacker's words are {' '.join(words[i] for i in ids)!r}" in caplog.text  # what to check by hand


# what the erasure keeps: a dog, sitting (a context the forget prompts share), a red car; "a" is the concept's own word
KEEP = ["a dog sitting", "a red car"]


def test_the_attacker_never_uses_the_words_of_what_the_erasure_keeps(tiny_pipe):
    from erasekit.methods.adversarial import kept_token_ids

    handle = DiffusionHandle(tiny_pipe)
    kept = kept_token_ids(handle, KEEP, ["a cat"])
    assert kept == sorted(handle.token_ids("dog sitting red car"))
    # discrete: a token sitting on a kept word reads as another word
    _, attacker = _attacker(tiny_pipe, mode="discrete", keep=KEEP, robust_avoid_kept=True)
    for i in kept:
        assert not torch.equal(attacker._used(attacker.table[i : i + 1]), attacker.table[i : i + 1])
    _, free = _attacker(tiny_pipe, mode="discrete", keep=KEEP)  # AdvUnlearn's attacker, the default
    assert torch.equal(free._used(free.table[kept[:1]]), free.table[kept[:1]])
    # soft: the tokens keep no component along a kept word's direction, before and after a refresh
    _, soft = _attacker(tiny_pipe, keep=KEEP, robust_avoid_kept=True, robust_attack_steps=4, robust_lr=3.0)
    mean = soft.table.mean(0)
    directions = F.normalize(soft.table[kept] - mean, dim=-1)

    def along(vectors):  # the largest component along a kept word's direction, in embedding-std units
        return float(((vectors - mean) @ directions.T).abs().max()) / soft.scale

    assert along(soft.table[kept]) > 0.5
    assert along(soft._keep_away(soft.table[kept])) < 1e-4
    assert along(soft.vectors) < 1e-4
    start = soft.vectors.clone()
    soft.refresh(types.SimpleNamespace(step=0, trained=None), batch_size=2)
    assert along(soft.vectors) < 1e-4 and not torch.allclose(soft.vectors, start)
    _, soft_free = _attacker(tiny_pipe, keep=KEEP)
    assert torch.equal(soft_free._keep_away(soft_free.table[kept]), soft_free.table[kept])


@pytest.mark.parametrize("method", ["salun", "doco"])
def test_robust_training_refreshes_the_attack_on_schedule_and_trains_on_the_attacked_prompts(method, tiny_pipe):
    options = {**FAST_CONFIGS[method], "steps": 5, "robust_every": 2, "robust_attack_steps": 2}
    history = LossHistory()
    patch = erasekit.erase(tiny_pipe, method, "a cat", callbacks=[history], **options)
    first = options.get("warmup_steps", 0)  # DoCo's discriminator warm-up trains nothing else
    refreshed = [h["step"] for h in history.history if "attack_start" in h]
    attacked = [h["step"] for h in history.history if "attacked" in h]
    # the first step after any warm-up attacks, then every robust_every steps (history steps count from 1)
    assert refreshed == sorted({first + 1} | {s + 1 for s in range(first, 5) if s % 2 == 0})
    assert attacked == list(range(first + 1, 6))
    assert patch.metadata["config"]["robust_every"] == 2
    plain = erasekit.erase(tiny_pipe, method, "a cat", **{**options, "robust_every": 0})
    assert any(not torch.equal(patch.deltas[k].to_dense(), d.to_dense()) for k, d in plain.deltas.items())


@pytest.mark.parametrize(
    ("cls", "options", "match"),
    [
        (SalUnConfig, {"robust_every": -1}, "robust_every"),
        (SalUnConfig, {"robust_mode": "hard"}, "robust_mode"),
        (DoCoConfig, {"robust_every": 2, "robust_tokens": 0}, "robust_tokens"),
        (DoCoConfig, {"robust_lr": 0.0}, "robust_lr"),
    ],
)
def test_bad_robust_settings_fail_on_creation(cls, options, match):
    with pytest.raises(ValueError, match=match):
        cls(**options)
