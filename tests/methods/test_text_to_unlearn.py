"""Text-to-Unlearn on a tiny random StyleGAN2 with a tiny random CLIP: layer selection, prompts, terms, errors.

The shared invariants (caller unchanged, bit-exact remove, save/load, seeds, YAML) run in
tests/methods/test_methods_suite.py; the pure math (directional loss, retention terms, layer ranking) in tests/ops/.
"""

from types import SimpleNamespace

import pytest
import torch
from conftest import FAST_CONFIGS

import erasekit
from erasekit.methods import LossHistory
from erasekit.methods.text_to_unlearn import TextToUnlearnConfig, concept_parts, prompt_pair
from erasekit.models import StyleGANHandle


def _erase(generator, clip_dir, concept="glasses", callbacks=(), **extra):
    cfg = {**FAST_CONFIGS["text_to_unlearn"], "clip": str(clip_dir), **extra}
    return erasekit.erase(generator, "text_to_unlearn", concept, callbacks=callbacks, **cfg)


# ---------------------------------------------------------------------------------------------------- pure functions


def test_prompt_pairs_and_concept_parts():
    assert prompt_pair("glasses", "a face") == ("a face with glasses", "a face without glasses")
    assert prompt_pair("a smiling face", "a face") == ("a smiling face", "a face")
    assert prompt_pair("a beard", "a face", anchor="a clean-shaven face") == (
        "a face with a beard",
        "a clean-shaven face",
    )
    assert concept_parts("glasses, a beard ,") == ["glasses", "a beard"]
    assert concept_parts(["glasses", " hat "]) == ["glasses", "hat"]
    with pytest.raises(ValueError, match="empty"):
        concept_parts(" , ")


# ---------------------------------------------------------------------------------------------------- the method


def test_patch_touches_only_the_chosen_layers(tiny_generator, tiny_clip_dir):
    target = r"re:generator\.synthesis\.b8\.conv1\.weight"
    patch = _erase(tiny_generator, tiny_clip_dir, target=target)
    assert list(patch.deltas) == ["generator.synthesis.b8.conv1.weight"]
    assert patch.metadata["text_to_unlearn"]["layers"] == ["generator.synthesis.b8.conv1.weight"]
    mapping = _erase(tiny_generator, tiny_clip_dir, target="mapping", pixel_weight=0.0, feature_weight=0.0)
    assert mapping.deltas and all(k.startswith("generator.mapping.") for k in mapping.deltas)


def test_adaptive_selection_trains_exactly_k_layers(tiny_generator, tiny_clip_dir):
    patch = _erase(tiny_generator, tiny_clip_dir, layers="adaptive", adaptive_k=2, adaptive_iters=2)
    assert len(patch.deltas) == 2 and all(k.endswith(".weight") and ".conv" in k for k in patch.deltas)
    again = _erase(tiny_generator, tiny_clip_dir, layers="adaptive", adaptive_k=2, adaptive_iters=2)
    assert again.deltas.keys() == patch.deltas.keys()


def test_the_loss_goes_down(tiny_generator, tiny_clip_dir):
    """At step 0 the trainable copy equals the frozen one, so ΔI = 0 and the directional loss is exactly 1 (a random
    ΔI would average 1 too); training must align ΔI with the text direction while retention stays small."""
    history = LossHistory()
    _erase(tiny_generator, tiny_clip_dir, steps=20, batch_size=4, lr=0.002, callbacks=[history])
    losses = [h["loss"] for h in history.history]
    directional = [h["direction"] for h in history.history]
    # at step 0 each sample's directional loss is 1, weighted by its presence and averaged over the batch
    first = history.history[0]
    assert directional[0] == pytest.approx(first["presence"], abs=1e-5) and losses[0] == pytest.approx(directional[0])
    later = [h["direction"] / max(h["presence"], 1e-6) for h in history.history[-10:]]
    assert sum(later) / 10 < 0.8  # per unit of presence, the change now points along the text direction
    assert all(h["pixel"] >= 0 and h["feature"] > -1e-6 and 0 <= h["presence"] <= 1 for h in history.history)


def test_multi_attribute_concepts(tiny_generator, tiny_clip_dir):
    history = LossHistory()
    patch = _erase(tiny_generator, tiny_clip_dir, concept=["glasses", "a smiling face"], callbacks=[history])
    assert patch.metadata["concept"] == "glasses, a smiling face"
    prompts = patch.metadata["text_to_unlearn"]["prompts"]
    assert [tuple(p) for p in prompts] == [
        ("a face with glasses", "a face without glasses"),
        ("a smiling face", "a face"),
    ]
    single = _erase(tiny_generator, tiny_clip_dir, concept="glasses")
    assert any(not torch.equal(patch.deltas[k].to_dense(), d.to_dense()) for k, d in single.deltas.items())


def test_retain_holds_the_clip_probability_of_other_concepts(tiny_generator, tiny_clip_dir):
    """With ``retain``, the logged retention is the mean squared change of the kept concepts' CLIP probabilities:
    0 at step 0 (the copies are equal), positive once the copy moves; with no weight it is not computed."""
    runs = {}
    for weight in (0.0, 1000.0):
        history = LossHistory()
        _erase(
            tiny_generator,
            tiny_clip_dir,
            steps=15,
            lr=0.01,
            retain=["a smile", "red hair | blond hair"],
            retain_weight=weight,
            callbacks=[history],
        )
        runs[weight] = history.history
    free, held = runs[0.0], runs[1000.0]
    assert "retain" not in free[0]  # weightless: not computed
    assert held[0]["retain"] == pytest.approx(0.0, abs=1e-10) and max(h["retain"] for h in held) > 0
    patch = _erase(tiny_generator, tiny_clip_dir, retain=["a smile"])
    assert patch.metadata["config"]["retain"] == ["a smile"]
    with pytest.raises(ValueError, match="both erased and retained"):
        _erase(tiny_generator, tiny_clip_dir, concept="glasses, hat", retain=["a beard | Hat"])
    with pytest.raises(ValueError, match="retain must be"):
        TextToUnlearnConfig(retain="smile")
    with pytest.raises(ValueError, match="retain_weight"):
        TextToUnlearnConfig(retain_weight=-1.0)


def test_removal_term_is_logged_and_changes_the_patch(tiny_generator, tiny_clip_dir):
    """removal_weight adds softplus(CLIP log-odds of the attribute) on the trained samples, presence-weighted: logged
    (positive: softplus never reaches 0) and steering training elsewhere than the directional term alone."""
    history = LossHistory()
    plain = _erase(tiny_generator, tiny_clip_dir, steps=6, lr=0.01)
    pushed = _erase(tiny_generator, tiny_clip_dir, steps=6, lr=0.01, removal_weight=50.0, callbacks=[history])
    assert "removal" in history.history[0] and all(h["removal"] > 0 for h in history.history)
    assert any(not torch.allclose(plain.deltas[k].to_dense(), d.to_dense()) for k, d in pushed.deltas.items())
    with pytest.raises(ValueError, match="removal_weight"):
        TextToUnlearnConfig(removal_weight=-1.0)


def test_colour_term_holds_the_coarse_colour_layout_of_every_sample(tiny_generator, tiny_clip_dir):
    """colour_weight adds the squared change of the samples' cell-mean colours: 0 at the first step (the copies are
    equal), then logged and steering training; a heavy weight keeps the cell means closer than no weight does."""
    import torch.nn.functional as F

    runs, patches = {}, {}
    for weight in (0.0, 1e5):
        history = LossHistory()
        patches[weight] = _erase(
            tiny_generator, tiny_clip_dir, steps=8, lr=0.02, colour_weight=weight, colour_grid=2, callbacks=[history]
        )
        runs[weight] = history.history
    assert "colour" not in runs[0.0][0] and runs[1e5][0]["colour"] == pytest.approx(0.0, abs=1e-12)
    handle = StyleGANHandle(tiny_generator)
    ws = handle.sample_ws(list(range(8)))
    before = F.adaptive_avg_pool2d(handle.synthesize(ws), 2)
    moved = {}
    for weight, patch in patches.items():
        with patch.applied(handle), torch.no_grad():
            moved[weight] = float((F.adaptive_avg_pool2d(handle.synthesize(ws), 2) - before).square().mean())
    assert moved[1e5] < moved[0.0]
    with pytest.raises(ValueError, match="colour_weight"):
        TextToUnlearnConfig(colour_weight=-1.0)
    with pytest.raises(ValueError, match="colour_grid must be >= 1"):
        TextToUnlearnConfig(colour_grid=0)


def test_early_stop_waits_for_a_full_window_then_compares_sums():
    from erasekit.methods.text_to_unlearn import TextToUnlearn

    method = TextToUnlearn(TextToUnlearnConfig(stop_ratio=0.25, stop_window=3))
    state = SimpleNamespace(step=0, total_steps=100, should_stop=False, ctx={})

    def step(frozen, trained):
        logs = method._early_stop(state, torch.tensor(frozen), torch.tensor(trained))
        state.step += 1
        return logs["presence_ratio"]

    assert step([[1.0], [1.0]], [[0.0], [0.0]]) == 0.0 and not state.should_stop  # the window is not full yet
    assert step([[1.0], [0.0]], [[0.5], [0.0]]) == pytest.approx(0.5 / 3) and not state.should_stop
    assert step([[1.0], [1.0]], [[0.5], [0.5]]) == pytest.approx(1.5 / 5)  # 0.3 > 0.25: go on
    assert not state.should_stop
    assert step([[0.0], [0.0]], [[0.0], [0.0]]) == pytest.approx(1.5 / 3)  # the first step left the window
    assert step([[1.0], [1.0]], [[0.0], [0.0]]) == pytest.approx(1.0 / 4) and state.should_stop
    assert method._stopped == {"step": 5, "ratio": pytest.approx(0.25)}
    # samples that never show the attribute (a frozen sum of 0) are no reason to stop
    never = SimpleNamespace(step=0, total_steps=100, should_stop=False, ctx={})
    for _ in range(5):
        method._early_stop(never, torch.zeros(2, 1), torch.zeros(2, 1))
    assert not never.should_stop


def test_early_stop_ends_the_erasure_and_the_patch_says_so(tiny_generator, tiny_clip_dir, monkeypatch):
    from erasekit.methods.text_to_unlearn import TextToUnlearn

    history = LossHistory()
    patch = _erase(tiny_generator, tiny_clip_dir, steps=6, stop_ratio=0.5, stop_window=2, callbacks=[history])
    assert all("presence_ratio" in h for h in history.history)  # logged on every step while early stop is on
    measured = patch.metadata["stats"]["steps_run"]
    early = TextToUnlearn._early_stop

    def gone(self, state, frozen, trained):  # as if the trained samples no longer showed the attribute
        return early(self, state, torch.ones_like(frozen), torch.zeros_like(trained))

    monkeypatch.setattr(TextToUnlearn, "_early_stop", gone)
    stopped = _erase(tiny_generator, tiny_clip_dir, steps=6, stop_ratio=0.5, stop_window=2)
    assert stopped.metadata["stats"]["steps_run"] == 2 and measured in range(2, 7)
    assert stopped.metadata["text_to_unlearn"]["stopped_early"] == {"step": 2, "ratio": 0.0}
    assert patch.metadata["text_to_unlearn"]["stopped_early"] is None or measured < 6
    assert stopped.deltas and stopped.metadata["config"]["stop_ratio"] == 0.5


def test_bad_input_fails_early(tiny_generator, tiny_clip_dir):
    with pytest.raises(ValueError, match="clip="):
        erasekit.erase(tiny_generator, "text_to_unlearn", "glasses", **FAST_CONFIGS["text_to_unlearn"])
    with pytest.raises(ValueError, match="empty"):
        _erase(tiny_generator, tiny_clip_dir, concept="  ")
    with pytest.raises(ValueError, match="matches no parameter"):
        _erase(tiny_generator, tiny_clip_dir, target=r"re:generator\.nothing")
    with pytest.raises(ValueError, match="layers"):
        TextToUnlearnConfig(layers="some")
    with pytest.raises(ValueError, match="template"):
        TextToUnlearnConfig(templates=["a photo"])
    with pytest.raises(ValueError, match="direction_weight"):
        TextToUnlearnConfig(direction_weight=0.0)
    for bad in ({"stop_ratio": 1.0}, {"stop_ratio": -0.1}, {"stop_window": 0}):
        with pytest.raises(ValueError, match="stop_ratio must be in"):
            TextToUnlearnConfig(**bad)


def test_handle_from_a_world_folder_finds_its_clip(tiny_generator, tiny_clip_dir):
    handle = StyleGANHandle(tiny_generator)
    handle.world = tiny_clip_dir.parent  # a folder with clip/ inside
    cfg = {k: v for k, v in FAST_CONFIGS["text_to_unlearn"].items()}
    patch = erasekit.erase(handle, "text_to_unlearn", "hat", **cfg)
    assert patch.metadata["config"]["clip"] == "auto" and len(patch) > 0


def test_a_group_anchor_aims_at_its_options_together(tiny_generator, tiny_clip_dir):
    """A group anchor ("A | B") is the "without" side of the direction and of the presence prototypes: the options'
    template embeddings together, so a value of an attribute is erased towards the attribute's other values."""
    from erasekit.methods.text_to_unlearn import TextToUnlearn, group_options
    from erasekit.models import load_model
    from erasekit.ops.clip_direction import prototype, text_direction

    method = TextToUnlearn(TextToUnlearnConfig(clip=str(tiny_clip_dir)))
    handle = load_model(tiny_generator)
    group = "a face with brown hair | a face with red hair"
    text = method._encode_text(handle, ["black hair"], group)
    encoder, templates = text["encoder"], method.config.templates

    def embed(description):
        return encoder.texts([t.format(description) for t in templates])

    source, options = embed("a face with black hair"), [embed(o) for o in group_options(group)]
    assert torch.allclose(text["directions"][0], text_direction(source, torch.cat(options)), atol=1e-6)
    assert torch.allclose(text["protos"][0][1], prototype(torch.cat(options)), atol=1e-6)
    single = method._encode_text(handle, ["black hair"], "a face with brown hair")
    assert not torch.allclose(single["directions"][0], text["directions"][0])
    assert group_options("a face") == ["a face"]
    with pytest.raises(ValueError, match="empty option"):
        group_options("a face with red hair | ")
    patch = _erase(tiny_generator, tiny_clip_dir, concept="black hair", anchor=group)
    assert [tuple(p) for p in patch.metadata["text_to_unlearn"]["prompts"]] == [("a face with black hair", group)]
