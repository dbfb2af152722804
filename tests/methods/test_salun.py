"""Method-specific behaviour of SalUn, DoCo and UCE on the tiny pipeline (the shared suite covers the rest)."""

import re

import pytest
import torch
from conftest import FAST_CONFIGS

import erasekit
from erasekit.methods import Callback, LossHistory
from erasekit.methods.doco import DoCo, DoCoConfig
from erasekit.methods.salun import SalUn, SalUnConfig
from erasekit.methods.uce import aligned_rows, random_words
from erasekit.models import DiffusionHandle
from erasekit.ops import global_topk_mask
from erasekit.patch import SparseDelta

# ---- SalUn ----------------------------------------------------------------------------------------------------


def test_salun_mask_is_the_top_fraction_of_the_empty_prompt_saliency_and_the_patch_sits_inside_it(
    tiny_pipe, monkeypatch
):
    seen: dict = {"scores": None, "embs": [], "in_saliency": False}
    real_saliency, real_predict = SalUn.saliency, DiffusionHandle.predict_noise

    def spy_saliency(self, state):
        seen["in_saliency"] = True
        seen["scores"] = real_saliency(self, state)
        seen["in_saliency"] = False
        return seen["scores"]

    def spy_predict(self, latents, t, emb, params=None):
        if seen["in_saliency"]:
            seen["embs"].append(emb[0].detach().clone())
        return real_predict(self, latents, t, emb, params=params)

    monkeypatch.setattr(SalUn, "saliency", spy_saliency)
    monkeypatch.setattr(DiffusionHandle, "predict_noise", spy_predict)
    method = SalUn(SalUnConfig(**{**FAST_CONFIGS["salun"], "mask_ratio": 0.3}))
    patch = method.erase(tiny_pipe, "a cat")

    handle = DiffusionHandle(tiny_pipe)
    concept, empty = handle.encode_prompts(["a cat"])[0], handle.encode_prompts([""])[0]
    assert seen["embs"] and all(torch.equal(e, concept) or torch.equal(e, empty) for e in seen["embs"])
    assert any(torch.equal(e, empty) for e in seen["embs"])  # ∅ is the empty prompt, not the concept

    mask, scores = method.mask, seen["scores"]
    expected = global_topk_mask(scores, 0.3)
    assert all(torch.equal(mask[k], expected[k]) for k in mask)
    kept = torch.cat([s[mask[k]] for k, s in scores.items()])
    dropped = torch.cat([s[~mask[k]] for k, s in scores.items()])
    assert sum(int(m.sum()) for m in mask.values()) == round(0.3 * sum(m.numel() for m in mask.values()))
    assert kept.min() >= dropped.max()  # the MOST salient weights are kept

    assert patch.deltas and all(isinstance(d, SparseDelta) for d in patch.deltas.values())
    for key, delta in patch.deltas.items():
        assert mask[key].reshape(-1)[delta.indices].all(), key
        assert (delta.values != 0).all()
    assert patch.num_changed <= sum(int(m.sum()) for m in mask.values())


def test_bad_salun_and_doco_settings_fail_before_work(tiny_pipe):
    with pytest.raises(ValueError, match="must not mention the concept"):
        erasekit.erase(tiny_pipe, "salun", "a cat", **{**FAST_CONFIGS["salun"], "misaligned_prompts": ["A cat"]})
    with pytest.raises(ValueError, match="weight_decay"):
        SalUnConfig(weight_decay=0.01)
    for method in ("salun", "doco"):
        with pytest.raises(ValueError, match="UNet parameters only"):
            erasekit.erase(tiny_pipe, method, "a cat", **{**FAST_CONFIGS[method], "target": ["unet", "text_encoder"]})


def test_salun_reads_an_image_folder(tiny_pipe, tmp_path):
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (40, 30), (60 * i, 120, 200)).save(tmp_path / f"{i}.png")
    patch = erasekit.erase(tiny_pipe, "salun", "a cat", **{**FAST_CONFIGS["salun"], "forget_images": str(tmp_path)})
    assert patch.num_changed > 0
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        erasekit.erase(
            tiny_pipe, "salun", "a cat", **{**FAST_CONFIGS["salun"], "retain_images": str(tmp_path / "empty")}
        )
    with pytest.raises(ValueError, match="does not exist"):
        erasekit.erase(tiny_pipe, "salun", "a cat", **{**FAST_CONFIGS["salun"], "forget_images": str(tmp_path / "x")})


def test_salun_forget_prompts_pair_each_forget_sample_with_its_prompt(tiny_pipe, monkeypatch):
    prompts = ["a red cat", "a blue cat", "a green cat"]
    generated: list[list[str]] = []
    real = __import__("erasekit.methods.salun", fromlist=["generated_latents"]).generated_latents

    def spy(handle, chunk, *args):
        generated.append(list(chunk))
        return real(handle, chunk, *args)

    monkeypatch.setattr("erasekit.methods.salun.generated_latents", spy)
    cfg = {**FAST_CONFIGS["salun"], "num_forget": 4, "forget_prompts": prompts}
    method = SalUn(SalUnConfig(**cfg))
    patch = method.erase(tiny_pipe, "a cat")
    assert generated[0] == [*prompts, prompts[0]]  # the forget set, prompts in turn
    handle = DiffusionHandle(tiny_pipe)
    emb = method._ctx["forget_emb"]
    assert torch.equal(emb[1], handle.encode_prompts(["a blue cat"])[0]) and len(emb) == 4
    default = erasekit.erase(tiny_pipe, "salun", "a cat", **{**cfg, "forget_prompts": None})
    assert any(not torch.equal(default.deltas[k].to_dense(), d.to_dense()) for k, d in patch.deltas.items())
    with pytest.raises(ValueError, match="forget_prompts"):
        SalUnConfig(forget_prompts=[])


def test_salun_pair_misaligned_maps_each_forget_prompt_to_its_partner(tiny_pipe):
    forget, partners = ["a red cat", "a blue cat", "a green cat"], ["a red car", "a blue car", "a green car"]
    cfg = {**FAST_CONFIGS["salun"], "num_forget": 4, "forget_prompts": forget, "misaligned_prompts": partners}
    paired = SalUn(SalUnConfig(**cfg, pair_misaligned=True))
    patch = paired.erase(tiny_pipe, "cat")
    assert paired.misaligned_index(torch.tensor([0, 1, 2, 3]), []).tolist() == [0, 1, 2, 0]  # sample 3 = prompt 0
    handle = DiffusionHandle(tiny_pipe)
    assert torch.equal(paired._ctx["misaligned_emb"][1], handle.encode_prompts(["a blue car"])[0])
    drawn = erasekit.erase(tiny_pipe, "salun", "cat", **cfg)  # same data, partners drawn at random instead
    assert any(not torch.equal(drawn.deltas[k].to_dense(), d.to_dense()) for k, d in patch.deltas.items())
    with pytest.raises(ValueError, match="one misaligned prompt per forget prompt"):
        SalUnConfig(forget_prompts=forget, misaligned_prompts=partners[:2], pair_misaligned=True)


def test_salun_loss_targets_frozen_and_current(tiny_pipe):
    cfg = {**FAST_CONFIGS["salun"], "steps": 3, "lr": 1e-2}

    def losses(**options):
        history = LossHistory()
        erasekit.erase(tiny_pipe, "salun", "a cat", callbacks=[history], **cfg, **options)
        return [h["forget"] for h in history.history], [h["retain"] for h in history.history]

    forget, retain = losses()  # defaults: retain regresses to the original model -> 0 before any update (up to
    assert retain[0] < 1e-10 and retain[1] > 1e-6  # float rounding: target and prediction are batched differently)
    forget_d, retain_d = losses(retain_target="data")  # the noise: never 0, and the first step's forget is shared
    assert retain_d[0] > 1e-6 and forget_d[0] == forget[0]
    forget_f, retain_f = losses(forget_target="frozen")  # same first step (weights equal), then a fixed target
    assert forget_f[0] == forget[0] and retain_f[0] < 1e-10 and forget_f[1] != forget[1]
    # forget_guidance η: at the original weights the target is ε(c') + η·(ε(c') − ε(c)), so the first forget loss
    # is (1 + η)² times the plain one, with either forget_target
    for target in ("current", "frozen"):
        forget_g, _ = losses(forget_target=target, forget_guidance=1.5)
        assert forget_g[0] == pytest.approx(2.5**2 * forget[0], rel=1e-4)
    with pytest.raises(ValueError, match="forget_guidance must be >= 0"):
        SalUnConfig(forget_guidance=-1.0)
    with pytest.raises(ValueError, match="retain_target must be one of"):
        SalUnConfig(retain_target="noise")
    with pytest.raises(ValueError, match="forget_target must be one of"):
        SalUnConfig(forget_target="base")
    with pytest.raises(ValueError, match="num_retain"):
        SalUnConfig(num_retain=0)  # 0 is an error, not "the default"


def test_doco_prior_target_frozen_starts_at_zero(tiny_pipe):
    # no anchor-seeking term: its frozen forward would join the real side's, and a larger batch rounds differently
    cfg = {**FAST_CONFIGS["doco"], "steps": 3, "warmup_steps": 1, "lr": 1e-2, "null_weight": 0.0, "anchor_weight": 0.0}

    def priors(**options):
        history = LossHistory()
        erasekit.erase(tiny_pipe, "doco", "a cat", anchor="a dog", callbacks=[history], **cfg, **options)
        return [h["prior"] for h in history.history if "prior" in h]

    frozen = priors()  # the default, 'frozen': the weights are still the original ones at the first generator step
    assert frozen[0] == 0.0 and frozen[1] > 0.0
    assert priors(prior_target="data")[0] > 0.0  # the paper's: the sampled noise, never matched exactly
    with pytest.raises(ValueError, match="prior_target must be one of"):
        DoCoConfig(prior_target="noise")


def test_doco_retain_prompts_join_the_prior_loss_on_their_own_samples(tiny_pipe, monkeypatch):
    """The prior's trained forward sees the anchor batch plus as many retain samples, with the retain prompts'
    embeddings; with the frozen target their part of the prior loss starts at zero like the anchor's."""
    cfg = {**FAST_CONFIGS["doco"], "steps": 3, "warmup_steps": 1, "lr": 1e-2, "batch_size": 2, "null_weight": 0.0}
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


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("salun", {"steps": 12, "lr": 1e-4, "num_forget": 2, "num_retain": 2}),
        ("doco", {"steps": 12, "lr": 1e-4, "warmup_steps": 1, "fake_from": "concept", "anchor": "a dog"}),
    ],
)
def test_null_weight_keeps_the_unconditional_prediction_in_place(method, options, tiny_pipe):
    """The null loss starts at zero (the original weights' own prediction), and a heavy weight holds ε(x_t, '')
    nearer the original than a negligible one does on the same inputs (same seed and lr)."""
    cfg = {**FAST_CONFIGS[method], **options}
    anchor = cfg.pop("anchor", None)

    def null_losses(weight: float) -> list[float]:
        history = LossHistory()
        erasekit.erase(tiny_pipe, method, "a cat", anchor=anchor, callbacks=[history], null_weight=weight, **cfg)
        return [h["null"] for h in history.history if "null" in h]

    logged, held = null_losses(1e-9), null_losses(100.0)  # 1e-9: the term is computed and logged, not felt
    assert logged[0] < 1e-10 and held[0] < 1e-10 and len(logged) == len(held) >= 10
    assert sum(held[1:]) < 0.5 * sum(logged[1:])
    config_class = SalUnConfig if method == "salun" else DoCoConfig
    with pytest.raises(ValueError, match="null_weight must be >= 0"):
        config_class(null_weight=-1.0)


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_salun_misaligned_share_draws_forget_inputs_from_the_misaligned_samples(share, tiny_pipe, monkeypatch):
    import erasekit.methods.salun as salun_module

    seen: list[torch.Tensor] = []
    real_noisy = salun_module.noisy

    def spy(handle, x0, generators, *args, **kwargs):
        seen.append(x0.clone())
        return real_noisy(handle, x0, generators, *args, **kwargs)

    monkeypatch.setattr(salun_module, "noisy", spy)
    options = {
        "misaligned_prompts": ["a dog", "a cow"],
        "pair_misaligned": True,
        "forget_prompts": ["a cat", "a lynx"],
    }
    cfg = SalUnConfig(**{**FAST_CONFIGS["salun"], "steps": 2, "batch_size": 2, "misaligned_share": share, **options})
    method = SalUn(cfg)
    method.erase(DiffusionHandle(tiny_pipe), "a cat")
    ctx = method._ctx
    assert ("misaligned_x0" in ctx) == bool(share) and (not share or ctx["misaligned_x0"].shape == ctx["forget"].shape)
    source = ctx["misaligned_x0"] if share else ctx["forget"]
    forget_inputs = [x for x in seen if x.shape[0] == 2][-4::2]  # per step: the forget batch, then the retain's
    assert all(any(torch.equal(row, s) for s in source) for x in forget_inputs for row in x)
    with pytest.raises(ValueError, match="misaligned_share must be in"):
        SalUnConfig(misaligned_share=1.5)


# ---- resume (SalUn's mask and DoCo's discriminator live in extra_state) ---------------------------------------


class _Crash(Callback):
    def on_step_end(self, state, logs):
        if state.step == 3:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("doco", {}),  # a style's defaults: the fake side from either latent, the null term
        ("doco", {"fake_from": "anchor", "null_weight": 0.0, "retain_prompts": ["a dog", "a cow"]}),
        ("salun", {"misaligned_share": 0.5, "null_weight": 1.0}),
    ],
)
def test_resume_gives_the_uninterrupted_result(method, options, tiny_pipe, tmp_path):
    fast = {**FAST_CONFIGS[method], "steps": 4, **options}
    full = erasekit.erase(tiny_pipe, method, "a cat", **fast)
    ckpt = {"checkpoint_dir": str(tmp_path), "checkpoint_every": 2}
    with pytest.raises(KeyboardInterrupt):
        erasekit.erase(tiny_pipe, method, "a cat", callbacks=[_Crash()], **fast, **ckpt)
    history = LossHistory()
    resumed = erasekit.erase(tiny_pipe, method, "a cat", callbacks=[history], resume=True, **fast, **ckpt)
    assert [h["step"] for h in history.history] == [3, 4]
    assert resumed.deltas.keys() == full.deltas.keys()
    for k, d in full.deltas.items():
        assert torch.equal(resumed.deltas[k].to_dense(), d.to_dense()), k


# ---- DoCo -----------------------------------------------------------------------------------------------------


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
    from erasekit.methods.doco import DoCo, DoCoConfig

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
    assert DoCo(DoCoConfig(num_anchor=2)).paired_prompts("a painting", "a cat") == (["a painting"] * 2, ["a cat"] * 2)
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


def test_doco_timestep_range_bounds_every_training_timestep(tiny_pipe, monkeypatch):
    seen: list[int] = []
    real_predict = DiffusionHandle.predict_noise

    def spy(self, x_t, t, emb, params=None):
        seen.extend(int(v) for v in t.reshape(-1))
        return real_predict(self, x_t, t, emb, params=params)

    cfg = {**FAST_CONFIGS["doco"], "steps": 3, "warmup_steps": 1, "timestep_range": [0.6, 0.8]}
    n = int(tiny_pipe.scheduler.config.num_train_timesteps)
    monkeypatch.setattr(DiffusionHandle, "predict_noise", spy)
    original = erasekit.methods.doco.DoCo.prepare

    def prepare_then_watch(self, state):  # the anchor samples' sampler timesteps are not training timesteps
        original(self, state)
        seen.clear()

    monkeypatch.setattr(erasekit.methods.doco.DoCo, "prepare", prepare_then_watch)
    erasekit.erase(tiny_pipe, "doco", "a cat", **cfg)
    assert seen and all(round(0.6 * n) <= v < round(0.8 * n) for v in seen)
    for bad in ([0.5, 0.5], [0.2], [-0.1, 1.0], [0.0, 1.5], "all"):
        with pytest.raises(ValueError, match="timestep_range"):
            DoCoConfig(timestep_range=bad)


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


def test_doco_kind_settings_apply_where_left_at_auto(tiny_pipe):
    """A style gets the fake side from either latent, the null term and the anchor-seeking term, an object the
    paper's settings; a value the user sets wins over the kind's."""
    assert (DoCoConfig().resolved("fake_from"), DoCoConfig().resolved("null_weight")) == ("both", 1.0)
    obj = DoCoConfig(concept_kind="object")
    assert (obj.resolved("fake_from"), obj.resolved("null_weight")) == ("anchor", 0.0)
    assert (DoCoConfig().resolved("anchor_weight"), obj.resolved("anchor_weight")) == (10.0, 0.0)
    assert DoCoConfig(concept_kind="object", anchor_weight=2.0).resolved("anchor_weight") == 2.0
    assert DoCoConfig(fake_from="concept", null_weight=0.5).resolved("null_weight") == 0.5
    assert DoCoConfig(fake_from="concept").resolved("fake_from") == "concept"
    assert DoCoConfig().to_dict()["fake_from"] == "auto"  # saved configs stay per-kind, not the style's values

    def run(**options) -> tuple[dict, list[dict]]:
        method, history = DoCo(DoCoConfig(**{**FAST_CONFIGS["doco"], "steps": 3, **options})), LossHistory()
        method.erase(DiffusionHandle(tiny_pipe), "a cat", anchor="an animal", callbacks=[history])
        return method._ctx, history.history

    ctx, logs = run()
    assert "concept" in ctx and any("null" in h for h in logs) and any("anchor" in h for h in logs)
    ctx, logs = run(concept_kind="object")
    assert "concept" not in ctx and not any("null" in h or "anchor" in h for h in logs)


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

    only_anchor = {"adv_weight": 0.0, "prior_weight": 0.0, "steps": 41, "lr": 1e-3, "surgery": "none"}
    patch = erasekit.erase(tiny_pipe, "doco", "a cat", anchor="a dog", **{**cfg, **only_anchor})
    with patch.applied(tiny_pipe):
        after = concept_gap()
    assert after < 0.25 * logged[0]
    with pytest.raises(ValueError, match="anchor_weight"):
        DoCoConfig(anchor_weight=-1.0)


# ---- the handle operations the diffusion methods use instead of the pipeline's parts ---------------------------


def test_handle_x0_and_latent_shape_follow_the_scheduler_and_unet(tiny_handle, tiny_pipe):
    gen = torch.Generator().manual_seed(0)
    shape = tiny_handle.latent_shape()
    assert shape == tuple(tiny_handle.initial_latents(1, gen).shape[1:])
    assert shape[0] == tiny_pipe.unet.config.in_channels and shape[1] == tiny_pipe.unet.config.sample_size
    x0, eps = torch.randn(3, *shape, generator=gen), torch.randn(3, *shape, generator=gen)
    t = torch.tensor([10, 500, 990])
    x_t = tiny_pipe.scheduler.add_noise(x0, eps, t)
    torch.testing.assert_close(tiny_handle.predicted_x0(x_t, t, eps), x0, rtol=1e-4, atol=1e-3)


def test_handle_text_operations_match_the_tokenizer(tiny_handle, tiny_pipe):
    tok = tiny_pipe.tokenizer
    assert tiny_handle.token_ids("a cat") == tok("a cat", add_special_tokens=False).input_ids
    assert tiny_handle.max_prompt_tokens == tok.model_max_length
    assert tiny_handle.text_embedding_dim == tiny_handle.encode_prompts(["a"]).shape[-1]
    words = [w for w in tiny_handle.vocabulary_words() if w.isascii() and w.isalpha()]
    vocab = tok.get_vocab()
    assert words == sorted(t[:-4] for t in vocab if t.endswith("</w>") and t[:-4].isascii() and t[:-4].isalpha())


# ---- UCE ------------------------------------------------------------------------------------------------------


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
