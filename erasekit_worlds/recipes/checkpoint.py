"""Training checkpoints of the long recipe stages (the MiniFaces generator, the MiniCanvas UNet).

A checkpoint is one ``.safetensors`` file, written atomically, holding a stage's whole training state: its networks,
the optimisers' moments, the learning-rate schedules' positions and the data generator's RNG state, with a JSON
record of the progress (steps done, seconds so far) and of the settings that made it. Restoring all of it into
freshly built objects lets an interrupted stage end with the same weights as an uninterrupted one; a checkpoint
written with other settings is refused, since resuming it would mix two runs into one model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from erasekit._io import save_safetensors

CHECKPOINT_EVERY = 500  # steps between checkpoints: an interruption loses minutes of CPU work at most


@dataclass
class TrainingState:
    """The live objects a checkpoint saves and restores, by name: networks (their state dicts), optimisers (their
    moments; their settings come from the code that builds them), learning-rate schedulers (their position, which
    sets the optimisers' learning rates on restore) and the generator every batch is drawn with."""

    nets: dict[str, torch.nn.Module]
    opts: dict[str, torch.optim.Optimizer]
    gen: torch.Generator
    scheds: dict = field(default_factory=dict)


def save_checkpoint(path, key: str, state: TrainingState, record: dict) -> None:
    """Write ``state`` and ``record`` (JSON: ``steps_done``, ``seconds``, the settings a resume must match...) to
    ``path`` atomically, the record under the header ``key``: an interruption, even while writing, leaves the last
    complete checkpoint, so a run loses at most the steps since."""
    tensors = {f"{name}.{k}": v for name, net in state.nets.items() for k, v in net.state_dict().items()}
    for name, opt in state.opts.items():
        for i, entry in opt.state_dict()["state"].items():
            tensors.update({f"{name}.{i}.{k}": torch.as_tensor(v) for k, v in entry.items()})
    tensors["rng"] = state.gen.get_state()
    if state.scheds:
        record = {**record, "schedulers": {name: s.state_dict() for name, s in state.scheds.items()}}
    save_safetensors(tensors, path, {key: json.dumps(record)})


def read_checkpoint(path, key: str, title: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The record and the tensors of the checkpoint at ``path`` (on the CPU); a file that is not a readable
    ``title`` checkpoint (``"MiniCanvas UNet"``) is a ValueError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            record = json.loads((f.metadata() or {}).get(key, "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable {title} checkpoint ({e}); delete it to start over") from e
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a {title} checkpoint (no {key!r} header); delete it to start over")
    return record, tensors


def load_checkpoint(path, key: str, title: str, state: TrainingState, identity: dict, labels=None) -> dict:
    """Restore what :func:`save_checkpoint` wrote into ``state``'s freshly built objects; returns the record.

    Args:
        identity: the settings the checkpoint's record must hold, key by key (after a JSON round trip), to be
            resumed; a key the record lacks reads as None.
        labels: names of ``identity``'s keys in the error (``{"excluded": "exclusion list"}``; default the key).

    Raises:
        ValueError: the file is not a readable ``title`` checkpoint, or it was written with other settings (the
            message names them and says how to start over).
    """
    record, tensors = read_checkpoint(path, key, title)
    _check_identity(path, record, identity, labels or {})
    for name, net in state.nets.items():
        prefix = f"{name}."
        net.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, opt in state.opts.items():
        entries: dict[int, dict] = {}
        for k, v in tensors.items():
            head, _, rest = k.partition(".")
            if head == name:
                i, _, field_ = rest.partition(".")
                entries.setdefault(int(i), {})[field_] = v
        opt.load_state_dict({"state": entries, "param_groups": opt.state_dict()["param_groups"]})
    for name, sched in state.scheds.items():
        sched.load_state_dict(record["schedulers"][name])
        for group, lr in zip(sched.optimizer.param_groups, sched.get_last_lr(), strict=True):
            group["lr"] = lr  # what the scheduler's last step set; a fresh optimiser holds the first step's
    state.gen.set_state(tensors["rng"])
    return record


def _check_identity(path, record: dict, identity: dict, labels: dict) -> None:
    """Refuse a checkpoint whose record does not hold ``identity``, naming what differs (the fields, for a config)."""
    ours = json.loads(json.dumps(identity))
    theirs = {k: record.get(k) for k in ours}
    if theirs == ours:
        return
    parts, plural = [], False
    for k in (k for k in ours if theirs[k] != ours[k]):
        name = labels.get(k, k)
        if isinstance(ours[k], dict) and isinstance(theirs[k], dict):
            fields = sorted(f for f in {*ours[k], *theirs[k]} if ours[k].get(f) != theirs[k].get(f))
            parts.append(f"{name} fields {fields}")
            plural = True
        else:
            parts.append(name)
    detail = " and ".join(parts) + (" differ" if plural or len(parts) > 1 else " differs")
    raise ValueError(
        f"{path} was written by a run with other settings ({detail}); resume with the same settings, or delete the "
        "checkpoint (or use another work folder) to train from scratch"
    )
