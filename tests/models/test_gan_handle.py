"""StyleGAN2 generators behind a handle: targets, patches and parameter swapping work as for diffusers."""

import copy

import pytest
import torch

import erasekit
from erasekit.models import StyleGANHandle
from erasekit.models.stylegan import Generator, StyleGAN2Config, save_generator
from erasekit.patch import ErasurePatch, resolve_targets


@pytest.fixture
def generator():
    torch.manual_seed(0)
    cfg = StyleGAN2Config(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16, mapping_layers=2)
    return Generator(cfg).eval()


def test_presets_address_generator_parameters(generator):
    names = list(StyleGANHandle(generator).named_parameters())
    convs = resolve_targets("synthesis_conv", names, "stylegan")
    assert convs and all(
        n.startswith("generator.synthesis.b") and ".conv" in n and n.endswith(".weight") for n in convs
    )
    assert all("torgb" in n for n in resolve_targets("torgb", names, "stylegan"))
    assert all(n.startswith("generator.mapping.") for n in resolve_targets("mapping", names, "stylegan"))


def test_generate_is_seeded_and_params_swap_without_writing(generator):
    handle = StyleGANHandle(generator)
    a, b = handle.generate([0, 1]), handle.generate([1])
    assert a.shape == (2, 3, 16, 16) and 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(a[1:], b)
    key = resolve_targets("synthesis_conv", handle.named_parameters(), "stylegan")[0]
    weight = handle.named_parameters()[key].detach()  # (demodulation cancels a uniform scale: perturb randomly)
    params = {key: (weight + torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))).requires_grad_()}
    ws = handle.sample_ws([0])
    out = handle.synthesize(ws, params=params)
    out.sum().backward()
    assert params[key].grad is not None and not torch.equal(out, handle.synthesize(ws))


def test_patch_round_trip_on_a_generator_file(generator, tmp_path):
    path = save_generator(generator, tmp_path / "g.safetensors")
    handle = erasekit.load_model(str(path))
    assert isinstance(handle, StyleGANHandle) and handle.spec == str(path)
    edited = copy.deepcopy(handle.generator)
    with torch.no_grad():
        edited.synthesis.b8.conv1.weight.add_(0.1)
    patch = ErasurePatch.from_diff(handle.generator, edited)
    assert list(patch.deltas) == ["generator.synthesis.b8.conv1.weight"]
    before = handle.generate([3])
    with patch.applied(handle):
        torch.testing.assert_close(handle.generate([3]), StyleGANHandle(edited).generate([3]))
    assert torch.equal(handle.generate([3]), before)
    with pytest.raises(TypeError, match="not a StyleGAN2 generator"):
        StyleGANHandle(torch.nn.Linear(2, 2))
