"""DoCo-specific behaviour on the tiny pipeline: anchors, the prior and retain terms, warm-up, surgery, timesteps."""

import pytest
import torch
from conftest import FAST_CONFIGS

import erasekit
from erasekit.methods import LossHistory
from erasekit.methods.doco import DoCo, DoCoConfig
from erasekit.models import DiffusionHandle


def test_doco_prior_target_frozen_starts_at_zero(tiny_pipe):
    # no anchor-seeking term: its frozen forward would join the real side's, and a larger batch rounds differently
    cfg = {**FAST_CONFIGS["doco"], "steps": 3, "warmup_steps": 1, "lr": 1e-2, "null_weight": 0.0, "anchor_weight": 0.0}

    def priors(**options):
        history = LossHistory()
        erasekit.erase(tiny_pipe, "doco", "a cat", anchor="a dog", callbacks=[history], **cfg, **options)
        return [h["prior"] for h in history.history if "prior" in h]

    frozen = priors(prior_target="frozen")  # the weights are still the original ones at the first generator step
    assert frozen[0] == 0.0 and frozen[1] > 0.0
    assert priors()[0] > 0.0  # the default, the paper's 'data': the sampled noise, never matched exactly
    with pytest.raises(ValueError, match="prior_target must be one of"):
        DoCoConfig(prior_target="noise")


def test_doco_retain_prompts_join_the_prior_loss_on_their_own_samples(tiny_pipe, monkeypatch):
    """The prior's trained forward sees the anchor batch plus as many retain samples, with the retain prompts'
    embeddings; with the frozen target their part of the prior loss starts at zero like the anchor's."""
    cfg = {**FAST_CONFIGS["doco"], "steps": 3, "warmup_steps": 1, "lr": 1e-2, "batch_size": 2, "null_weight": 0.0}
    cfg["prior_target"] = "frozen"
    retain = ["a dog on grass", "a red car"]
    real_predict = DiffusionHandle.predict_noise
    trained: list[torch.Tensor] = []  # the prompt embeddings of every forward with the trained weights

    def spy(self, x_t, t, emb, params=None):
        if params is not None:
            trained.append(emb.detach().clone())
        return real_predict(self, x_t, t, emb, params=params)

    monkeypatch.setattr(DiffusionHandle, "predict_noise", spy)
    history = LossHistory()
    erasekit.erase(tiny_pipe, "doco", "a cat", anchor="a dog", callbacks=[history], retain_prompts=retain, **cfg)
    priors = [h["prior"] for h in history.history if "prior" in h]
    assert priors[0] < 1e-10 and priors[1] > 1e-6  # the retain part is batched with the anchor's: float noise only
    # per generator step: the concept forward (batch 2), then the prior forward (2 anchor + 2 retain)
    assert [len(e) for e in trained[-2:]] == [2, 4]
    handle = DiffusionHandle(tiny_pipe)
    anchor_emb, retain_emb = handle.encode_prompts(["a dog"]), handle.encode_prompts(retain)
    prior_emb = trained[-1]
    assert all(torch.equal(row, anchor_emb[0]) for row in prior_emb[:2])
    assert all(any(torch.equal(row, r) for r in retain_emb) for row in prior_emb[2:])
    with pytest.raises(ValueError, match="num_retain needs retain_prompts"):
        DoCoConfig(num_retain=4)
    with pytest.raises(ValueError, match="num_retain must be >= 1"):
        DoCoConfig(retain_prompts=["a dog"], num_retain=0)


def test_doco_anchor_defaults_and_objects_need_one(tiny_pipe):
    with pytest.raises(ValueError, match="needs an anchor for the object"):
        erasekit.erase(tiny_pipe, "doco", "a cat", **{**FAST_CONFIGS["doco"], "concept_kind": "object"})
    patch = erasekit.erase(
        tiny_pipe, "doco", "a cat", anchor="an animal", concept_kind="object", **FAST_CONFIGS["doco"]
    )
    assert patch.metadata["anchor"] == "an animal"
    assert erasekit.erase(tiny_pipe, "doco", "a cat", **FAST_CONFIGS["doco"]).metadata["anchor"] == "a painting"
    with pytest.raises(ValueError, match="other than the concept"):
        erasekit.erase(tiny_pipe, "doco", "a cat", anchor="a cat", **FAST_CONFIGS["doco"])


def test_doco_pairs_concept_and_anchor_prompts_by_position(tiny_pipe):
    from erasekit.methods.doco import DoCoConfig

    cfg = DoCoConfig(
        **{**FAST_CONFIGS["doco"], "num_anchor": 5},
        anchor_prompts=["a dog photo", "a fish photo"],
        concept_prompts=["a dog sketch", "a fish sketch"],
    )
    anchors, concepts = DoCo(cfg).paired_prompts("ignored", "ignored")
    assert anchors == ["a dog photo", "a fish photo"] * 2 + ["a dog photo"]
    assert concepts == [a.replace("photo", "sketch") for a in anchors]
    patch = DoCo(cfg).erase(tiny_pipe, "sketch")
    assert patch.num_changed > 0
    assert DoCo(DoCoConfig(num_anchor=2)).paired_prompts("a painting", ["a cat"]) == (
        ["a painting"] * 2,
        ["a cat"] * 2,
    )
    with pytest.raises(ValueError, match="paired by position"):
        DoCoConfig(anchor_prompts=["a", "b"], concept_prompts=["c", "d", "e"])
    with pytest.raises(ValueError, match="anchor_prompts"):
        DoCoConfig(anchor_prompts=[])


def test_doco_warmup_moves_only_the_discriminator(tiny_pipe):
    cfg = {**FAST_CONFIGS["doco"], "warmup_steps": 2}
    with pytest.raises(RuntimeError, match="unchanged"):
        erasekit.erase(tiny_pipe, "doco", "a cat", **cfg)


def test_doco_surgery_modes_change_the_result(tiny_pipe):
    fast = {**FAST_CONFIGS["doco"], "steps": 3}
    patches = {m: erasekit.erase(tiny_pipe, "doco", "a cat", surgery=m, **fast) for m in ("pcgrad", "none")}
    assert any(
        not torch.equal(patches["pcgrad"].deltas[k].to_dense(), d.to_dense())
        for k, d in patches["none"].deltas.items()
    )


def test_doco_fake_from_concept_predicts_the_fake_side_from_the_concept_samples(tiny_pipe, monkeypatch):
    real_predict, real_prepare = DiffusionHandle.predict_noise, erasekit.methods.doco.DoCo.prepare

    def inputs(**options) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []

        def spy(self, x_t, t, emb, params=None):
            seen.append(x_t.detach().clone())
            return real_predict(self, x_t, t, emb, params=params)

        def prepare_then_watch(self, state):
            real_prepare(self, state)
            seen.clear()
            if options["fake_from"] != "anchor":
                assert state.ctx["concept"].shape == state.ctx["anchor"].shape

        monkeypatch.setattr(DiffusionHandle, "predict_noise", spy)
        monkeypatch.setattr(erasekit.methods.doco.DoCo, "prepare", prepare_then_watch)
        erasekit.erase(tiny_pipe, "doco", "a cat", **{**FAST_CONFIGS["doco"], "steps": 2, **options})
        return seen[:2]  # the first step: the frozen anchor forward (real side), then the concept forward (fake)

    real, fake = inputs(fake_from="anchor")
    assert torch.equal(real, fake)  # the paper's: both sides from the same noisy anchor latent
    real, fake = inputs(fake_from="concept")
    assert real.shape == fake.shape and not torch.equal(real, fake)
    real, fake = inputs(fake_from="both", batch_size=8, num_anchor=8)  # per sample, either side at even odds
    same = [torch.equal(r, f) for r, f in zip(real, fake, strict=True)]
    assert 0 < sum(same) < len(same)
    with pytest.raises(ValueError, match="fake_from must be one of"):
        DoCoConfig(fake_from="noise")


def test_doco_anchor_weight_regresses_the_concept_prediction_to_the_frozen_anchor_prediction(tiny_pipe, monkeypatch):
    """Known answer: at the first generator step the weights are the original ones, so the logged anchor-seeking
    loss is the MSE between the frozen concept and anchor predictions on the fake side's input; trained on that loss
    alone, the patched model's concept prediction moves towards the anchor's."""
    cfg = {**FAST_CONFIGS["doco"], "steps": 2, "batch_size": 2, "num_anchor": 2, "fake_from": "concept"}
    cfg |= {"null_weight": 0.0, "anchor_weight": 1.0}
    real_predict = DiffusionHandle.predict_noise
    trained: list[tuple] = []  # the inputs of every forward with the trained weights

    def spy(self, x_t, t, emb, params=None):
        if params is not None:
            trained.append((x_t.detach().clone(), t.clone()))
        return real_predict(self, x_t, t, emb, params=params)

    monkeypatch.setattr(DiffusionHandle, "predict_noise", spy)
    history = LossHistory()
    erasekit.erase(tiny_pipe, "doco", "a cat", anchor="a dog", callbacks=[history], **cfg)
    monkeypatch.undo()
    logged = [h["anchor"] for h in history.history if "anchor" in h]
    assert len(logged) == 1  # one generator step after the warm-up
    x_fake, t = trained[-2]  # the generator step's concept forward, then its prior forward
    handle = DiffusionHandle(tiny_pipe)
    with torch.no_grad():
        concept = handle.predict_noise(x_fake, t, handle.encode_prompts(["a cat"] * 2)).float()
        anchor = handle.predict_noise(x_fake, t, handle.encode_prompts(["a dog"] * 2)).float()
    assert logged[0] == pytest.approx(float(torch.nn.functional.mse_loss(concept, anchor)), rel=1e-4)

    def concept_gap() -> float:  # to the original anchor prediction on the same input, which the run below redraws
        with torch.no_grad():
            c = handle.predict_noise(x_fake, t, handle.encode_prompts(["a cat"] * 2)).float()
        return float((c - anchor).pow(2).mean())

    only_anchor = {"adv_weight": 0.0, "prior_weight": 0.0, "steps": 16, "lr": 3e-3, "surgery": "none"}  # gap ~0.08x
    patch = erasekit.erase(tiny_pipe, "doco", "a cat", anchor="a dog", **{**cfg, **only_anchor})
    with patch.applied(tiny_pipe):
        after = concept_gap()
    assert after < 0.25 * logged[0]
    with pytest.raises(ValueError, match="anchor_weight"):
        DoCoConfig(anchor_weight=-1.0)
