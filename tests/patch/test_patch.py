import copy
import logging

import pytest
import torch
from conftest import assert_bit_equal, state_of

from erasekit.models import DiffusionHandle
from erasekit.patch import DenseDelta, ErasurePatch, LowRankDelta, SparseDelta, load_patch


def _edited(pipe, pattern="attn2", scale=0.1, seed=1):
    edited = copy.deepcopy(pipe)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in edited.unet.named_parameters():
            if pattern in name:
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    return edited


@pytest.fixture
def patch(tiny_pipe):
    return ErasurePatch.from_diff(tiny_pipe, _edited(tiny_pipe), metadata={"method": "test", "concept": "x"})


def test_from_diff_apply_reproduces_edit_and_remove_is_bit_exact(tiny_pipe, patch):
    edited = _edited(tiny_pipe)
    original = state_of(tiny_pipe.unet)
    applied = patch.apply(tiny_pipe)
    for (n, a), b in zip(tiny_pipe.unet.named_parameters(), edited.unet.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=n)
    applied.remove()
    assert_bit_equal(state_of(tiny_pipe.unet), original)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("sparse", [False, True])
def test_remove_restores_exact_bits(tiny_pipe, dtype, sparse):
    pipe = tiny_pipe.to(dtype=dtype)
    patch = ErasurePatch.from_diff(pipe, _edited(pipe, scale=0.3), sparse=sparse)
    original = state_of(pipe.unet)
    for _ in range(3):  # repeated cycles stay exact
        applied = patch.apply(pipe, scale=0.37)
        assert not all(torch.equal(a, b) for a, b in zip(state_of(pipe.unet).values(), original.values(), strict=True))
        applied.remove()
        assert_bit_equal(state_of(pipe.unet), original)


def test_scale_zero_is_base_and_half_is_half(tiny_pipe, patch):
    original = state_of(tiny_pipe.unet)
    with patch.applied(tiny_pipe, scale=0.0):
        assert_bit_equal(state_of(tiny_pipe.unet), original)
    key = next(iter(patch.deltas))
    name = key.split(".", 1)[1]
    with patch.scaled(0.5).applied(tiny_pipe):
        half = tiny_pipe.unet.state_dict()[name].clone()
    with patch.applied(tiny_pipe, scale=0.5):
        torch.testing.assert_close(tiny_pipe.unet.state_dict()[name], half, rtol=0, atol=0)
    torch.testing.assert_close(half, original[name] + 0.5 * patch.deltas[key].to_dense(), rtol=0, atol=1e-7)


def test_sparse_and_lowrank_deltas_apply_like_their_dense_form(tiny_pipe):
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    w = dict(tiny_pipe.unet.named_parameters())[key[5:]]
    up, down = torch.randn(w.shape[0], 2), torch.randn(2, w.shape[1])
    low = LowRankDelta(up, down, tuple(w.shape))
    sparse = SparseDelta(torch.tensor([0, 5, 7]), torch.tensor([1.0, -2.0, 0.5]), tuple(w.shape))
    for delta in (low, sparse):
        expected = w.detach() + delta.to_dense()
        with ErasurePatch({key: delta}).applied(tiny_pipe):
            torch.testing.assert_close(w.detach(), expected)
    with pytest.raises(ValueError, match="outside"):
        SparseDelta(torch.tensor([10**6]), torch.tensor([1.0]), tuple(w.shape))


def test_composition_of_disjoint_patches_equals_sequential_application(tiny_pipe):
    a = ErasurePatch.from_diff(tiny_pipe, _edited(tiny_pipe, "attn2.to_k", seed=1))
    b = ErasurePatch.from_diff(tiny_pipe, _edited(tiny_pipe, "attn2.to_v", seed=2))
    original = state_of(tiny_pipe.unet)
    with a.applied(tiny_pipe), b.applied(tiny_pipe):
        sequential = state_of(tiny_pipe.unet)
    with (a + b).applied(tiny_pipe):
        assert_bit_equal(state_of(tiny_pipe.unet), sequential)
    assert_bit_equal(state_of(tiny_pipe.unet), original)


def test_overlapping_composition_warns_and_sums(tiny_pipe, caplog):
    a = ErasurePatch.from_diff(tiny_pipe, _edited(tiny_pipe, seed=1))
    with caplog.at_level(logging.WARNING):
        both = a + a
    assert "overlap" in caplog.text
    key = next(iter(a.deltas))
    torch.testing.assert_close(both.deltas[key].to_dense(), 2 * a.deltas[key].to_dense())


def test_overlapping_patches_must_be_removed_last_in_first_out(tiny_pipe, patch):
    original = state_of(tiny_pipe.unet)
    first, second = patch.apply(tiny_pipe), patch.apply(tiny_pipe)
    with pytest.raises(RuntimeError, match="remove it first"):
        first.remove()
    second.remove()
    first.remove()
    assert_bit_equal(state_of(tiny_pipe.unet), original)
    with pytest.raises(RuntimeError, match="already removed"):
        first.remove()


def test_non_finite_result_is_refused_and_nothing_changes(tiny_pipe, patch):
    original = state_of(tiny_pipe.unet)
    bad = copy.deepcopy(patch)
    last = list(bad.deltas)[-1]
    bad.deltas[last] = DenseDelta(torch.full(bad.deltas[last].shape, float("inf")))
    with pytest.raises(ValueError, match="non-finite"):
        bad.apply(tiny_pipe)
    assert_bit_equal(state_of(tiny_pipe.unet), original)


def test_patch_for_another_base_model_is_refused(tiny_pipe, patch):
    from erasekit.models.tiny import tiny_sd_pipeline

    other = tiny_sd_pipeline(seed=7)
    with pytest.raises(ValueError, match="different base model.*weights differ"):
        patch.apply(other)
    patch.apply(other, check_fingerprint=False).remove()


def test_fingerprint_matches_across_dtypes_and_with_patches_stacked(tiny_pipe, patch):
    half = copy.deepcopy(tiny_pipe).to(dtype=torch.float16)
    patch.apply(half).remove()
    with patch.applied(tiny_pipe):  # the base fingerprint is remembered while patches are stacked
        patch.apply(tiny_pipe).remove()


@pytest.mark.parametrize("dtype", [None, "float32"])
def test_save_load_round_trip(tmp_path, patch, dtype):
    sparse = ErasurePatch({k: SparseDelta.from_dense(d.to_dense()) for k, d in patch.deltas.items()}, patch.metadata)
    for p in (patch, sparse):
        path = p.save(tmp_path / "p.safetensors", dtype=dtype)
        loaded = load_patch(path)
        assert loaded.metadata["method"] == "test" and loaded.metadata["erasekit_version"]
        assert loaded.deltas.keys() == p.deltas.keys()
        expected = p if dtype == "float32" else p.stored()  # the default rounds values to fp16
        for k in p.deltas:
            assert loaded.deltas[k].kind == p.deltas[k].kind
            assert torch.equal(loaded.deltas[k].to_dense(), expected.deltas[k].to_dense())
            torch.testing.assert_close(loaded.deltas[k].to_dense(), p.deltas[k].to_dense(), rtol=2**-11, atol=0)
    assert [f.name for f in tmp_path.iterdir()] == ["p.safetensors"]  # no temporary files left behind


def test_sparse_indices_use_the_narrowest_type_on_disk_and_int64_in_memory(tmp_path):
    from safetensors import safe_open

    delta = SparseDelta(torch.tensor([0, 5, 2**20 + 3]), torch.tensor([1.0, -2.0, 0.5]), (2**21,))
    path = ErasurePatch({"unet.w": delta}, {"method": "test"}).save(tmp_path / "p.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("unet.w::indices").dtype == torch.int32
        assert f.get_tensor("unet.w::values").dtype == torch.float16
    loaded = load_patch(path).deltas["unet.w"]
    assert loaded.indices.dtype == torch.int64 and torch.equal(loaded.indices, delta.indices)
    assert ErasurePatch({"unet.w": delta}).nbytes == 3 * 4 + 3 * 2  # what the file stores


def test_truncated_corrupted_and_foreign_files_give_clear_errors(tmp_path, patch):
    path = patch.save(tmp_path / "p.safetensors")
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        load_patch(tmp_path / "trunc.safetensors")
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupted"):
        load_patch(tmp_path / "flip.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not an erasekit patch"):
        load_patch(tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="No patch file"):
        load_patch(tmp_path / "missing.safetensors")


def test_lora_export_loads_in_diffusers_and_matches_within_reported_error(tmp_path, tiny_pipe):
    edited = _edited(tiny_pipe, pattern="", scale=0.05)  # every UNet tensor, incl. convs, norms and biases
    patch = ErasurePatch.from_diff(tiny_pipe, edited)
    report = patch.save_lora(tmp_path / "lora.safetensors", rank=2)
    assert 0 < report.relative_error < 1 and report.dropped and report.exported > 10
    lora_pipe = copy.deepcopy(tiny_pipe)
    lora_pipe.load_lora_weights(str(tmp_path / "lora.safetensors"))
    lora_pipe.fuse_lora()
    lora_pipe.unload_lora_weights()
    num = den = 0.0
    base = dict(tiny_pipe.unet.named_parameters())
    merged = dict(lora_pipe.unet.named_parameters())
    for key in report.per_key_error:
        name = key[len("unet.") :]
        delta = patch.deltas[key].to_dense()
        num += float((merged[name].detach() - base[name].detach() - delta).pow(2).sum())
        den += float(delta.pow(2).sum())
    assert (num / den) ** 0.5 == pytest.approx(report.relative_error, rel=1e-3, abs=1e-6)


def test_full_rank_lora_is_exact(tmp_path, tiny_pipe):
    patch = ErasurePatch.from_diff(tiny_pipe, _edited(tiny_pipe, pattern="attn2.to_k"))
    report = patch.save_lora(tmp_path / "lora.safetensors", rank=64)
    assert report.relative_error < 1e-5 and not report.dropped
    pipe = copy.deepcopy(tiny_pipe)
    pipe.load_lora_weights(str(tmp_path / "lora.safetensors"))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused = dict(pipe.unet.named_parameters())
    with patch.applied(DiffusionHandle(tiny_pipe)):
        for name, a in tiny_pipe.unet.named_parameters():
            torch.testing.assert_close(a, fused[name], rtol=0, atol=1e-5, msg=name)
