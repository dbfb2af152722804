"""The shared suite every registered method must pass (STYLE.md): diffusion methods on the tiny Stable Diffusion,
SDXL and SD3 pipelines (every pair but those in ``UNSUPPORTED``, which must refuse with a clear error), StyleGAN2
methods (``kinds = ("stylegan",)``) on a tiny random generator with a tiny random CLIP."""

import dataclasses

import pytest
import torch
from conftest import DIFFUSION_ARCHS, FAST_CONFIGS, UNSUPPORTED, assert_bit_equal, state_of

import erasekit
from erasekit.methods import get_method, list_methods
from erasekit.models import load_model
from erasekit.patch import ErasurePatch, load_patch, resolve_targets

METHODS = [m for m in list_methods() if "diffusion" in get_method(m).kinds]
GAN_METHODS = [m for m in list_methods() if "stylegan" in get_method(m).kinds]


def test_every_method_is_covered_by_a_model_kind():
    assert set(METHODS) | set(GAN_METHODS) == set(list_methods())


def test_every_method_has_fast_test_settings():
    missing = [m for m in list_methods() if m not in FAST_CONFIGS]
    assert not missing, f"add fast settings for {missing} to tests/conftest.py FAST_CONFIGS"


def _erase(pipe, method, **extra):
    return erasekit.erase(pipe, method, "a cat", **{**FAST_CONFIGS[method], **extra})


CASES = [pytest.param(m, a, id=f"{m}-{a}") for a in DIFFUSION_ARCHS for m in METHODS if (m, a) not in UNSUPPORTED]


@pytest.fixture
def patches(method_patches):
    """One patch per (method, architecture), made once per session (conftest.py)."""
    return method_patches


def _target(pipe):
    """What patches are applied to: the pipeline, or for SD3 (no UNet) its handle."""
    return pipe if getattr(pipe, "unet", None) is not None else load_model(pipe)


def _states(pipe) -> dict[str, dict[str, torch.Tensor]]:
    return {c: state_of(m) for c, m in load_model(pipe).components.items()}


@pytest.mark.parametrize("method, arch", CASES)
def test_patch_is_nonempty_finite_and_within_targets(method, arch, patches, fresh_pipe):
    patch = patches[method, arch]
    assert len(patch) > 0 and patch.num_changed > 0
    cls = get_method(method)
    target = cls(cls.config_class(**FAST_CONFIGS[method])).default_target()
    allowed = set(resolve_targets(target, load_model(fresh_pipe(arch)).named_parameters()))
    assert set(patch.deltas) <= allowed
    assert all(torch.isfinite(d.to_dense()).all() for d in patch.deltas.values())
    meta = patch.metadata
    assert meta["method"] == method and meta["concept"] == "a cat" and meta["base_fingerprint"]
    assert meta["stats"]["steps_run"] == FAST_CONFIGS[method].get("steps", 1)  # a closed form: one step


@pytest.mark.parametrize("method, arch", CASES)
def test_apply_remove_bit_exact_and_scale_semantics(method, arch, patches, fresh_pipe):
    patch, pipe = patches[method, arch], fresh_pipe(arch)
    original = _states(pipe)
    with patch.applied(_target(pipe), scale=0.0):
        assert _states(pipe).keys() == original.keys()
        for c, state in _states(pipe).items():
            assert_bit_equal(state, original[c])
    with patch.applied(_target(pipe)):
        merged = _states(pipe)
    for c, state in _states(pipe).items():
        assert_bit_equal(state, original[c])
    for key, delta in patch.deltas.items():
        component, name = key.split(".", 1)
        torch.testing.assert_close(
            merged[component][name], original[component][name] + delta.to_dense(), rtol=0, atol=1e-7
        )


@pytest.mark.parametrize("method, arch", CASES)
def test_save_load_round_trip(method, arch, patches, tmp_path):
    """The default file reads back as ``stored()`` says (fp16 values); an fp32 file as the patch in memory."""
    patch = patches[method, arch]
    loaded = load_patch(patch.save(tmp_path / f"{method}.safetensors"))
    assert loaded.metadata["config"] == patch.metadata["config"]
    stored = patch.stored()
    for k, d in stored.deltas.items():
        assert torch.equal(loaded.deltas[k].to_dense(), d.to_dense())
    exact = load_patch(patch.save(tmp_path / f"{method}_fp32.safetensors", dtype="float32"))
    for k, d in patch.deltas.items():
        assert torch.equal(exact.deltas[k].to_dense(), d.to_dense())


@pytest.mark.parametrize("method, arch", CASES)
def test_callers_model_is_unchanged_and_same_seed_same_patch_other_seed_other_patch(method, arch, patches, fresh_pipe):
    pipe = fresh_pipe(arch)
    before = _states(pipe)
    again = _erase(pipe, method)
    for c, state in _states(pipe).items():
        assert_bit_equal(state, before[c])
    assert not load_model(pipe).denoiser.is_gradient_checkpointing
    other = _erase(pipe, method, seed=1)
    ref = patches[method, arch]
    assert again.deltas.keys() == ref.deltas.keys()
    assert all(torch.equal(again.deltas[k].to_dense(), d.to_dense()) for k, d in ref.deltas.items())
    cls = get_method(method)
    differs = any(not torch.equal(other.deltas[k].to_dense(), d.to_dense()) for k, d in ref.deltas.items())
    assert differs == cls(cls.config_class(**FAST_CONFIGS[method])).seed_matters()


@pytest.mark.parametrize("method, arch", CASES)
def test_disjoint_composition_equals_sequential(method, arch, patches, fresh_pipe):
    patch, pipe = patches[method, arch], fresh_pipe(arch)
    keys = sorted(patch.deltas)
    a = ErasurePatch({k: patch.deltas[k] for k in keys[::2]})
    b = ErasurePatch({k: patch.deltas[k] for k in keys[1::2]})
    with a.applied(_target(pipe)), b.applied(_target(pipe)):
        sequential = _states(pipe)
    with (a + b).applied(_target(pipe)):
        for c, state in _states(pipe).items():
            assert_bit_equal(state, sequential[c])


@pytest.mark.parametrize("method, arch", [pytest.param(m, a, id=f"{m}-{a}") for m, a in UNSUPPORTED])
def test_method_refuses_an_architecture_it_does_not_support(method, arch, fresh_pipe):
    pipe = fresh_pipe(arch)
    before = _states(pipe)
    with pytest.raises(ValueError, match=UNSUPPORTED[method, arch]):
        _erase(pipe, method)
    for c, state in _states(pipe).items():
        assert_bit_equal(state, before[c])


@pytest.mark.parametrize("method", list_methods())
def test_config_yaml_round_trip_and_shipped_defaults(method, tmp_path):
    from pathlib import Path

    from erasekit.methods.config import TrainingConfig

    cls = get_method(method).config_class
    cfg = cls().with_overrides({"seed": 3, "steps": 7} if issubclass(cls, TrainingConfig) else {"seed": 3})
    assert cls.from_yaml(cfg.to_yaml(tmp_path / "c.yaml")) == cfg
    import yaml

    shipped = Path(__file__).parents[2] / "configs" / "methods" / f"{method}.yaml"
    assert shipped.is_file(), f"configs/methods/{method}.yaml is missing"
    written = yaml.safe_load(shipped.read_text()) or {}
    assert set(written) == {"method"} | {f.name for f in dataclasses.fields(cls)}, "regenerate with erasekit list"
    assert erasekit.resolve_config(method, shipped) == cls(), "the shipped YAML must mirror the defaults"


# ---------------------------------------------------------------------------------------------------- StyleGAN2 methods


def _erase_gan(generator, method, clip_dir, **extra):
    return erasekit.erase(generator, method, "glasses", **{**FAST_CONFIGS[method], "clip": str(clip_dir), **extra})


@pytest.fixture
def gan_patches(gan_method_patches):
    """One patch per StyleGAN2 method, made once per session (conftest.py)."""
    return gan_method_patches


def _allowed(method, handle) -> set[str]:
    cls = get_method(method)
    target = cls(cls.config_class(**FAST_CONFIGS[method])).default_target()
    return set(resolve_targets(target, handle.named_parameters(), "stylegan"))


@pytest.mark.parametrize("method", GAN_METHODS)
def test_gan_patch_is_nonempty_finite_and_within_targets(method, gan_patches, tiny_generator):
    from erasekit.models import StyleGANHandle

    patch = gan_patches[method]
    assert len(patch) > 0 and patch.num_changed > 0
    assert set(patch.deltas) <= _allowed(method, StyleGANHandle(tiny_generator))
    assert all(torch.isfinite(d.to_dense()).all() for d in patch.deltas.values())
    meta = patch.metadata
    assert meta["method"] == method and meta["concept"] == "glasses" and meta["base_fingerprint"]["generator"]
    assert meta["stats"]["steps_run"] == FAST_CONFIGS[method].get("steps", 1)  # a closed form: one step


@pytest.mark.parametrize("method", GAN_METHODS)
def test_gan_apply_remove_bit_exact_and_scale_semantics(method, gan_patches, tiny_generator):
    patch = gan_patches[method]
    original = state_of(tiny_generator)
    with patch.applied(tiny_generator, scale=0.0):
        assert_bit_equal(state_of(tiny_generator), original)
    with patch.applied(tiny_generator):
        merged = state_of(tiny_generator)
    assert_bit_equal(state_of(tiny_generator), original)
    for key, delta in patch.deltas.items():
        name = key.split(".", 1)[1]
        torch.testing.assert_close(merged[name], original[name] + delta.to_dense(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("method", GAN_METHODS)
def test_gan_save_load_round_trip(method, gan_patches, tmp_path):
    """The default file reads back as ``stored()`` says (fp16 values); an fp32 file as the patch in memory."""
    patch = gan_patches[method]
    loaded = load_patch(patch.save(tmp_path / f"{method}.safetensors"))
    assert loaded.metadata["config"] == patch.metadata["config"]
    stored = patch.stored()
    for k, d in stored.deltas.items():
        assert torch.equal(loaded.deltas[k].to_dense(), d.to_dense())
    exact = load_patch(patch.save(tmp_path / f"{method}_fp32.safetensors", dtype="float32"))
    for k, d in patch.deltas.items():
        assert torch.equal(exact.deltas[k].to_dense(), d.to_dense())


@pytest.mark.parametrize("method", GAN_METHODS)
def test_gan_callers_generator_is_unchanged_and_same_seed_same_patch_other_seed_other_patch(
    method, gan_patches, tiny_generator, tiny_clip_dir
):
    ref = gan_patches[method]
    before = state_of(tiny_generator)
    flags = [p.requires_grad for p in tiny_generator.parameters()]
    again = _erase_gan(tiny_generator, method, tiny_clip_dir)
    assert_bit_equal(state_of(tiny_generator), before)
    assert [p.requires_grad for p in tiny_generator.parameters()] == flags
    assert all(p.grad is None for p in tiny_generator.parameters())
    other = _erase_gan(tiny_generator, method, tiny_clip_dir, seed=1)
    assert again.deltas.keys() == ref.deltas.keys()
    assert all(torch.equal(again.deltas[k].to_dense(), d.to_dense()) for k, d in ref.deltas.items())
    assert any(not torch.equal(other.deltas[k].to_dense(), d.to_dense()) for k, d in ref.deltas.items())


@pytest.mark.parametrize("method", GAN_METHODS)
def test_gan_disjoint_composition_equals_sequential(method, gan_patches, tiny_generator):
    patch = gan_patches[method]
    keys = sorted(patch.deltas)
    a = ErasurePatch({k: patch.deltas[k] for k in keys[::2]})
    b = ErasurePatch({k: patch.deltas[k] for k in keys[1::2]})
    with a.applied(tiny_generator), b.applied(tiny_generator):
        sequential = state_of(tiny_generator)
    with (a + b).applied(tiny_generator):
        assert_bit_equal(state_of(tiny_generator), sequential)


@pytest.mark.parametrize("method", GAN_METHODS)
def test_gan_method_refuses_a_diffusion_model(method, tiny_pipe):
    with pytest.raises(ValueError, match="stylegan|StyleGAN2"):
        erasekit.erase(tiny_pipe, method, "glasses", **FAST_CONFIGS[method])
