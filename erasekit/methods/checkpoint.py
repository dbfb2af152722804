"""Resumable checkpoints: trainable tensors, optimizer state and RNG state in one safetensors file.

Everything non-tensor (step, config, optimizer hyper-parameters) goes in the JSON header; loading never unpickles.
A checkpoint resumes only the run that wrote it: same method, concept, anchor, result-shaping config and the same
base weights (an exact digest of the trained tensors' original values), so a resumed run ends bit-identical to an
uninterrupted one. The file is written atomically; a process killed while writing it leaves the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .._io import save_safetensors

FILENAME = "checkpoint.safetensors"
HEADER_KEY = "erasekit_checkpoint"


def _flatten_optimizer(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for k, v in entry.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}::{idx}::{k}"] = v
            else:
                scalars[f"{idx}::{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict, info: dict) -> None:
    state: dict = {}
    for name, t in tensors.items():
        if name.startswith(prefix + "::"):
            _, idx, k = name.split("::")
            state.setdefault(int(idx), {})[k] = t
    for name, v in info["scalars"].items():
        idx, k = name.split("::")
        state.setdefault(int(idx), {})[k] = v
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def _identity(state) -> dict:
    return {
        "method": state.method_name,
        "concept": state.concept,
        "anchor": state.anchor,
        "config": {k: v for k, v in state.config.to_dict().items() if k not in _RESUMABLE_FIELDS},
        "base_digest": _base_digest(state),
    }


def _base_digest(state) -> str:
    """BLAKE2b of the trained tensors' original values (names, dtypes, shapes, bytes), computed once per run: a
    checkpoint of another model, precision or target set is refused instead of resumed into a wrong patch."""
    cached = state.ctx.get("_base_digest")
    if cached is None:
        h = hashlib.blake2b(digest_size=16)
        for name in sorted(state.params):
            t = state.base[name].detach()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.contiguous().cpu().reshape(-1).view(torch.uint8).numpy())
        cached = state.ctx["_base_digest"] = h.hexdigest()
    return cached


# A resumed run may change its length (steps) and how it runs (the RunConfig, which is not part of the config), and
# nothing else it computes.
_RESUMABLE_FIELDS: tuple[str, ...] = ("steps",)


def save_checkpoint(state, directory: str | Path) -> Path:
    """Write ``directory/checkpoint.safetensors`` atomically."""
    tensors = {f"param::{k}": v.detach() for k, v in state.params.items()}
    opt_tensors, opt_info = _flatten_optimizer("opt", state.optimizer)
    tensors.update(opt_tensors)
    tensors["rng::cpu"] = state.generator.get_state()
    extra = state.method.extra_state()
    tensors.update({f"extra::{k}": v for k, v in extra.items()})
    header = {**_identity(state), "step": state.step, "optimizer": opt_info}
    return save_safetensors(tensors, Path(directory) / FILENAME, metadata={HEADER_KEY: json.dumps(header)})


def load_checkpoint(state, directory: str | Path) -> bool:
    """Restore ``state`` from ``directory`` if a checkpoint is there; returns whether it did.

    Raises:
        ValueError: the checkpoint belongs to another method, concept or configuration.
    """
    from safetensors import safe_open

    path = Path(directory) / FILENAME
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})[HEADER_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors and json raise their own types for a damaged file
        why = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"The checkpoint {path} cannot be read ({why}); delete it to start the run over.") from err
    mine = _identity(state)
    theirs = {k: header.get(k) for k in mine}
    if theirs != json.loads(json.dumps(mine)):
        differ = [k for k in mine if theirs[k] != json.loads(json.dumps(mine[k]))]
        what = "the base model's weights" if differ == ["base_digest"] else ", ".join(differ)
        raise ValueError(
            f"The checkpoint in {directory} was made by a different run ({what} differ); rerun with the same "
            "settings, or delete it or point checkpoint_dir elsewhere to start over."
        )
    # the method's own state first: it may decide the trained tensors' shapes (SalUn trains its mask's entries)
    state.method.load_extra_state({k[len("extra::") :]: v for k, v in tensors.items() if k.startswith("extra::")})
    with torch.no_grad():
        for k, p in state.params.items():
            saved = tensors[f"param::{k}"]
            if saved.shape != p.shape:
                raise ValueError(
                    f"The checkpoint in {directory} holds {k} with shape {tuple(saved.shape)}, this run trains "
                    f"{tuple(p.shape)} (written by another version, or under another masked_training or "
                    "optimizer_states); rerun with the same run options, or delete it to start over."
                )
            p.copy_(saved)
    _restore_optimizer("opt", state.optimizer, tensors, header["optimizer"])
    state.generator.set_state(tensors["rng::cpu"])
    state.step = int(header["step"])
    return True
