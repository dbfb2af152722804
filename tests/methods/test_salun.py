"""SalUn-specific behaviour on the tiny pipeline (the shared suite covers the rest), and what SalUn and DoCo share:
the null term and resuming with their extra state."""

import pytest
import torch
from conftest import FAST_CONFIGS

import erasekit
from erasekit.methods import Callback, LossHistory
from erasekit.methods.config import RunConfig
from erasekit.methods.doco import DoCoConfig
from erasekit.methods.salun import SalUn, SalUnConfig
from erasekit.models import DiffusionHandle
from erasekit.models.masked import MaskedWeights
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
    # batched and single encodings may differ in the last bit (CPU kernels block a batch of 2 differently)
    same = lambda a, b: torch.allclose(a, b, rtol=0, atol=1e-5)  # noqa: E731
    assert seen["embs"] and all(same(e, concept) or same(e, empty) for e in seen["embs"])
    assert any(same(e, empty) for e in seen["embs"])  # ∅ is the empty prompt, not the concept

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


def test_training_the_masked_entries_gives_the_full_copys_patch_bit_for_bit(tiny_pipe):
    cfg = {**FAST_CONFIGS["salun"], "steps": 3, "lr": 1e-2, "mask_ratio": 0.3}
    full = erasekit.erase(tiny_pipe, "salun", "a cat", preset="none", optimizer_states="full", **cfg)
    copy = erasekit.erase(tiny_pipe, "salun", "a cat", preset="none", masked_training="off", **cfg)
    cfg.pop("progress")
    method = SalUn(SalUnConfig(**cfg), run=RunConfig(masked_training="on", progress=False))
    seen = {}

    class Spy(Callback):
        def on_step_end(self, state, logs):
            seen["weights"] = state.weights
            seen["sizes"] = {k: p.numel() for k, p in state.params.items()}
            seen["moments"] = {k: state.optimizer.state[p]["exp_avg"].numel() for k, p in state.params.items()}

    masked = method.erase(tiny_pipe, "a cat", callbacks=[Spy()])
    assert isinstance(seen["weights"], MaskedWeights)
    counts = {k: int(m.sum()) for k, m in method.mask.items()}
    assert seen["sizes"] == counts and seen["moments"] == counts  # 30 % of the entries, not all
    for other in (full, copy):
        assert other.deltas.keys() == masked.deltas.keys()
        for key, d in other.deltas.items():
            assert torch.equal(d.indices, masked.deltas[key].indices), key
            assert torch.equal(d.values, masked.deltas[key].values), key
    assert all(isinstance(p, torch.nn.Parameter) for p in tiny_pipe.unet.parameters())


def test_masked_training_auto_keeps_full_copies_for_a_small_model(tiny_pipe):
    seen = {}

    class Spy(Callback):
        def on_step_end(self, state, logs):
            seen["weights"], seen["shapes"] = state.weights, {k: p.shape for k, p in state.params.items()}

    method = SalUn(SalUnConfig(**{k: v for k, v in FAST_CONFIGS["salun"].items() if k != "progress"}))
    method.run.progress = False
    method.erase(tiny_pipe, "a cat", callbacks=[Spy()])
    assert method.run.masked_training == "auto" and seen["weights"] is None
    assert seen["shapes"] == {k: method.mask[k].shape for k in seen["shapes"]}  # full copies


def test_masked_weights_build_each_weight_inside_its_module_and_keep_no_copy_for_backward(tiny_pipe):
    handle = DiffusionHandle(tiny_pipe)
    base = handle.named_parameters()
    keys = [k for k in base if k.startswith("unet.") and base[k].ndim >= 2]
    gen = torch.Generator().manual_seed(0)
    masks = {k: torch.rand(base[k].shape, generator=gen) < 0.4 for k in keys}
    values = {k: (base[k].detach()[masks[k]] + 0.01).requires_grad_(True) for k in keys}
    full = {k: base[k].detach().masked_scatter(masks[k], values[k].detach()).requires_grad_(True) for k in keys}
    lazy = MaskedWeights(base, masks, values)
    latents = torch.randn(2, 4, 8, 8, generator=gen)
    emb = handle.encode_prompts(["a cat", "a dog"])
    t = torch.tensor([10, 500])

    built: list[int] = []
    real_build = MaskedWeights.build

    def counting_build(self, key, grad=True):
        built.append(grad)
        return real_build(self, key, grad)

    expected = handle.predict_noise(latents, t, emb, params=full)
    expected.square().mean().backward()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MaskedWeights, "build", counting_build)
        out = handle.predict_noise(latents, t, emb, params=lazy)
        assert built.count(True) == len(keys)  # each weight built once in forward
        out.square().mean().backward()
    assert torch.equal(out, expected)
    assert built.count(False) > 0  # backward rebuilt the weights autograd would have kept
    for k in keys:
        assert torch.equal(values[k].grad, full[k].grad[masks[k]]), k
    assert all(isinstance(p, torch.nn.Parameter) for p in tiny_pipe.unet.parameters())  # the module's own again
    assert torch.equal(handle.named_parameters()[keys[0]], base[keys[0]])


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
    assert torch.allclose(emb[1], handle.encode_prompts(["a blue cat"])[0], rtol=0, atol=1e-5) and len(emb) == 4
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
    assert torch.allclose(
        paired._ctx["misaligned_emb"][1], handle.encode_prompts(["a blue car"])[0], rtol=0, atol=1e-5
    )
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

    forget, retain = losses(retain_target="frozen")  # the original model's prediction -> 0 before any update (up to
    assert retain[0] < 1e-10 and retain[1] > 1e-6  # float rounding: target and prediction are batched differently)
    forget_d, retain_d = losses()  # the default, the noise: never 0, and the first step's forget is shared
    assert retain_d[0] > 1e-6 and forget_d[0] == forget[0]
    with pytest.raises(ValueError, match="retain_target must be one of"):
        SalUnConfig(retain_target="noise")
    with pytest.raises(ValueError, match="num_retain"):
        SalUnConfig(num_retain=0)  # 0 is an error, not "the default"


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("salun", {"steps": 12, "lr": 1e-4, "num_forget": 2, "num_retain": 2}),
        (
            "doco",
            {
                "steps": 12,
                "lr": 1e-4,
                "warmup_steps": 1,
                "fake_from": "concept",
                "prior_target": "frozen",
                "anchor": "a dog",
            },
        ),
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


# ---- shared with DoCo: resume (SalUn's mask and DoCo's discriminator live in extra_state) ----------------------


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
        ("salun", {"robust_every": 3, "robust_attack_steps": 2}),  # the attack's tokens come back with the run
        ("salun", {"null_weight": 1.0, "masked_training": "on"}),  # the values follow the saved mask
        ("salun", {"robust_every": 3, "robust_attack_steps": 2, "masked_training": "on"}),
        ("doco", {"robust_every": 3, "robust_attack_steps": 2}),
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


def test_a_checkpoint_of_masked_training_is_refused_by_a_full_copy_run_with_the_fix(tiny_pipe, tmp_path):
    fast = {**FAST_CONFIGS["salun"], "steps": 4, "checkpoint_dir": str(tmp_path), "checkpoint_every": 2}
    with pytest.raises(KeyboardInterrupt):
        erasekit.erase(tiny_pipe, "salun", "a cat", callbacks=[_Crash()], masked_training="on", **fast)
    with pytest.raises(ValueError, match="another masked_training or optimizer_states.*same run options"):
        erasekit.erase(tiny_pipe, "salun", "a cat", resume=True, masked_training="off", **fast)
