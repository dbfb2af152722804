"""Checks on a patch file's structure, run before any tensor data is read.

Each check raises :class:`FormatProblem` with what is wrong and the fix to name; ``io.load_patch`` turns it into a
one-line ``ValueError`` that starts with the file's path. The layout they enforce is docs/reference/patch-format.md.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from .encoding import INDEX_DTYPES, KIND_ENCODINGS, PARTS, STORAGE_DTYPES, dtype_name

HEADER_KEY = "erasekit_patch"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
DAMAGED = "re-create it (ErasurePatch.save, `erasekit erase --out`) or copy it again"
UPGRADE = "upgrade erasekit (pip install -U erasekit) to read it"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit

# safetensors dtype names -> torch dtypes; a patch file never holds any other
ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "U8": torch.uint8,
}
_V1_FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_TOP_FIELDS = {1: {"format_version", "deltas", "metadata", "sha256"}}
_TOP_FIELDS[2] = _TOP_FIELDS[1] | {"dtype"}
_ENTRY_FIELDS = {1: {"kind", "shape"}, 2: {"kind", "shape", "encoding", "dtype", "count"}}
_SHA256 = re.compile(r"[0-9a-f]{64}")


class FormatProblem(ValueError):
    """What is wrong with a patch file, and the fix to name (re-create or copy it, or upgrade erasekit)."""

    def __init__(self, problem: str, fix: str = DAMAGED):
        super().__init__(problem)
        self.fix = fix


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise FormatProblem(f"its JSON header lists the key {dup!r} twice")
    return dict(pairs)


def parse_json(text: str, what: str):
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise FormatProblem(f"its {what} is not valid JSON ({err.msg} at character {err.pos})") from err


# ---- the safetensors framing ------------------------------------------------------------------------------------------
def read_safetensors_header(path: Path) -> dict[str, dict]:
    """The safetensors header of ``path`` (tensor name -> dtype, shape, data_offsets; plus ``__metadata__``), checked:
    the length field fits the file, the JSON is an object without duplicated keys, and the tensors' byte ranges tile
    the data section exactly (so a file cut at any boundary, or with bytes appended, is refused here)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise FormatProblem(f"it is {size} bytes long, too short for a safetensors file (truncated?)")
        length = int.from_bytes(prefix, "little")
        if length > size - 8 or length > MAX_HEADER_BYTES:
            raise FormatProblem(f"its header length field says {length} bytes but the file has {size - 8} after it")
        raw = f.read(length)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FormatProblem(f"its safetensors header is not UTF-8 text (byte {err.start})") from err
    header = parse_json(text, "safetensors header")
    if not isinstance(header, dict):
        raise FormatProblem("its safetensors header is not a JSON object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatProblem("its safetensors __metadata__ is not a map of strings")
    _check_offsets({k: v for k, v in header.items() if k != "__metadata__"}, size - 8 - length)
    return header


def _check_tensor_info(name: str, info) -> tuple[int, int]:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise FormatProblem(f"tensor {name!r} needs exactly dtype, shape and data_offsets in the safetensors header")
    if info["dtype"] not in ST_DTYPES:
        raise FormatProblem(f"tensor {name!r} has dtype {info['dtype']!r}, which no erasekit patch stores")
    shape, offsets = info["shape"], info["data_offsets"]
    if not _is_int_list(shape) or not _is_int_list(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
        raise FormatProblem(f"tensor {name!r} has a malformed shape {shape!r} or data_offsets {offsets!r}")
    need = math.prod(shape) * ST_DTYPES[info["dtype"]].itemsize
    if offsets[1] - offsets[0] != need:
        raise FormatProblem(
            f"tensor {name!r} spans {offsets[1] - offsets[0]} bytes but {info['dtype']} {shape} needs {need}"
        )
    return offsets[0], offsets[1]


def _check_offsets(tensors: dict, data_bytes: int) -> None:
    spans = sorted((_check_tensor_info(name, info), name) for name, info in tensors.items())
    end = 0
    for (begin, stop), name in spans:
        if begin != end:
            raise FormatProblem(f"tensor {name!r} starts at byte {begin} of the data, not {end} (overlap or gap)")
        if stop > data_bytes:
            raise FormatProblem(
                f"tensor {name!r} ends at byte {stop} of the data but the file holds {data_bytes} (truncated?)"
            )
        end = stop
    if end != data_bytes:
        raise FormatProblem(f"{data_bytes - end} bytes follow the last tensor (appended to, or not a patch)")


def _is_int_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


# ---- the erasekit header ----------------------------------------------------------------------------------------------
def erasekit_header(st_header: dict) -> dict:
    """The erasekit header inside a checked safetensors header, its top-level fields and metadata checked."""
    text = st_header.get("__metadata__", {}).get(HEADER_KEY)
    if text is None:
        raise FormatProblem(
            f"it is a safetensors file without an {HEADER_KEY!r} header, so not an erasekit patch",
            "load LoRA files with pipe.load_lora_weights, and pass load_patch a file ErasurePatch.save wrote",
        )
    header = parse_json(text, f"{HEADER_KEY!r} header")
    if not isinstance(header, dict):
        raise FormatProblem(f"its {HEADER_KEY!r} header is not a JSON object")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise FormatProblem(f"its format_version is {version!r}, not a whole number")
    if version > FORMAT_VERSION:
        raise FormatProblem(
            f"it has patch format {version}; this erasekit reads formats 1 to {FORMAT_VERSION}", UPGRADE
        )
    if version not in READABLE_VERSIONS:
        raise FormatProblem(f"its format_version {version} does not exist (formats start at 1)")
    _check_fields(set(header), _TOP_FIELDS[version], "the header")
    if version >= 2 and header["dtype"] not in STORAGE_DTYPES:
        raise FormatProblem(f"its header dtype {header['dtype']!r} is not one of {sorted(STORAGE_DTYPES)}")
    if not isinstance(header["sha256"], str) or not _SHA256.fullmatch(header["sha256"]):
        raise FormatProblem("its sha256 field is not a SHA-256 hex digest")
    if not isinstance(header["deltas"], dict):
        raise FormatProblem("its deltas field is not a JSON object")
    check_metadata(header["metadata"])
    return header


def _check_fields(present: set, allowed: set, where: str, required: set | None = None) -> None:
    missing = sorted((allowed if required is None else required) - present)
    if missing:
        raise FormatProblem(f"{where} lacks the field{'s' * (len(missing) > 1)} {', '.join(missing)}")
    unknown = sorted(present - allowed)
    if unknown:
        raise FormatProblem(f"{where} has unknown field{'s' * (len(unknown) > 1)} {', '.join(unknown)}", UPGRADE)


def check_metadata(meta) -> None:
    """The metadata fields erasekit reads back have the types it expects (the rest is free-form)."""
    if not isinstance(meta, dict):
        raise FormatProblem("the metadata is not a JSON object")
    if not isinstance(meta.get("erasekit_version"), str):
        raise FormatProblem("the metadata lacks erasekit_version (a string)")
    expected = {"method": (str,), "created": (str,), "config": (dict,), "base_model": (str, type(None))}
    for field, types in expected.items():
        if field in meta and not isinstance(meta[field], types):
            want = " or ".join("null" if t is type(None) else {str: "a string", dict: "an object"}[t] for t in types)
            raise FormatProblem(f"the metadata field {field} is {type(meta[field]).__name__}, not {want}")
    if "concept" in meta and not isinstance(meta["concept"], (str, list, type(None))):
        raise FormatProblem("the metadata field concept is neither a string nor a list")
    scale = meta.get("scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
        raise FormatProblem(f"the metadata field scale is {scale!r}, not a finite number")
    _check_fingerprints(meta.get("base_fingerprint", {}))


def _check_fingerprints(prints) -> None:
    if not isinstance(prints, dict):
        raise FormatProblem("the metadata field base_fingerprint is not a map of component fingerprints")
    for name, fp in prints.items():
        ok = isinstance(fp, dict) and isinstance(fp.get("structure"), str) and isinstance(fp.get("probe"), list)
        if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in fp["probe"]):
            raise FormatProblem(
                f"the base_fingerprint of {name!r} lacks a structure string and a list of probe values"
            )


# ---- the deltas against their tensors --------------------------------------------------------------------------------
def check_layout(header: dict, st_header: dict) -> dict[str, dict]:
    """Every delta entry checked against the tensors of its encoding (presence, dtype, shape) and no tensor left over.

    Returns:
        The entries completed for :func:`encoding.decode` (format 1 entries gain their encoding, dtype and count).
    """
    version = header["format_version"]
    tensors = {k: v for k, v in st_header.items() if k != "__metadata__"}
    entries, used = {}, set()
    for key, entry in header["deltas"].items():
        try:
            entries[key] = _check_entry(key, entry, version, tensors)
        except FormatProblem as err:
            raise FormatProblem(f"delta {key!r}: {err}", err.fix) from err
        used |= {f"{key}::{part}" for part in PARTS[entries[key]["encoding"]]}
    stray = sorted(set(tensors) - used)
    if stray:
        raise FormatProblem(f"tensors {stray[:3]} belong to no delta in its header")
    return entries


def _check_entry(key: str, entry, version: int, tensors: dict) -> dict:
    if not key or "." not in key or "::" in key:
        raise FormatProblem("a delta key is '<component>.<parameter>' without '::'")
    if not isinstance(entry, dict):
        raise FormatProblem("its header entry is not a JSON object")
    if "kind" not in entry:
        raise FormatProblem("its header entry lacks the field kind")
    kind = entry["kind"]
    if kind not in KIND_ENCODINGS:
        raise FormatProblem(f"unknown delta kind {kind!r} (this erasekit reads {', '.join(KIND_ENCODINGS)})", UPGRADE)
    required = {"kind", "shape"} | ({"encoding", "dtype"} if version >= 2 else set())
    _check_fields(set(entry), _ENTRY_FIELDS[version], "its header entry", required)
    if not _is_int_list(entry["shape"]):
        raise FormatProblem(f"shape {entry['shape']!r} is not a list of non-negative whole numbers")
    entry = {"encoding": {"dense": "dense", "sparse": "indices", "lowrank": "lowrank"}[kind], "dtype": None, **entry}
    encoding = entry["encoding"]
    if encoding not in KIND_ENCODINGS[kind]:
        known = encoding in PARTS
        raise FormatProblem(
            f"{'a ' + kind + ' delta cannot use' if known else 'unknown'} encoding {encoding!r}",
            DAMAGED if known else UPGRADE,
        )
    if entry["dtype"] is not None and entry["dtype"] not in STORAGE_DTYPES:
        raise FormatProblem(f"dtype {entry['dtype']!r} is not one of {sorted(STORAGE_DTYPES)}")
    parts = {}
    for part in PARTS[encoding]:
        name = f"{key}::{part}"
        if name not in tensors:
            raise FormatProblem(f"its tensor {name!r} is missing")
        parts[part] = (ST_DTYPES[tensors[name]["dtype"]], list(tensors[name]["shape"]))
    return _check_parts(entry, parts, version)


def _check_parts(entry: dict, parts: dict[str, tuple[torch.dtype, list[int]]], version: int) -> dict:
    shape, encoding = entry["shape"], entry["encoding"]
    numel = math.prod(shape)
    value_parts = [p for p in PARTS[encoding] if p not in ("indices", "bitmask")]
    value_dtype = STORAGE_DTYPES[entry["dtype"]] if entry["dtype"] else parts[value_parts[0]][0]
    for part in value_parts:
        allowed = (value_dtype,) if version >= 2 or len(value_parts) == 1 else _V1_FLOATS
        if parts[part][0] not in allowed or not parts[part][0].is_floating_point:
            raise FormatProblem(
                f"{part} is {dtype_name(parts[part][0])}, not the {dtype_name(value_dtype)} its header says"
            )
    if encoding in ("dense", "lowrank") and "count" in entry:
        raise FormatProblem(f"the {encoding} encoding has no count field")
    if encoding == "lowrank":
        (_, up), (_, down) = parts["up"], parts["down"]
        if len(up) != 2 or len(down) != 2 or up[1] != down[0] or up[0] * down[1] != numel:
            raise FormatProblem(f"up {up} @ down {down} does not make a {shape} matrix")
        return entry
    if encoding == "dense":
        if parts["dense"][1] != shape:
            raise FormatProblem(f"dense values have shape {parts['dense'][1]}, its header says {shape}")
        return entry
    if version >= 2 and "count" not in entry:
        raise FormatProblem(f"its header entry lacks the field count (required by the {encoding} encoding)")
    count = entry.get("count", parts["values"][1][0] if len(parts["values"][1]) == 1 else None)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= numel:
        raise FormatProblem(f"count {count!r} is not a number of entries between 0 and {numel}")
    if parts["values"][1] != [count]:
        raise FormatProblem(f"values have shape {parts['values'][1]}, not [{count}] (its count)")
    if encoding == "indices":
        dtype, ishape = parts["indices"]
        if dtype not in INDEX_DTYPES or torch.iinfo(dtype).max < numel - 1:
            raise FormatProblem(f"indices are {dtype_name(dtype)}, which cannot index {numel} entries")
        if ishape != [count]:
            raise FormatProblem(f"indices have shape {ishape}, not [{count}] (its count)")
    elif parts["bitmask"] != (torch.uint8, [-(-numel // 8)]):
        raise FormatProblem(f"the bitmask is not {-(-numel // 8)} uint8 bytes (one bit per entry of {shape})")
    return {**entry, "count": count, "dtype": entry["dtype"] or dtype_name(value_dtype)}
