"""Malformed patch files: each of these mutations of a valid file must make ``erasekit.load_patch`` raise a one-line
``ValueError`` that names the fix, before a patch exists that could be applied.

``test_outcome_table`` writes the cases and their messages as a Markdown table to the path in
``$ERASEKIT_BAD_INPUT_DIR/patch-files.md`` (a temporary file when it is unset; ``make test`` sets it to
``docs/reference/bad-inputs``).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

import erasekit
from erasekit.patch import DenseDelta, ErasurePatch, LowRankDelta, SparseDelta, read_metadata
from erasekit.patch.io import _digest

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "patch_format_v1.safetensors"
FIX = re.compile(r"re-create it|upgrade erasekit|load_lora_weights|check the path")
KEY = "erasekit_patch"
SEED = 32


def _valid_patch() -> ErasurePatch:
    gen = torch.Generator().manual_seed(0)
    half = torch.rand(1600, generator=gen) < 0.5
    deltas = {
        "unet.conv_in.weight": DenseDelta(torch.randn(4, 3, 3, 3, generator=gen)),  # dense
        "unet.attn.to_k.weight": SparseDelta(
            half.nonzero().squeeze(1), torch.randn(int(half.sum()), generator=gen), (40, 40)
        ),  # bitmask
        "unet.attn.to_v.weight": SparseDelta(
            torch.tensor([3, 70, 900, 1201, 1599]), torch.randn(5, generator=gen), (40, 40)
        ),  # indices
        "text_encoder.proj.weight": LowRankDelta(
            torch.randn(8, 2, generator=gen), torch.randn(2, 6, generator=gen), (8, 6)
        ),
    }
    meta = {
        "method": "salun",
        "concept": "a cat",
        "config": {"steps": 1},
        "base_fingerprint": {"unet": {"structure": "0123456789abcdef", "probe": [0.1, -0.2]}},
    }
    return ErasurePatch(deltas, meta)


# ---- byte-level helpers ---------------------------------------------------------------------------------------------
def _split(raw: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _frame(header_text: str, data: bytes) -> bytes:
    text = header_text.encode()
    return len(text).to_bytes(8, "little") + text + data


def _st(fn: Callable[[dict], object]) -> Callable[[bytes], bytes]:
    """Edit the safetensors header (tensor table and __metadata__)."""

    def mutate(raw: bytes) -> bytes:
        header, data = _split(raw)
        fn(header)
        return _frame(json.dumps(header), data)

    return mutate


def _hdr(fn: Callable[[dict], object]) -> Callable[[bytes], bytes]:
    """Edit the erasekit header (the JSON stored under __metadata__[erasekit_patch])."""

    def edit(st: dict) -> None:
        header = json.loads(st["__metadata__"][KEY])
        fn(header)
        st["__metadata__"][KEY] = json.dumps(header)

    return _st(edit)


def _raw_hdr(fn: Callable[[str], str]) -> Callable[[bytes], bytes]:
    """Edit the erasekit header as text (for what JSON objects cannot express)."""

    def edit(st: dict) -> None:
        st["__metadata__"][KEY] = fn(st["__metadata__"][KEY])

    return _st(edit)


def _tensors(fn: Callable[[dict, dict], object], resign: bool = True) -> Callable[[bytes], bytes]:
    """Edit the tensors (and the erasekit header); re-sign the checksum so the check under test is the one that fires."""

    def mutate(raw: bytes) -> bytes:
        st, _ = _split(raw)
        tensors, header = load_bytes(raw), json.loads(st["__metadata__"][KEY])
        fn(tensors, header)
        if resign:
            header["sha256"] = _digest(tensors)
        return save_bytes(tensors, metadata={KEY: json.dumps(header), "format": "pt"})

    return mutate


def _cut(n: int | Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    return lambda raw: raw[: n(raw) if callable(n) else n]


def _header_end(raw: bytes) -> int:
    return 8 + int.from_bytes(raw[:8], "little")


def _tensor_start(i: int) -> Callable[[bytes], int]:
    """The byte at which the i-th tensor (in file order) starts."""

    def where(raw: bytes) -> int:
        st, _ = _split(raw)
        starts = sorted(v["data_offsets"][0] for k, v in st.items() if k != "__metadata__")
        return _header_end(raw) + starts[i]

    return where


def _set(path: list[str], value) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        for p in path[:-1]:
            d = d[p]
        d[path[-1]] = value

    return edit


def _drop(path: list[str]) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        for p in path[:-1]:
            d = d[p]
        del d[path[-1]]

    return edit


def _set_value(name: str, index: int, value: float) -> Callable[[dict, dict], None]:
    def edit(tensors: dict, _header: dict) -> None:
        tensors[name].view(-1)[index] = value

    return edit


def _flip_data_byte(seed: int) -> Callable[[bytes], bytes]:
    def mutate(raw: bytes) -> bytes:
        pos = random.Random(seed).randrange(_header_end(raw), len(raw))
        out = bytearray(raw)
        out[pos] ^= 0xFF
        return bytes(out)

    return mutate


def _random_cut(seed: int) -> Callable[[bytes], bytes]:
    return lambda raw: raw[: random.Random(seed).randrange(0, len(raw))]


def _length(value: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    return lambda raw: value(raw).to_bytes(8, "little") + raw[8:]


def _count_edit(key: str, delta: int) -> Callable[[dict], None]:
    def edit(header: dict) -> None:
        header["deltas"][key]["count"] += delta

    return edit


def _extra_tensor(tensors: dict, _header: dict) -> None:
    tensors["unet.stray.weight::dense"] = torch.zeros(2, dtype=torch.float16)


def _drop_tensor(name: str) -> Callable[[dict, dict], None]:
    return lambda tensors, _header: tensors.pop(name)


def _retype(name: str, dtype: torch.dtype) -> Callable[[dict, dict], None]:
    def edit(tensors: dict, _header: dict) -> None:
        tensors[name] = tensors[name].to(dtype)

    return edit


def _bitmask_bit(bit: int) -> Callable[[dict, dict], None]:
    def edit(tensors: dict, _header: dict) -> None:
        tensors["unet.attn.to_k.weight::bitmask"][bit // 8] ^= 1 << (bit % 8)

    return edit


def _swap_indices(tensors: dict, _header: dict) -> None:
    idx = tensors["unet.attn.to_v.weight::indices"]
    idx[1] = idx[0]


def _overlap(st: dict) -> None:
    name = sorted((v["data_offsets"][0], k) for k, v in st.items() if k != "__metadata__")[1][1]
    st[name]["data_offsets"] = [o - 2 for o in st[name]["data_offsets"]]


def _duplicate_tensor_name(raw: bytes) -> bytes:
    header, data = _split(raw)
    name, info = next((k, v) for k, v in header.items() if k != "__metadata__")
    text = json.dumps(header)
    return _frame(text[:-1] + f", {json.dumps(name)}: {json.dumps(info)}}}", data)


def _v1(mutate: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """Apply ``mutate`` to the format-1 fixture instead of the format-2 file."""
    return lambda _raw: mutate(FIXTURE_V1.read_bytes())


K_DENSE, K_BITS, K_IDX, K_LOW = (
    "unet.conv_in.weight",
    "unet.attn.to_k.weight",
    "unet.attn.to_v.weight",
    "text_encoder.proj.weight",
)
TRUNCATED = r"too short|header length field|truncated"

# (case, mutation of the valid file's bytes, what the message must say)
CASES: list[tuple[str, Callable[[bytes], bytes], str]] = [
    # truncated at every structural boundary
    ("empty file", _cut(0), "too short"),
    ("cut inside the length field", _cut(4), "too short"),
    ("cut after the length field", _cut(8), "header length field"),
    ("cut inside the JSON header", _cut(lambda raw: _header_end(raw) // 2), "header length field"),
    ("cut at the end of the header", _cut(_header_end), "truncated"),
    *[(f"cut at the start of tensor {i + 1}", _cut(_tensor_start(i)), "truncated") for i in range(1, 7)],
    ("cut one byte short", _cut(lambda raw: len(raw) - 1), "truncated"),
    *[(f"cut at a seeded point ({SEED + i})", _random_cut(SEED + i), TRUNCATED) for i in range(3)],
    ("bytes appended", lambda raw: raw + b"\0" * 16, "bytes follow the last tensor"),
    # the length field and the safetensors header
    ("header length larger than the file", _length(lambda raw: len(raw)), "header length field"),
    ("header length 2**63", _length(lambda raw: 2**63), "header length field"),
    ("header length too small", _length(lambda raw: int.from_bytes(raw[:8], "little") - 10), "not valid JSON"),
    ("safetensors header not JSON", lambda raw: raw[:8] + b"x" + raw[9:], "not valid JSON"),
    ("safetensors header not UTF-8", lambda raw: raw[:8] + b"\xff" + raw[9:], "not UTF-8"),
    ("safetensors header a JSON list", lambda raw: _frame(json.dumps([1]), _split(raw)[1]), "not a JSON object"),
    ("duplicated tensor name", _duplicate_tensor_name, "twice"),
    ("tensor dtype unknown to patches", _st(_set([f"{K_DENSE}::dense", "dtype"], "I8")), "no erasekit patch stores"),
    ("tensor byte ranges overlap", _st(_overlap), "overlap or gap"),
    ("tensor shape disagrees with its bytes", _st(_set([f"{K_DENSE}::dense", "shape"], [4, 3, 3, 2])), "needs"),
    ("__metadata__ not strings", _st(_set(["__metadata__", "format"], 1)), "map of strings"),
    # the erasekit header
    ("no erasekit header", _st(_drop(["__metadata__", KEY])), "not an erasekit patch"),
    ("erasekit header not JSON", _raw_hdr(lambda text: text[:-5]), "not valid JSON"),
    ("erasekit header a JSON list", _raw_hdr(lambda text: "[]"), "not a JSON object"),
    ("duplicated header key", _raw_hdr(lambda text: text[:-1] + ', "deltas": {}}'), "'deltas' twice"),
    ("format_version missing", _hdr(_drop(["format_version"])), "format_version is None"),
    ("format_version from the future", _hdr(_set(["format_version"], 3)), "upgrade erasekit"),
    ("format_version a string", _hdr(_set(["format_version"], "2")), "not a whole number"),
    ("format_version 0", _hdr(_set(["format_version"], 0)), "does not exist"),
    ("deltas missing", _hdr(_drop(["deltas"])), "lacks the field deltas"),
    ("deltas not an object", _hdr(_set(["deltas"], [])), "deltas field is not a JSON object"),
    ("unknown header field", _hdr(_set(["compression"], "zstd")), "unknown field compression"),
    ("storage dtype unknown", _hdr(_set(["dtype"], "float8")), "header dtype"),
    ("sha256 not a digest", _hdr(_set(["sha256"], "abc")), "sha256 field"),
    # metadata
    ("metadata missing", _hdr(_drop(["metadata"])), "lacks the field metadata"),
    ("metadata not an object", _hdr(_set(["metadata"], "salun")), "metadata is not a JSON object"),
    ("erasekit_version missing", _hdr(_drop(["metadata", "erasekit_version"])), "erasekit_version"),
    ("method not a string", _hdr(_set(["metadata", "method"], 7)), "field method is int"),
    ("config not an object", _hdr(_set(["metadata", "config"], "steps=1")), "field config is str"),
    ("scale not finite", _raw_hdr(lambda text: text.replace('"method"', '"scale": NaN, "method"')), "scale"),
    ("base_fingerprint without probe", _hdr(_drop(["metadata", "base_fingerprint", "unet", "probe"])), "probe"),
    # delta entries against their tensors
    ("delta kind unknown", _hdr(_set(["deltas", K_DENSE, "kind"], "fourier")), "unknown delta kind"),
    ("delta kind missing", _hdr(_drop(["deltas", K_DENSE, "kind"])), "lacks the field kind"),
    ("encoding unknown", _hdr(_set(["deltas", K_BITS, "encoding"], "rle")), "unknown encoding 'rle'"),
    ("encoding the kind cannot use", _hdr(_set(["deltas", K_LOW, "encoding"], "bitmask")), "cannot use"),
    (
        "delta key without a component",
        _hdr(lambda h: h["deltas"].update({"weight": h["deltas"].pop(K_DENSE)})),
        "'<component>.<parameter>'",
    ),
    ("shape negative", _hdr(_set(["deltas", K_DENSE, "shape"], [4, -3, 3, 3])), "non-negative"),
    ("shape disagrees with the tensor", _hdr(_set(["deltas", K_DENSE, "shape"], [4, 27])), "dense values have shape"),
    ("header dtype disagrees with the tensor", _hdr(_set(["deltas", K_DENSE, "dtype"], "float32")), "its header says"),
    ("count disagrees with the values", _hdr(_count_edit(K_IDX, 1)), r"not \[6\] \(its count\)"),
    ("count missing", _hdr(_drop(["deltas", K_BITS, "count"])), "lacks the field count"),
    ("low-rank factors of the wrong shape", _hdr(_set(["deltas", K_LOW, "shape"], [8, 7])), "does not make"),
    ("tensor missing", _tensors(_drop_tensor(f"{K_BITS}::values")), "is missing"),
    ("tensor that belongs to no delta", _tensors(_extra_tensor), "belong to no delta"),
    ("indices stored as floats", _tensors(_retype(f"{K_IDX}::indices", torch.float32)), "cannot index"),
    ("indices too narrow for the tensor", _tensors(_retype(f"{K_IDX}::indices", torch.uint8)), "cannot index"),
    ("values of another dtype", _tensors(_retype(f"{K_IDX}::values", torch.bfloat16)), "its header says"),
    (
        "bitmask of the wrong length",
        _tensors(lambda t, h: t.update({f"{K_BITS}::bitmask": t[f"{K_BITS}::bitmask"][:-1].clone()})),
        "bitmask is not 200",
    ),
    # the values themselves (checksum re-signed)
    ("index out of range", _tensors(_set_value(f"{K_IDX}::indices", 4, 1600)), "outside"),
    ("negative index", _tensors(_set_value(f"{K_IDX}::indices", 0, -1)), "outside"),
    ("duplicated index", _tensors(_swap_indices), "strictly increasing"),
    ("NaN in sparse values", _tensors(_set_value(f"{K_IDX}::values", 2, float("nan"))), "NaN/Inf"),
    ("Inf in dense values", _tensors(_set_value(f"{K_DENSE}::dense", 5, float("inf"))), "NaN/Inf"),
    ("-Inf in a low-rank factor", _tensors(_set_value(f"{K_LOW}::up", 0, float("-inf"))), "NaN/Inf"),
    ("bitmask popcount differs from the values", _tensors(_bitmask_bit(0)), "bits set but"),
    # corrupted bytes (checksum not re-signed)
    ("value changed, checksum kept", _tensors(_set_value(f"{K_DENSE}::dense", 0, 0.5), resign=False), "SHA-256"),
    *[(f"data byte flipped at a seeded place ({SEED + i})", _flip_data_byte(SEED + i), "SHA-256") for i in range(3)],
    # format 1 files
    ("format 1: cut at the end of the header", _v1(_cut(_header_end)), "truncated"),
    (
        "format 1: an encoding field",
        _v1(_hdr(_set(["deltas", "unet.conv.weight", "encoding"], "dense"))),
        "unknown field encoding",
    ),
    ("format 1: index out of range", _v1(_tensors(_set_value("unet.attn.to_k.weight::indices", 0, 12))), "outside"),
]


def _padding_case(_raw: bytes) -> bytes:
    """A 40x40 tensor's bitmask has no padding bits: a 100-entry one has four."""
    patch = ErasurePatch({"unet.w": SparseDelta(torch.arange(0, 100, 2), torch.ones(50), (100,))})
    raw = _save(patch)
    return _tensors(lambda t, h: t["unet.w::bitmask"].__setitem__(-1, t["unet.w::bitmask"][-1] | 0x80))(raw)


CASES.append(("bitmask padding bit set", _padding_case, "padding bits"))
CASES.append(
    (
        "duplicated delta key",
        _raw_hdr(lambda t: t.replace('"deltas": {', f'"deltas": {{"{K_DENSE}": {{}}, ', 1)),
        "twice",
    )
)


def _save(patch: ErasurePatch) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return patch.save(Path(tmp) / "p.safetensors").read_bytes()


@pytest.fixture(scope="module")
def valid_bytes() -> bytes:
    return _save(_valid_patch())


def test_the_valid_file_loads_and_uses_every_encoding(tmp_path, valid_bytes):
    path = tmp_path / "p.safetensors"
    path.write_bytes(valid_bytes)
    encodings = {k: e["encoding"] for k, e in read_metadata(path)["deltas"].items()}
    assert encodings == {K_DENSE: "dense", K_BITS: "bitmask", K_IDX: "indices", K_LOW: "lowrank"}
    assert len(erasekit.load_patch(path)) == 4
    assert len(erasekit.load_patch(FIXTURE_V1)) == 3


def _outcome(mutate: Callable[[bytes], bytes], valid: bytes, folder: Path) -> str:
    path = folder / "bad.safetensors"
    path.write_bytes(mutate(valid))
    try:
        erasekit.load_patch(path)
    except ValueError as err:
        return str(err)
    finally:
        path.unlink()
    return "(loaded without an error)"


@pytest.mark.parametrize(("case", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_patch_file_gives_a_one_line_error_naming_the_fix(tmp_path, valid_bytes, case, mutate, expected):
    message = _outcome(mutate, valid_bytes, tmp_path)
    assert message.startswith("Cannot load patch ") and str(tmp_path) in message, message
    assert "\n" not in message and FIX.search(message), message
    assert re.search(expected, message), message


def test_enough_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="No patch file.*check the path"):
        erasekit.load_patch(tmp_path / "none.safetensors")


def test_outcome_table(tmp_path, valid_bytes):
    """Every case and its message, as Markdown; the file's own path is written as <file>."""
    rows = [
        "# Malformed patch files\n",
        "Generated by `tests/patch/test_bad_patch_files.py`.\n",
        "| case | outcome |",
        "| --- | --- |",
    ]
    for case, mutate, expected in CASES:
        message = _outcome(mutate, valid_bytes, tmp_path)
        ok = message.startswith("Cannot load patch ") and re.search(expected, message) and FIX.search(message)
        text = message.replace(str(tmp_path / "bad.safetensors"), "<file>").replace("|", "\\|")
        rows.append(f"| {case} | {'ValueError' if ok else 'UNEXPECTED'}: {text} |")
    folder = os.environ.get("ERASEKIT_BAD_INPUT_DIR")
    target = Path(folder) / "patch-files.md" if folder else tmp_path / "bad_patch_files.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert "UNEXPECTED" not in target.read_text(encoding="utf-8")
