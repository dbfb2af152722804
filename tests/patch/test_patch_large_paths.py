"""The paths that keep patches cheap at Stable Diffusion's size: apply writes one tensor at a time and puts back
what it wrote when a later tensor would become non-finite; the LoRA export factorises big matrices with a seeded
randomized SVD whose reported error is the error of the factors it wrote."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from erasekit.patch import DenseDelta, ErasurePatch, SparseDelta
from erasekit.patch import lora as lora_mod


def _model() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"unet": nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 4))}


def _bits(components) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in components["unet"].named_parameters()}


def test_a_non_finite_later_tensor_puts_back_the_tensors_already_written():
    model = _model()
    huge = torch.full((4, 5), 3e38)
    with torch.no_grad():
        model["unet"][1].weight.fill_(3e38)
    before = _bits(model)
    patch = ErasurePatch(
        {
            "unet.0.weight": DenseDelta(torch.ones(5, 6)),  # written first, then put back
            "unet.0.bias": SparseDelta(torch.tensor([0, 3]), torch.tensor([1.0, -2.0]), (5,)),
            "unet.1.weight": DenseDelta(huge),  # 3e38 + 3e38 overflows float32
        }
    )
    with pytest.raises(ValueError, match=r"unet.1.weight non-finite; nothing was changed"):
        patch.apply(model, check_fingerprint=False)
    after = _bits(model)
    assert all(torch.equal(before[k].view(torch.int32), after[k].view(torch.int32)) for k in before)
    good = ErasurePatch({"unet.0.weight": DenseDelta(torch.ones(5, 6))})
    with good.applied(model, check_fingerprint=False):  # no stale stack entry is left behind
        assert torch.equal(model["unet"][0].weight, before["0.weight"] + 1)
    assert torch.equal(model["unet"][0].weight, before["0.weight"])


def test_sparse_apply_and_remove_are_bit_exact_in_half_precision():
    model = {"unet": nn.Linear(64, 32).half()}
    before = {k: p.detach().clone() for k, p in model["unet"].named_parameters()}
    gen = torch.Generator().manual_seed(1)
    idx = torch.randperm(64 * 32, generator=gen)[:500].sort().values
    patch = ErasurePatch({"unet.weight": SparseDelta(idx, torch.randn(500, generator=gen) * 1e-3, (32, 64))})
    handle = patch.apply(model, check_fingerprint=False)
    changed = model["unet"].weight.detach().reshape(-1)
    expected = (before["weight"].reshape(-1)[idx].float() + patch.deltas["unet.weight"].values).half()
    assert torch.equal(changed[idx], expected)
    handle.remove()
    assert torch.equal(model["unet"].weight.view(torch.int16), before["weight"].view(torch.int16))


def test_randomized_svd_recovers_a_low_rank_delta_and_is_reproducible(tmp_path, monkeypatch):
    monkeypatch.setattr(lora_mod, "EXACT_SVD_MAX_DIM", 8)  # the randomized path on a small matrix
    gen = torch.Generator().manual_seed(2)
    low = torch.randn(40, 3, generator=gen) @ torch.randn(3, 50, generator=gen)
    noise = 1e-4 * torch.randn(40, 50, generator=gen)
    patch = ErasurePatch({"unet.proj.weight": DenseDelta(low + noise)}, {"method": "test"})
    first = lora_mod.export_lora(patch, tmp_path / "a.safetensors", rank=3)
    second = lora_mod.export_lora(patch, tmp_path / "b.safetensors", rank=3)
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a) and first.relative_error == second.relative_error
    optimal = float(torch.linalg.svdvals(low + noise)[3:].norm() / (low + noise).norm())
    assert optimal <= first.relative_error < optimal * 1.01 + 1e-7
    up, down = a["unet.proj.lora_B.weight"], a["unet.proj.lora_A.weight"]
    measured = float(((low + noise) - up @ down).norm() / (low + noise).norm())
    assert measured == pytest.approx(first.relative_error, rel=1e-4)


def test_all_finite_settles_on_the_sum_and_checks_entries_only_when_the_sum_overflows():
    from erasekit.patch.deltas import all_finite

    assert all_finite(torch.tensor([1.0, -2.0, 3e-30]))
    assert all_finite(torch.tensor([3e38, 3e38]))  # the sum overflows; every entry is finite
    assert all_finite(torch.tensor([60000.0, 60000.0], dtype=torch.float16))  # summed in float32
    for bad in (float("nan"), float("inf"), float("-inf")):
        assert not all_finite(torch.tensor([1.0, bad, 2.0]))
    assert not all_finite(torch.tensor([float("inf"), float("-inf")]))  # the sum is NaN
