"""The config split: what to compute (the method's config, saved in the patch) against how to run (RunConfig, never
saved, free to change on resume); training options only for loop-based methods; advanced options; renamed options;
per method of the registry."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from conftest import FAST_CONFIGS

import erasekit
from erasekit.methods import Callback, LossHistory, RunConfig, TrainedMethod, TrainingConfig, get_method, list_methods
from erasekit.methods.config import RUN_FIELDS, TRAINING_FIELDS, split_run_options

DIFFUSION_LOOP = [
    m for m in list_methods() if "diffusion" in get_method(m).kinds and issubclass(get_method(m), TrainedMethod)
]


class _Crash(Callback):
    def on_step_end(self, state, logs):
        if state.step == 2:
            raise KeyboardInterrupt


@pytest.mark.parametrize("method", list_methods())
def test_method_configs_hold_no_run_options_and_loop_methods_share_the_training_group(method):
    cls = get_method(method).config_class
    names = {f.name for f in dataclasses.fields(cls)}
    assert not names & set(RUN_FIELDS), "run options belong to RunConfig, not to what the patch records"
    loop = issubclass(get_method(method), TrainedMethod)
    assert issubclass(cls, TrainingConfig) == loop
    assert (set(TRAINING_FIELDS) <= names) == loop and (not names & set(TRAINING_FIELDS)) == (not loop)
    for f in dataclasses.fields(cls):
        assert isinstance(f.metadata.get("advanced"), bool), f"{f.name}: use option() so the field says if advanced"


def test_closed_form_methods_refuse_training_options():
    for key in TRAINING_FIELDS:
        with pytest.raises(ValueError, match="no training loop"):
            get_method("uce").config_class().with_overrides({key: 1})
    with pytest.raises(ValueError, match="no training loop"):
        get_method("uce").config_class.from_dict({"steps": 1})


def test_run_options_are_routed_to_the_run_config_and_refused_in_a_method_config():
    assert split_run_options({"steps": 2, "compile": True}) == ({"steps": 2}, {"compile": True})
    with pytest.raises(ValueError, match="is a run option"):
        get_method("esd").config_class().with_overrides({"progress": False})
    with pytest.raises(ValueError, match="Did you mean 'progress'"):
        RunConfig.from_dict({"progres": False})
    with pytest.raises(ValueError, match="sync_every"):
        RunConfig(sync_every=0)


def test_renamed_keep_the_rest_weight_still_loads_with_a_warning():
    for method in ("salun", "doco"):
        cls = get_method(method).config_class
        with pytest.warns(FutureWarning, match="now called 'retain_weight'"):
            old = {"salun": "alpha", "doco": "prior_weight"}[method]
            assert cls.from_dict({old: 0.25}).retain_weight == 0.25
        with pytest.warns(FutureWarning):
            assert cls().with_overrides([f"{old}=0.75"]).retain_weight == 0.75
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_method("salun").config_class(retain_weight=0.3)  # the current name warns about nothing


@pytest.mark.parametrize("method", list_methods())
def test_advanced_options_are_hidden_from_the_template_unless_asked(method):
    import yaml

    cls = get_method(method).config_class
    advanced = {f.name for f in dataclasses.fields(cls) if f.metadata["advanced"]}
    shown = set(yaml.safe_load(cls.commented_yaml(method))) - {"method"}
    assert shown == {f.name for f in dataclasses.fields(cls)} - advanced
    assert set(yaml.safe_load(cls.commented_yaml(method, advanced=True))) - {"method"} == shown | advanced
    assert all(f"{name} =" not in cls.help_text() for name in advanced)
    assert all(f"{name} =" in cls.help_text(advanced=True) for name in advanced)


@pytest.mark.parametrize("method", DIFFUSION_LOOP)
def test_resume_may_change_run_options_and_gives_the_uninterrupted_patch(method, tiny_pipe, tmp_path):
    fast = {**FAST_CONFIGS[method], "steps": 4}
    full = erasekit.erase(tiny_pipe, method, "a cat", **fast)
    assert not set(full.metadata["config"]) & set(RUN_FIELDS)
    ckpt = {"checkpoint_dir": str(tmp_path), "checkpoint_every": 2}
    with pytest.raises(KeyboardInterrupt):
        erasekit.erase(tiny_pipe, method, "a cat", callbacks=[_Crash()], **fast, **ckpt)
    history = LossHistory()
    changed_run = {"sync_every": 3, "gradient_checkpointing": True, "mixed_precision": "no", "checkpoint_every": 1}
    resumed = erasekit.erase(
        tiny_pipe, method, "a cat", callbacks=[history], resume=True, run=changed_run, **fast, **ckpt
    )
    assert [h["step"] for h in history.history] == [3, 4]
    assert resumed.deltas.keys() == full.deltas.keys()
    for key, delta in full.deltas.items():
        assert torch.equal(resumed.deltas[key].to_dense(), delta.to_dense()), key
    assert resumed.metadata["config"] == full.metadata["config"]


@pytest.mark.parametrize("change", [{"lr": 3e-3}, {"batch_size": 2}, {"seed": 1}])
def test_resume_refuses_a_change_to_what_is_computed(change, tiny_pipe, tmp_path):
    fast = {**FAST_CONFIGS["esd"], "steps": 4}
    ckpt = {"checkpoint_dir": str(tmp_path), "checkpoint_every": 2}
    with pytest.raises(KeyboardInterrupt):
        erasekit.erase(tiny_pipe, "esd", "a cat", callbacks=[_Crash()], **fast, **ckpt)
    with pytest.raises(ValueError, match="different run"):
        erasekit.erase(tiny_pipe, "esd", "a cat", resume=True, **{**fast, **change}, **ckpt)


def test_run_config_passed_to_a_method_directly(tiny_pipe, tmp_path):
    cls = get_method("esd")
    cfg = cls.config_class(steps=2, ddim_steps=2)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        cls(cfg, RunConfig(progress=False, checkpoint_every=1)).erase(tiny_pipe, "a cat")
    with pytest.raises(TypeError, match="RunConfig"):
        cls(cfg, {"progress": False})
    patch = cls(cfg, RunConfig(progress=False)).erase(tiny_pipe, "a cat")
    assert patch.metadata["config"] == cfg.to_dict()


def test_run_options_given_to_a_config_constructor_still_reach_the_run_with_a_warning():
    cls = get_method("esd")
    with pytest.warns(FutureWarning, match="are run options"):
        cfg = cls.config_class(steps=2, progress=False)
    assert "progress" not in cfg.to_dict() and cls(cfg).run.progress is False
    assert cls(cfg, RunConfig(progress=True)).run.progress is True  # an explicit RunConfig wins
