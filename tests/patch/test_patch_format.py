"""The patch file format: encodings, storage dtypes, sizes, and files written by the format-1 writer."""

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from conftest import assert_bit_equal, state_of

from erasekit.patch import DenseDelta, ErasurePatch, LowRankDelta, SparseDelta, load_patch, read_metadata
from erasekit.patch.encoding import choose_encoding, index_dtype, pack_bits, unpack_bits

FIXTURES = Path(__file__).parent / "fixtures"


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view({2: torch.int16, 4: torch.int32}[t.element_size()])


def _data_bytes(path: Path) -> int:
    """Bytes of tensor data in a safetensors file (everything after the length field and the JSON header)."""
    raw = path.read_bytes()
    return len(raw) - 8 - int.from_bytes(raw[:8], "little")


def _sparse(numel: int, density: float, seed: int = 0, shape=None) -> SparseDelta:
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand(numel, generator=gen) < density
    idx = keep.nonzero().squeeze(1)
    values = torch.randn(idx.numel(), generator=gen) * 1e-3
    return SparseDelta(idx, values, shape or (numel,))


def _encodings(path: Path) -> dict[str, str]:
    return {k: e["encoding"] for k, e in read_metadata(path)["deltas"].items()}


def test_bitmask_is_one_bit_per_entry_least_significant_first():
    mask = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1], dtype=torch.bool)
    assert pack_bits(mask).tolist() == [1, 5]  # padding bits are zero
    gen = torch.Generator().manual_seed(0)
    for numel in (1, 7, 8, 9, 1000):
        m = torch.rand(numel, generator=gen) < 0.3
        assert torch.equal(unpack_bits(pack_bits(m), numel), m)


@pytest.mark.parametrize(
    ("numel", "dtype"),
    [(1, torch.uint8), (256, torch.uint8), (257, torch.int16), (2**15, torch.int16), (2**15 + 1, torch.int32)]
    + [(2**31, torch.int32), (2**31 + 1, torch.int64)],
)
def test_indices_use_the_narrowest_integer_type(numel, dtype):
    assert index_dtype(numel) == dtype


def test_the_smallest_encoding_wins():
    n = 80_000  # int32 indices
    assert choose_encoding("sparse", n, 100, 2) == ("indices", 600)
    assert choose_encoding("sparse", n, n // 2, 2) == ("bitmask", n // 8 + n)
    assert choose_encoding("sparse", n, n - 1, 2) == ("dense", 2 * n)  # over 15/16 of the entries
    assert choose_encoding("dense", n, n, 4) == ("dense", 4 * n)
    assert choose_encoding("dense", n, 10, 4) == ("indices", 80)


@pytest.mark.parametrize("density", [0.0005, 0.01, 0.5, 0.97, 1.0])
def test_every_encoding_reads_back_exactly(tmp_path, density):
    sparse = _sparse(64 * 90, density, shape=(64, 90))
    dense_values = sparse.to_dense()
    dense_values.view(-1)[7] = -0.0  # a stored -0.0 is a value, not an absent entry
    low = LowRankDelta(torch.randn(64, 2), torch.randn(2, 90), (64, 90))
    patch = ErasurePatch({"unet.s": sparse, "unet.d": DenseDelta(dense_values), "unet.l": low}, {"method": "t"})
    path = patch.save(tmp_path / "p.safetensors", dtype="float32")
    loaded = load_patch(path)
    for key, delta in patch.deltas.items():
        assert loaded.deltas[key].kind == delta.kind
        assert torch.equal(_bits(loaded.deltas[key].to_dense()), _bits(delta.to_dense())), key
    if density < 15 / 16:  # a sparse delta keeps its touched entries; above 15/16 it is stored dense
        assert torch.equal(loaded.deltas["unet.s"].indices, sparse.indices)
    encodings = _encodings(path)
    assert encodings["unet.s"] == encodings["unet.d"] or density == 0.97  # -0.0 adds a stored entry
    assert (
        encodings["unet.s"]
        == {0.0005: "indices", 0.01: "indices", 0.5: "bitmask", 0.97: "dense", 1.0: "dense"}[density]
    )


def test_default_stores_fp16_and_records_it(tmp_path):
    delta = _sparse(10_000, 0.5)
    patch = ErasurePatch({"unet.w": delta}, {"method": "t"})
    path = patch.save(tmp_path / "p.safetensors")
    header = read_metadata(path)
    assert header["format_version"] == 2 and header["dtype"] == "float16"
    assert header["deltas"]["unet.w"] == {
        "kind": "sparse",
        "shape": [10_000],
        "encoding": "bitmask",
        "dtype": "float16",
        "count": delta.values.numel(),
    }
    loaded = load_patch(path).deltas["unet.w"]
    assert loaded.values.dtype == torch.float16
    assert torch.equal(loaded.values, delta.values.half())  # round to nearest, nothing else
    assert _data_bytes(path) == patch.nbytes == 10_000 // 8 + 2 * delta.values.numel()


@pytest.mark.parametrize(
    ("values_dtype", "requested", "stored"),
    [
        (torch.float32, "bfloat16", torch.bfloat16),
        (torch.float32, torch.float16, torch.float16),
        (torch.float64, "fp32", torch.float32),
        (torch.float16, "float32", torch.float16),  # never widened
        (torch.bfloat16, None, torch.bfloat16),  # bf16 -> fp16 could lose bits
    ],
)
def test_values_wider_than_the_storage_dtype_are_rounded_to_it(tmp_path, values_dtype, requested, stored):
    delta = DenseDelta(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)).to(values_dtype))
    path = ErasurePatch({"unet.w": delta}).save(tmp_path / "p.safetensors", dtype=requested)
    loaded = load_patch(path).deltas["unet.w"]
    assert loaded.values.dtype == stored
    assert torch.equal(loaded.values, delta.values.to(stored))


def test_a_tensor_fp16_cannot_hold_stays_float32(tmp_path, caplog):
    delta = DenseDelta(torch.tensor([1.0, 1e5]))
    with caplog.at_level(logging.WARNING):
        path = ErasurePatch({"unet.w": delta}).save(tmp_path / "p.safetensors")
    assert "float32" in caplog.text
    assert read_metadata(path)["deltas"]["unet.w"]["dtype"] == "float32"
    assert torch.equal(load_patch(path).deltas["unet.w"].values, delta.values)


@pytest.mark.parametrize(
    ("delta", "match"),
    [
        (DenseDelta(torch.tensor([1.0, float("nan")])), "NaN or Inf"),
        (SparseDelta(torch.tensor([3, 1, 3]), torch.tensor([1.0, 2.0, 3.0]), (5,)), "index twice"),
        (DenseDelta(torch.tensor([1, 2])), "floating point"),
    ],
)
def test_save_refuses_what_it_could_not_read_back(tmp_path, delta, match):
    with pytest.raises(ValueError, match=match):
        ErasurePatch({"unet.w": delta}).save(tmp_path / "p.safetensors")
    assert not list(tmp_path.iterdir())


def test_save_refuses_bad_dtype_keys_and_metadata(tmp_path):
    patch = ErasurePatch({"unet.w": DenseDelta(torch.ones(2))})
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        patch.save(tmp_path / "p.safetensors", dtype="int8")
    with pytest.raises(ValueError, match="without '::'"):
        ErasurePatch({"unet.w::x": DenseDelta(torch.ones(2))}).save(tmp_path / "p.safetensors")
    with pytest.raises(ValueError, match="scale.*fix patch.metadata"):
        ErasurePatch(patch.deltas, {"scale": float("nan")}).save(tmp_path / "p.safetensors")
    assert not list(tmp_path.iterdir())


def test_unsorted_sparse_indices_are_written_in_order(tmp_path):
    delta = SparseDelta(torch.tensor([9, 2, 5]), torch.tensor([1.0, 2.0, 3.0]), (10,))
    loaded = load_patch(ErasurePatch({"unet.w": delta}).save(tmp_path / "p.safetensors")).deltas["unet.w"]
    assert loaded.indices.tolist() == [2, 5, 9] and loaded.values.tolist() == [2.0, 3.0, 1.0]


def test_stored_is_what_load_returns(tmp_path):
    patch = ErasurePatch({"unet.a": _sparse(5000, 0.3), "unet.b": DenseDelta(torch.randn(30, 7))}, {"method": "t"})
    for dtype in (None, "bfloat16", "float32"):
        loaded = load_patch(patch.save(tmp_path / "p.safetensors", dtype=dtype))
        stored = patch.stored(dtype)
        for key in patch.deltas:
            assert torch.equal(_bits(loaded.deltas[key].to_dense()), _bits(stored.deltas[key].to_dense()))


def test_format_1_files_still_load():
    """The fixture was written by the format-1 writer: int32 indices, fp32 values, no encoding fields."""
    path = FIXTURES / "patch_format_v1.safetensors"
    assert read_metadata(path)["format_version"] == 1
    patch = load_patch(path)
    gen = torch.Generator().manual_seed(0)
    dense, up, down = (
        torch.randn(2, 3, 1, 1, generator=gen),
        torch.randn(3, 1, generator=gen),
        torch.randn(1, 2, generator=gen),
    )
    assert patch.metadata["method"] == "test" and patch.metadata["concept"] == "a cat"
    assert torch.equal(patch.deltas["unet.conv.weight"].to_dense(), dense)
    sparse = patch.deltas["unet.attn.to_k.weight"]
    assert sparse.indices.tolist() == [1, 4, 10] and sparse.values.tolist() == [0.5, -1.25, 2.0]
    assert torch.equal(patch.deltas["text_encoder.proj.weight"].to_dense(), up @ down)


def test_format_1_sparse_entries_in_any_order_load_sorted(tmp_path):
    from safetensors.torch import save_file

    from erasekit.patch.io import _digest

    tensors = {
        "unet.w::indices": torch.tensor([4, 0, 2], dtype=torch.int32),
        "unet.w::values": torch.tensor([4.0, 0.5, 2.0]),
    }
    header = {
        "format_version": 1,
        "deltas": {"unet.w": {"kind": "sparse", "shape": [5]}},
        "metadata": {"erasekit_version": "0.1.0"},
        "sha256": _digest(tensors),
    }
    save_file(tensors, str(tmp_path / "p.safetensors"), metadata={"erasekit_patch": json.dumps(header)})
    delta = load_patch(tmp_path / "p.safetensors").deltas["unet.w"]
    assert delta.indices.tolist() == [0, 2, 4] and delta.values.tolist() == [0.5, 2.0, 4.0]


@pytest.mark.parametrize("model_dtype", [torch.float32, torch.float16])
def test_a_loaded_fp16_patch_applies_its_stored_delta_and_removes_bit_exactly(tmp_path, tiny_pipe, model_dtype):
    pipe = tiny_pipe.to(dtype=model_dtype)
    params = {f"unet.{n}": p for n, p in pipe.unet.named_parameters() if "attn2" in n}
    deltas = {k: _sparse(p.numel(), 0.5, seed=i, shape=tuple(p.shape)) for i, (k, p) in enumerate(params.items())}
    loaded = load_patch(ErasurePatch(deltas, {"method": "t"}).save(tmp_path / "p.safetensors"))
    original = state_of(pipe.unet)
    with loaded.applied(pipe, check_fingerprint=False):
        for key, p in params.items():
            base = original[key[5:]].float()
            expected = (base + loaded.deltas[key].to_dense()).to(model_dtype)
            assert torch.equal(p.detach(), expected), key
    assert_bit_equal(state_of(pipe.unet), original)
    half = loaded.scaled(0.5)  # scaling in memory agrees with applying at a scale
    with half.applied(pipe, check_fingerprint=False):
        scaled = state_of(pipe.unet)
    with loaded.applied(pipe, scale=0.5, check_fingerprint=False):
        assert_bit_equal(state_of(pipe.unet), scaled)


# ---- sizes --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("density", [0.0, 0.001, 0.03, 0.2, 0.5, 0.9, 0.93, 0.94, 0.99, 1.0])
@pytest.mark.parametrize("numel", [1, 9, 300, 40_000, 70_000])
def test_a_sparse_delta_never_takes_more_than_its_dense_fp16_form(numel, density):
    delta = _sparse(numel, density)
    if delta.values.numel() == 0:
        return
    assert ErasurePatch({"unet.w": delta}).nbytes <= 2 * numel


def _salun_like(sizes: list[int], ratio: float, seed: int = 0) -> ErasurePatch:
    """Deltas on the globally most salient ``ratio`` of all entries; tensors differ in how salient they are, so
    some are kept almost whole and some almost not at all, as with a real SalUn mask."""
    gen = torch.Generator().manual_seed(seed)
    levels = torch.logspace(-1.5, 2.5, len(sizes))[torch.randperm(len(sizes), generator=gen)]
    scores = [torch.rand(n, generator=gen) ** level for n, level in zip(sizes, levels, strict=True)]
    threshold = torch.cat(scores).kthvalue(int((1 - ratio) * sum(sizes))).values
    deltas = {}
    for i, s in enumerate(scores):
        idx = (s > threshold).nonzero().squeeze(1)
        if idx.numel():
            values = (torch.rand(idx.numel(), generator=gen) - 0.5) * 2e-4
            deltas[f"unet.block{i}.weight"] = SparseDelta(idx, values, (sizes[i],))
    return ErasurePatch(deltas, {"method": "salun"})


def test_salun_like_patch_file_is_no_larger_than_the_dense_fp16_delta(tmp_path):
    patch = _salun_like([4096 * k for k in (1, 2, 3, 5, 8, 13, 21)] * 4, 0.5)
    densities = [d.values.numel() / math.prod(d.shape) for d in patch.deltas.values()]
    assert min(densities) < 0.03 and max(densities) > 0.94  # every encoding is exercised
    path = patch.save(tmp_path / "p.safetensors")
    dense_fp16 = 2 * sum(math.prod(d.shape) for d in patch.deltas.values())
    assert _data_bytes(path) <= dense_fp16 and path.stat().st_size <= dense_fp16
    assert set(_encodings(path).values()) == {"bitmask", "dense", "indices"}


def test_quickstart_sized_salun_patch_is_under_8_mb(tmp_path):
    """The MiniCanvas UNet has 6,600,900 candidate weights; SalUn's mask keeps half of them."""
    sizes = [1_100_150] * 6
    patch = _salun_like(sizes, 0.5)
    assert abs(patch.num_changed - 3_300_450) < 1000
    path = patch.save(tmp_path / "p.safetensors")
    assert path.stat().st_size <= 8_000_000
    assert _data_bytes(path) == patch.nbytes
    assert patch.nbytes <= 2 * sum(math.prod(d.shape) for d in patch.deltas.values())
