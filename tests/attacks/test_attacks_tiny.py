"""Every attack on tiny random models: numbers for the erased, base and gold models, models left as found, the
planted-trigger known answer of the prompt attack, token injection, and StyleGAN relearning/quantization."""

import pytest
import torch
from eval_fixtures import tiny_suite

import erasekit
from erasekit.attacks import AttributeJudge
from erasekit.attacks.base import AttackContext
from erasekit.attacks.prompt import PromptAttack
from erasekit.models import load_model

TINY_BUDGETS = {
    "relearn": {"schedule": [0, 2], "k": 2, "batch_size": 2},
    "prompt": {"steps": 2, "batch_size": 2},
    "inversion": {"steps": 2, "k": 2, "batch_size": 2},
    "probe": {"folds": 2},
}


@pytest.fixture(scope="module")
def tiny():
    handle = load_model("tiny-sd")
    patch = erasekit.erase(handle, "esd", "Ink style", steps=2, progress=False)
    return handle, patch


def _state(handle):
    return {k: v.detach().clone() for k, v in handle.named_parameters().items()}


def test_every_attack_reports_erased_base_and_gold_and_leaves_models_untouched(tiny, tmp_path):
    handle, patch = tiny
    gold = load_model("tiny-sd")
    before, gold_before = _state(handle), _state(gold)
    report = erasekit.attack(
        handle,
        patch,
        tiny_suite(with_clip=False),
        "style:Ink",
        seeds=[0],
        gold=gold,
        steps=2,
        configs=TINY_BUDGETS,
        progress=False,
    )
    assert set(report.results) == {"relearn", "prompt", "inversion", "quantize", "probe"}
    assert set(report["relearn"]["rates"]) == {"patched", "base", "gold"}
    assert set(report["relearn"]["rates"]["patched"]) == {"0", "2"}
    assert set(report["quantize"]["rates"]["patched"]) == {"none", "fp16", "bf16", "int8", "nf4"}
    assert set(report["prompt"]["asr"]) == set(report["inversion"]["asr"]) == {"patched", "base", "gold"}
    assert report["prompt"]["found_prompts"]["patched"].startswith("A apple image in Ink style. ")
    assert set(report["probe"]["cka"]) == {"patched_vs_base", "patched_vs_gold", "base_vs_gold"}
    assert report["probe"]["cka"]["base_vs_gold"] == pytest.approx(1.0)  # the same weights
    for name, value in TINY_BUDGETS.items():  # every budget is in the report
        assert {k: report.configs[name][k] for k in value} == {
            k: sorted(v) if isinstance(v, list) else v for k, v in value.items()
        }
    after = _state(handle)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(gold_before[k], v) for k, v in _state(gold).items())
    assert all(p.grad is None for p in handle.named_parameters().values())
    data = report.to_dict()
    assert data["run"]["seeds"] == [0] and data["attacks"]["relearn"]["config"]["k"] == 2
    assert "| relearn |" in report.to_markdown()
    report.save_grid(tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0


def test_plain_rates_are_measured_with_the_patch_applied_once(tiny, monkeypatch):
    """Relearning reads the erased model's plain rate as its step 0: measured inside the erased model's block, the
    patch would be stacked on itself (base + 2 delta) and the erasure would look stronger than it is."""
    handle, patch = tiny
    key = next(iter(patch.deltas))
    base = handle.named_parameters()[key].detach().float().clone()
    once = base + patch.deltas[key].to_dense().float().reshape(base.shape)
    seen, real_plain, real_rate = {}, AttackContext.plain_rate, AttackContext.concept_rate

    def plain_rate(self, variant):
        self.cache.setdefault("measuring", []).append(variant)
        try:
            return real_plain(self, variant)
        finally:
            self.cache["measuring"].pop()

    def concept_rate(self, model, pairs=None):
        if self.cache.get("measuring"):
            seen[self.cache["measuring"][-1]] = model.named_parameters()[key].detach().float().clone()
        return real_rate(self, model, pairs)

    monkeypatch.setattr(AttackContext, "plain_rate", plain_rate)
    monkeypatch.setattr(AttackContext, "concept_rate", concept_rate)
    erasekit.attack(
        handle,
        patch,
        tiny_suite(with_clip=False),
        "style:Ink",
        ["relearn"],
        [0],
        steps=2,
        configs={"relearn": TINY_BUDGETS["relearn"]},
        progress=False,
    )
    assert torch.equal(seen["patched"], once) and torch.equal(seen["base"], base)
    ctx = AttackContext(handle, patch, None, "style:Ink", ["x"], [0])
    with ctx.model("patched"), pytest.raises(RuntimeError, match="inside model"):
        with ctx.model("patched"):
            pass
    with ctx.model("patched"), pytest.raises(RuntimeError, match="inside model"):
        with ctx.model("base"):
            pass
    assert torch.equal(handle.named_parameters()[key].detach().float(), base)  # every block left as found


def test_quantization_diagnosis_sees_a_delta_smaller_than_the_bins(tiny):
    handle, patch = tiny
    report = erasekit.attack(
        handle,
        patch * 1e-6,
        tiny_suite(with_clip=False),
        "style:Ink",
        ["quantize"],
        seeds=[0],
        steps=2,
        progress=False,
    )
    diag = report["quantize"]["delta_vs_bin"]
    assert diag["int8"]["below_half_bin"] == 1.0 and abs(diag["int8"]["delta_retained"]) < 0.05
    assert diag["nf4"]["median_ratio"] < diag["int8"]["median_ratio"] < diag["fp16"]["median_ratio"]


def test_injected_tokens_replace_one_input_embedding_and_restore(tiny):
    handle, _ = tiny
    (tid,) = handle.token_ids("zebra")
    table = handle.pipe.text_encoder.get_input_embeddings().weight
    vector = torch.randn(table.shape[1], generator=torch.Generator().manual_seed(0))
    plain = handle.encode_prompts(["a zebra"])
    with handle.injected_tokens({tid: vector}):
        injected = handle.encode_prompts(["a zebra"])
    with torch.no_grad():
        saved = table[tid].clone()
        table[tid] = vector
        expected = handle.encode_prompts(["a zebra"])
        table[tid] = saved
    assert torch.allclose(injected, expected, atol=1e-6)
    assert not torch.allclose(injected, plain)
    assert torch.equal(handle.encode_prompts(["a zebra"]), plain)  # the hook is gone


class PlantedTrigger(PromptAttack):
    """The prompt attack with a planted objective: the conditioning must match that of the prompt followed by the
    trigger word twice. Everything else (token injection, straight-through projection on the vocabulary, the found
    suffix as text, its ASR) is the attack's own."""

    def objective(self, ctx, handle, x0, cond, uncond, gens):
        wanted = ctx.cache["trigger_cond"].expand_as(cond)
        return -(cond - wanted).square().mean()


def _wide_text_pipeline():
    """tiny-sd with a 32-wide text encoder: in 8 dimensions many of the 49k tokens point the same way."""
    from erasekit.models import tiny

    text = tiny.tiny_text_encoder(hidden_size=32)
    return tiny.assemble_pipeline(
        tiny.tiny_unet(cross_attention_dim=32), tiny.tiny_vae(), text, tiny._cached_tokenizer()
    )


def test_prompt_attack_finds_a_planted_trigger_token():
    from erasekit.attacks.judge import ClassifierJudge
    from erasekit.patch import DenseDelta

    handle = load_model(_wide_text_pipeline())
    (tid,) = handle.token_ids("zebra")
    table = handle.pipe.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        # a text encoder that passes each token through its own row (attention and MLP outputs zeroed, residual
        # only), so the planted objective has one clear optimum; then the trigger's embedding gets a direction of
        # its own
        layers = [m for m in handle.pipe.text_encoder.modules() if hasattr(m, "self_attn") and hasattr(m, "mlp")]
        assert layers
        for layer in layers:
            for linear in (layer.self_attn.out_proj, layer.mlp.fc2):
                linear.weight.zero_()
                linear.bias.zero_()
        table[tid] = (
            torch.randn(32, generator=torch.Generator().manual_seed(7)) * 10 * table.norm(dim=1).mean() / 32**0.5
        )
    key = "unet.conv_out.bias"
    patch = erasekit.ErasurePatch({key: DenseDelta(torch.full_like(handle.named_parameters()[key], 1e-3))})
    suite = tiny_suite(with_clip=False)
    prompt = "A apple image in Ink style."
    ctx = AttackContext(
        handle, patch, ClassifierJudge(suite.style_classifier, "Ink"), "style:Ink", [prompt], [0], steps=2
    )
    ctx.cache["trigger_cond"] = handle.encode_prompts([f"{prompt} zebra zebra"])
    attack = PlantedTrigger(PlantedTrigger.config_class(tokens=2, steps=60, batch_size=1, modes=["discrete"]))
    result = attack.run(ctx)
    assert result["variants"]["base"]["discrete"]["suffix"] == "zebra zebra"
    assert result["found_prompts"]["patched"] == f"{prompt} zebra zebra"


def test_attacks_refuse_bad_input_before_any_work(tiny):
    handle, patch = tiny
    suite = tiny_suite(with_clip=False)
    with pytest.raises(ValueError, match="not in suite"):
        erasekit.attack(handle, patch, suite, "style:Watercolor", ["quantize"], progress=False)
    with pytest.raises(ValueError, match="Unknown attack"):
        erasekit.attack(handle, patch, suite, "style:Ink", ["quantise"], progress=False)
    with pytest.raises(ValueError, match="not among the attacks run"):
        erasekit.attack(handle, patch, suite, "style:Ink", ["quantize"], configs={"relearn": {"k": 2}}, progress=False)
    with pytest.raises(ValueError, match="sdxl|SDXL"):
        sdxl = load_model("tiny-sdxl")
        erasekit.attack(sdxl, erasekit.ErasurePatch({}, {}), suite, "style:Ink", ["prompt"], progress=False)


# ---- StyleGAN --------------------------------------------------------------------------------------------------


class TinyAttributeClassifier(torch.nn.Module):
    """'glasses' when the image's mean red exceeds its mean blue (a rule a generator can learn in a few steps)."""

    binary = ("glasses",)
    hair = ()

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, images):
        return (self.scale * (images[:, 0].mean((1, 2)) - images[:, 2].mean((1, 2))))[:, None]

    def indicators(self, images):
        return {"glasses": self(images)[:, 0].detach() > 0}


def test_stylegan_relearn_and_quantize(tmp_path):
    from erasekit.eval.gan import GanSuite
    from erasekit.models.stylegan import Generator, StyleGAN2Config

    torch.manual_seed(0)
    G = Generator(
        StyleGAN2Config(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16, mapping_layers=2)
    )
    handle = load_model(G)
    key = next(k for k in handle.named_parameters() if k.startswith("generator.synthesis.") and k.endswith("weight"))
    patch = erasekit.ErasurePatch(
        {key: erasekit.patch.DenseDelta(torch.zeros_like(handle.named_parameters()[key]) + 1e-3)}
    )
    suite = GanSuite("tiny-faces", TinyAttributeClassifier(), ["glasses"], resolve=lambda s: s, prompts=lambda s: [s])
    report = erasekit.attack(
        handle,
        patch,
        suite,
        "glasses",
        seeds=range(16),
        configs={"relearn": {"schedule": [0, 5], "lr": 0.05, "params": "all"}},
        progress=False,
        check_fingerprint=False,
    )
    assert set(report.results) == {"relearn", "quantize"}
    curve = report["relearn"]["rates"]["patched"]
    assert curve["5"] > curve["0"]  # the judge's gradient teaches the attribute
    assert set(report["quantize"]["rates"]["base"]) == {"none", "fp16", "bf16", "int8", "nf4"}
    assert isinstance(AttributeJudge(suite.classifier, "glasses").log_prob(torch.rand(2, 3, 16, 16)), torch.Tensor)
