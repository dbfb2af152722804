"""The shared suite every registered method must pass on the tiny pipeline (STYLE.md)."""

import copy
import dataclasses

import pytest
import torch
from conftest import FAST_CONFIGS, assert_bit_equal, state_of

import erasekit
from erasekit.methods import get_method, list_methods
from erasekit.patch import ErasurePatch, load_patch, resolve_targets

METHODS = [m for m in list_methods() if "diffusion" in get_method(m).kinds]


def test_every_method_has_fast_test_settings():
    missing = [m for m in list_methods() if m not in FAST_CONFIGS]
    assert not missing, f"add fast settings for {missing} to tests/conftest.py FAST_CONFIGS"


def _erase(pipe, method, **extra):
    return erasekit.erase(pipe, method, "a cat", **{**FAST_CONFIGS[method], **extra})


@pytest.fixture(scope="module")
def patches(_tiny_pipe_session):
    """One patch per method, made once on a private copy of the tiny pipeline."""
    pipe = copy.deepcopy(_tiny_pipe_session)
    return {m: _erase(pipe, m) for m in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_patch_is_nonempty_finite_and_within_targets(method, patches, tiny_handle):
    patch = patches[method]
    assert len(patch) > 0 and patch.num_changed > 0
    cls = get_method(method)
    allowed = set(
        resolve_targets(cls(cls.config_class(**FAST_CONFIGS[method])).default_target(), tiny_handle.named_parameters())
    )
    assert set(patch.deltas) <= allowed
    assert all(torch.isfinite(d.to_dense()).all() for d in patch.deltas.values())
    meta = patch.metadata
    assert meta["method"] == method and meta["concept"] == "a cat" and meta["base_fingerprint"]
    assert meta["stats"]["steps_run"] == FAST_CONFIGS[method]["steps"]


@pytest.mark.parametrize("method", METHODS)
def test_callers_model_is_unchanged(method, tiny_pipe):
    before = {c: state_of(getattr(tiny_pipe, c)) for c in ("unet", "text_encoder", "vae")}
    _erase(tiny_pipe, method)
    for c, state in before.items():
        assert_bit_equal(state_of(getattr(tiny_pipe, c)), state)
    assert not tiny_pipe.unet.is_gradient_checkpointing


@pytest.mark.parametrize("method", METHODS)
def test_apply_remove_bit_exact_and_scale_semantics(method, patches, tiny_pipe):
    patch = patches[method]
    original = state_of(tiny_pipe.unet)
    with patch.applied(tiny_pipe, scale=0.0):
        assert_bit_equal(state_of(tiny_pipe.unet), original)
    with patch.applied(tiny_pipe):
        merged = state_of(tiny_pipe.unet)
    assert_bit_equal(state_of(tiny_pipe.unet), original)
    for key, delta in patch.deltas.items():
        name = key.split(".", 1)[1]
        torch.testing.assert_close(merged[name], original[name] + delta.to_dense(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_save_load_round_trip(method, patches, tmp_path):
    patch = patches[method]
    loaded = load_patch(patch.save(tmp_path / f"{method}.safetensors"))
    assert loaded.metadata["config"] == patch.metadata["config"]
    for k, d in patch.deltas.items():
        assert torch.equal(loaded.deltas[k].to_dense(), d.to_dense())


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_patch_other_seed_other_patch(method, patches, tiny_pipe):
    again = _erase(tiny_pipe, method)
    other = _erase(tiny_pipe, method, seed=1)
    ref = patches[method]
    assert again.deltas.keys() == ref.deltas.keys()
    assert all(torch.equal(again.deltas[k].to_dense(), d.to_dense()) for k, d in ref.deltas.items())
    cls = get_method(method)
    differs = any(not torch.equal(other.deltas[k].to_dense(), d.to_dense()) for k, d in ref.deltas.items())
    assert differs == cls(cls.config_class(**FAST_CONFIGS[method])).seed_matters()


@pytest.mark.parametrize("method", METHODS)
def test_disjoint_composition_equals_sequential(method, patches, tiny_pipe):
    patch = patches[method]
    keys = sorted(patch.deltas)
    a = ErasurePatch({k: patch.deltas[k] for k in keys[::2]})
    b = ErasurePatch({k: patch.deltas[k] for k in keys[1::2]})
    with a.applied(tiny_pipe), b.applied(tiny_pipe):
        sequential = state_of(tiny_pipe.unet)
    with (a + b).applied(tiny_pipe):
        assert_bit_equal(state_of(tiny_pipe.unet), sequential)


@pytest.mark.parametrize("method", METHODS)
def test_config_yaml_round_trip_and_shipped_defaults(method, tmp_path):
    from pathlib import Path

    cls = get_method(method).config_class
    cfg = cls().with_overrides({"seed": 3, "steps": 7})
    assert cls.from_yaml(cfg.to_yaml(tmp_path / "c.yaml")) == cfg
    import yaml

    shipped = Path(__file__).parents[1] / "configs" / "methods" / f"{method}.yaml"
    assert shipped.is_file(), f"configs/methods/{method}.yaml is missing"
    written = yaml.safe_load(shipped.read_text()) or {}
    assert set(written) == {"method"} | {f.name for f in dataclasses.fields(cls)}, "regenerate with erasekit list"
    assert erasekit.resolve_config(method, shipped) == cls(), "the shipped YAML must mirror the defaults"
