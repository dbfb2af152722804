"""Presets (erasekit.presets): every shipped preset loads and validates, a preset file round-trips, the resolution
order holds (defaults < plan < preset < per-kind < config < overrides), a world selects its preset automatically and
``--preset`` overrides it, and the patch records the preset beside the fully resolved config; per method of the
registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from conftest import FAST_CONFIGS

import erasekit
from erasekit.methods import get_method, list_methods
from erasekit.plugins import list_worlds
from erasekit.presets import Preset, find_preset, load_preset, resolve_erasure, world_presets

ROOT = Path(__file__).resolve().parents[2]
DIFFUSION = [m for m in list_methods() if "diffusion" in get_method(m).kinds]


def fast(method: str) -> dict:
    """The suite's fast settings, without training options for closed-form methods (they take none)."""
    from erasekit.methods import TrainingConfig
    from erasekit.methods.config import TRAINING_FIELDS

    options = dict(FAST_CONFIGS[method])
    if not issubclass(get_method(method).config_class, TrainingConfig):
        options = {k: v for k, v in options.items() if k not in TRAINING_FIELDS}
    return options


def _shipped() -> list[Preset]:
    return [p for w in list_worlds() for p in world_presets(w).values()]


def test_every_shipped_world_has_presets_and_each_loads():
    presets = {p.name for p in _shipped()}
    assert {"minicanvas/salun", "minicanvas/doco", "minifaces/text_to_unlearn"} <= presets
    for preset in _shipped():
        cls = get_method(preset.method).config_class
        for kind in [None, *preset.by_kind]:
            cfg = cls().with_overrides(preset.settings(kind))  # every value valid for the method
            for key, value in preset.settings(kind).items():
                assert getattr(cfg, key) == value, (preset.name, kind, key)


def test_configs_presets_mirror_the_packaged_presets():
    for preset in _shipped():
        world, method = preset.name.split("/")
        copy = ROOT / "configs" / "presets" / world / f"{method}.yaml"
        assert copy.is_file(), f"configs/presets/{world}/{method}.yaml is missing: copy {preset.path}"
        assert copy.read_bytes() == Path(preset.path).read_bytes(), f"{copy} differs from {preset.path}: copy it"
    names = {p.name for p in _shipped()}
    copies = {f"{p.parent.name}/{p.stem}" for p in (ROOT / "configs" / "presets").glob("*/*.yaml")}
    assert copies == names, "configs/presets holds a preset no world ships (or misses one)"


def test_preset_file_round_trip(tmp_path):
    preset = Preset(
        name="mine",
        method="salun",
        options={"lr": 3e-5, "steps": 7},
        by_kind={"style": {"null_weight": 0.5}},
        plan=True,
        description="a test",
    )
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in preset.to_dict().items() if k != "name"}, sort_keys=False))
    loaded = load_preset(path, name="mine")
    assert dataclasses.replace(loaded, path="") == preset
    assert find_preset(str(path), "salun") == dataclasses.replace(loaded, name=str(path))


@pytest.mark.parametrize(
    "text, match",
    [
        ("method: salun\noptions: {lrr: 1}\n", "Did you mean 'lr'"),
        ("method: salun\noptions: {progress: false}\n", "run options"),
        ("method: uce\noptions: {steps: 3}\n", "no training loop"),
        ("method: salun\nsettings: {}\n", "unknown preset keys"),
        ("options: {lr: 1}\n", "method:"),
        ("method: esd\nby_kind: {style: {variant: z}}\n", "variant must be one of"),
    ],
)
def test_bad_preset_files_are_refused_before_work(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_preset(path)


def test_a_preset_for_another_method_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is for 'doco', not 'salun'"):
        find_preset("minicanvas/doco", "salun")
    with pytest.raises(ValueError, match="ships no preset"):
        find_preset("minifaces", "salun")


def test_world_selects_its_preset_and_per_kind_settings():
    style = resolve_erasure("doco", "minicanvas", "Mosaic style")
    assert style.preset.name == "minicanvas/doco" and style.kind == "style" and style.targets == ["style:Mosaic"]
    assert (style.config.fake_from, style.config.anchor_weight, style.config.lr) == ("both", 10.0, 6e-5)
    assert style.config.retain_prompts and style.config.concept_prompts  # the world's plan phrased the target
    obj = resolve_erasure("doco", "minicanvas", "apple")
    assert obj.kind == "object" and obj.config.concept_kind == "object" and obj.anchor == "an image"
    assert (obj.config.fake_from, obj.config.anchor_weight, obj.config.retain_prompts) == ("both", 10.0, None)
    assert style.config.retain_prompts  # the per-kind section: an object's prior keeps the anchor alone
    free = resolve_erasure("doco", "minicanvas", "a red balloon")  # not a world target: shared options only
    assert free.kind is None and free.config.lr == 6e-5 and free.config.concept_prompts is None


def test_preset_none_gives_the_paper_defaults_and_user_options_win():
    cls = get_method("salun").config_class
    assert resolve_erasure("salun", "minicanvas", "Ink style", preset="none").config == cls()
    assert resolve_erasure("salun", "tiny-sd", "a cat").preset is None  # not a world: no preset
    resolved = resolve_erasure("salun", "minicanvas", "Ink style", config={"lr": 2e-5}, overrides=["steps=9"])
    assert (resolved.config.lr, resolved.config.steps, resolved.config.batch_size) == (2e-5, 9, 4)
    explicit = resolve_erasure("salun", "tiny-sd", "a cat", preset="minicanvas")
    assert explicit.preset.name == "minicanvas/salun" and explicit.config.lr == 1e-4


@pytest.mark.parametrize("method", DIFFUSION)
def test_patch_records_preset_and_resolved_config(method, tiny_pipe, tmp_path):
    cls = get_method(method).config_class
    changed = {"uce": {"lam": 0.25}}.get(method, {"lr": 3e-5})
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump({"method": method, "description": "test", "options": changed}))
    patch = erasekit.erase(tiny_pipe, method, "a cat", preset=str(path), **fast(method))
    assert patch.metadata["preset"]["name"] == str(path)
    assert patch.metadata["preset"]["settings"] == changed
    recorded = cls.from_dict(patch.metadata["config"])  # the fully resolved config, loadable as is
    for key, value in changed.items():
        assert getattr(recorded, key) == value
    saved = erasekit.load_patch(patch.save(tmp_path / "p.safetensors"))
    assert (
        saved.metadata["preset"] == patch.metadata["preset"] and saved.metadata["config"] == patch.metadata["config"]
    )
    plain = erasekit.erase(tiny_pipe, method, "a cat", **fast(method))
    assert plain.metadata["preset"]["name"] is None


def test_cli_records_the_preset_and_list_shows_presets(tiny_pipe, tmp_path, capsys):
    from erasekit.cli.main import main

    path = tmp_path / "esd.yaml"
    path.write_text("method: esd\ndescription: test\noptions: {lr: 2.0e-5}\n")
    out = tmp_path / "p.safetensors"
    argv = ["erase", "--method", "esd", "--concept", "a cat", "--preset", str(path), "--out", str(out)]
    assert main([*argv, "--set", "steps=2", "--set", "ddim_steps=2", "--set", "progress=false"]) == 0
    meta = erasekit.load_patch(out).metadata
    assert meta["preset"]["name"] == str(path) and meta["config"]["lr"] == 2e-5 and "progress" not in meta["config"]
    capsys.readouterr()
    assert main(["list", "salun"]) == 0
    text = capsys.readouterr().out
    assert "minicanvas/salun" in text and "steps = 500" in text
    assert "(preset minicanvas: 200; minicanvas style: 160; minicanvas object: 150)" in text  # shared, then per kind
    assert "null_weight = " not in text and "advanced options" in text  # the option row is hidden
    assert main(["list", "salun", "--all"]) == 0
    assert "null_weight = 0.0" in capsys.readouterr().out
    assert main(["list", "salun", "--yaml"]) == 0
    template = yaml.safe_load(capsys.readouterr().out)
    assert "null_weight" not in template and template["lr"] == 1e-5
    assert main(["list", "salun", "--yaml", "--all"]) == 0
    assert "null_weight" in yaml.safe_load(capsys.readouterr().out)


def test_minifaces_plans_a_hair_colour_towards_the_other_colours():
    hair = resolve_erasure("text_to_unlearn", "minifaces", "black hair")
    assert hair.preset.name == "minifaces/text_to_unlearn" and hair.kind == "hair" and hair.targets == ["hair:black"]
    assert hair.anchor == "a face with brown hair | a face with blond hair | a face with red hair"
    assert hair.config.colour_weight == hair.preset.settings("hair")["colour_weight"]
    glasses = resolve_erasure("text_to_unlearn", "minifaces", "sunglasses")
    assert (glasses.kind, glasses.targets, glasses.concept, glasses.anchor) == (
        "attribute",
        ["attribute:glasses"],
        "glasses",
        None,
    )
    both = resolve_erasure("text_to_unlearn", "minifaces", ["glasses", "a bearded face"])
    assert both.concept == "glasses, beard" and both.anchor is None
    with pytest.raises(ValueError, match="hair colour is erased on its own"):
        resolve_erasure("text_to_unlearn", "minifaces", ["red hair", "blond hair"])
    with pytest.raises(ValueError, match="different kinds"):
        resolve_erasure("text_to_unlearn", "minifaces", ["red hair", "glasses"])
    user = resolve_erasure("text_to_unlearn", "minifaces", "red hair", anchor="a face with black hair")
    assert user.anchor == "a face with black hair"  # the user's anchor wins over the plan's
    free = resolve_erasure("text_to_unlearn", "minifaces", "a moustache")  # not a world target: no plan, no kind
    assert free.kind is None and free.concept == "a moustache" and free.anchor is None


def test_a_resolved_erasure_tells_whether_a_recorded_one_ran_as_it_runs_now():
    hair = resolve_erasure("text_to_unlearn", "minifaces", "black hair")
    settings = hair.preset.settings("hair")
    assert hair.ran_as(hair.record(), {}, hair.anchor)
    assert not hair.ran_as({**hair.record(), "settings": {**settings, "steps": 1}}, {}, hair.anchor)
    assert not hair.ran_as(hair.record(), {}, None)  # no anchor: erased before the world's hair plan
    glasses = resolve_erasure("text_to_unlearn", "minifaces", "glasses")
    older = glasses.preset.settings("attribute")  # a record that names the preset only: the config decides
    assert glasses.ran_as("minifaces/text_to_unlearn", older, None)
    assert not glasses.ran_as("minifaces/text_to_unlearn", {**older, "steps": 1}, None)
    assert not glasses.ran_as(None, {}, None)  # a config without the preset's options did not run under it
