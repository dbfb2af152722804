"""Several concepts in one run (salun, doco, esd, uce) and sequential erasure (a patch made on a patched model,
returned relative to the original base), on the tiny Stable Diffusion pipeline; the MiniCanvas plan for several
targets."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST_CONFIGS

import erasekit
from erasekit.methods import TrainingConfig, get_method
from erasekit.methods.config import TRAINING_FIELDS
from erasekit.models import load_model

METHODS = ("salun", "doco", "esd", "uce")
BOTH = ["a cat", "a dog"]


def fast(method: str) -> dict:
    options = dict(FAST_CONFIGS[method])
    if not issubclass(get_method(method).config_class, TrainingConfig):
        options = {k: v for k, v in options.items() if k not in TRAINING_FIELDS}
    if method == "uce":
        options["preserve"] = ["a bird"]
    return options


def _params(pipe) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in load_model(pipe).named_parameters().items()}


def _differs(a, b) -> bool:
    keys = set(a.deltas) | set(b.deltas)
    return any(
        k not in a.deltas or k not in b.deltas or not torch.equal(a.deltas[k].to_dense(), b.deltas[k].to_dense())
        for k in keys
    )


@pytest.mark.parametrize("method", METHODS)
def test_several_concepts_in_one_run(method, tiny_pipe):
    joint = erasekit.erase(tiny_pipe, method, BOTH, **fast(method))
    assert joint.metadata["concept"] == BOTH
    assert joint.num_changed > 0 and all(torch.isfinite(d.to_dense()).all() for d in joint.deltas.values())
    single = erasekit.erase(tiny_pipe, method, "a cat", **fast(method))
    assert single.metadata["concept"] == "a cat"
    assert _differs(joint, single), "the second concept changed nothing"
    again = erasekit.erase(tiny_pipe, method, BOTH, **fast(method))
    assert not _differs(joint, again), "same seed, same concepts -> same patch"


def test_uce_concept_list_equals_the_erase_option(tiny_pipe):
    listed = erasekit.erase(tiny_pipe, "uce", BOTH, **fast("uce"))
    option = erasekit.erase(tiny_pipe, "uce", "a cat", erase=["a dog"], **fast("uce"))
    assert not _differs(listed, option)


def test_esd_draws_every_concept(tiny_pipe, monkeypatch):
    from erasekit.models import DiffusionHandle

    seen = []
    original = DiffusionHandle.sample_latents

    def spy(self, cond, *args, **kwargs):
        seen.append(cond[:, 2].detach().clone())  # the token after "a" (cat or dog) tells them apart
        return original(self, cond, *args, **kwargs)

    monkeypatch.setattr(DiffusionHandle, "sample_latents", spy)
    erasekit.erase(tiny_pipe, "esd", BOTH, **{**fast("esd"), "steps": 8, "batch_size": 2})
    rows = torch.cat(seen)
    distinct = {tuple(r.tolist()) for r in rows.round(decimals=4)}
    assert len(distinct) == 2, "ESD must train on both concepts"


def test_sequential_erasure_is_one_patch_relative_to_the_base(tiny_pipe, tmp_path):
    base = _params(tiny_pipe)
    first = erasekit.erase(tiny_pipe, "esd", "a cat", **fast("esd"))
    both = erasekit.erase(tiny_pipe, "esd", "a dog", on=first, **fast("esd"))
    assert _params(tiny_pipe).keys() == base.keys()
    assert all(torch.equal(v, base[k]) for k, v in _params(tiny_pipe).items()), "the caller's model is unchanged"
    assert both.metadata["method"] == "sequence"
    assert [m["concept"] for m in both.metadata["sequence"]] == ["a cat", "a dog"]
    with first.applied(tiny_pipe):  # the second erasure alone, made on the patched model
        second = erasekit.erase(tiny_pipe, "esd", "a dog", **fast("esd"))
        with second.applied(tiny_pipe, check_fingerprint=False):
            in_turn = _params(tiny_pipe)
    with both.applied(tiny_pipe):  # applies to the original base: its fingerprint is the base's
        combined = _params(tiny_pipe)
    for key in in_turn:
        torch.testing.assert_close(combined[key], in_turn[key], rtol=0, atol=1e-6)
    path = both.save(tmp_path / "both.safetensors")
    third = erasekit.erase(tiny_pipe, "esd", "a bird", on=path, **fast("esd"))
    assert [m["concept"] for m in third.metadata["sequence"]] == ["a cat", "a dog", "a bird"]


def test_cli_repeated_concept_and_patch_on_patch(tiny_pipe, tmp_path):
    from erasekit.cli.main import main

    two, three = tmp_path / "two.safetensors", tmp_path / "three.safetensors"
    common = ["erase", "--method", "uce", "--set", "preserve=[a bird]"]
    assert main([*common, "--concept", "a cat", "--concept", "a dog", "--out", str(two)]) == 0
    assert erasekit.load_patch(two).metadata["concept"] == BOTH
    assert main([*common, "--concept", "a fish", "--on", str(two), "--out", str(three)]) == 0
    meta = erasekit.load_patch(three).metadata
    assert [m["concept"] for m in meta["sequence"]] == [BOTH, "a fish"]
    config = tmp_path / "c.yaml"
    config.write_text("method: uce\nconcept: [a cat, a fish]\npreserve: [a bird]\n")
    assert main(["erase", "--method", "uce", "--config", str(config), "--out", str(tmp_path / "y.safetensors")]) == 0
    assert erasekit.load_patch(tmp_path / "y.safetensors").metadata["concept"] == ["a cat", "a fish"]
    assert main(["erase", "--method", "uce", "--out", str(tmp_path / "z.safetensors")]) == 2


def test_minicanvas_plan_for_several_targets():
    from erasekit.presets import resolve_erasure
    from erasekit_worlds.minicanvas.plans import erasure_plan

    concepts, anchor, plan = erasure_plan("salun", ["style:Ink", "style:Pixel"])
    assert concepts == ["Ink style", "Pixel style"] and anchor == "Photo style"
    assert [p.endswith("Ink style.") for p in plan["forget_prompts"][:4]] == [True, False, True, False]
    assert len(plan["misaligned_prompts"]) == len(plan["forget_prompts"])
    assert not any(("Ink style" in p or "Pixel style" in p) for p in plan["retain_prompts"])
    _, _, uce = erasure_plan("uce", ["object:apple", "object:car"])
    assert "apple" not in uce["preserve"] and "car" not in uce["preserve"] and uce["preserve"]
    resolved = resolve_erasure("doco", "minicanvas", ["Ink style", "Pixel style"])
    assert resolved.targets == ["style:Ink", "style:Pixel"] and resolved.concept == ["Ink style", "Pixel style"]
    assert resolved.config.fake_from == "both" and len(resolved.config.concept_prompts) == 2 * len(
        erasure_plan("doco", "style:Ink")[2]["concept_prompts"]
    )
    with pytest.raises(ValueError, match="different kinds"):
        resolve_erasure("salun", "minicanvas", ["Ink style", "apple"])
