"""Checkpoints and warm starts of the MiniFaces generator stage: the whole training state in one ``.safetensors``
file (resumed with the same result as an uninterrupted run), and an earlier generator's weights as a start."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import torch

from erasekit._io import save_safetensors
from erasekit.models.stylegan import Generator, StyleGAN2Config

from .gan_config import GanTrainConfig

CHECKPOINT_KEY = "erasekit_minifaces_gan_checkpoint"


def checkpoint_identity(cfg: GanTrainConfig, seed: int, excluded, init_digest: str | None = None) -> dict:
    """The settings a checkpoint must have been written with to be resumed: config, seed, exclusions, warm start."""
    identity = {"config": asdict(cfg), "seed": seed, "excluded": sorted(excluded)}
    if init_digest is not None:
        identity["init"] = init_digest
    return identity


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes and values, in name order): what a warm start started from."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        v = value.detach().cpu().contiguous()
        h.update(f"{name}:{v.dtype}:{tuple(v.shape)}".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def config_differences(ours: StyleGAN2Config, theirs: StyleGAN2Config) -> str:
    """``"field 'old' (this run: 'new'), ..."`` for the fields where two generator configs differ ('' when none)."""
    a, b = asdict(ours), asdict(theirs)
    return ", ".join(f"{k} {b.get(k)!r} (this run: {a[k]!r})" for k in sorted(a) if a[k] != b.get(k))


def warm_start(G: Generator, init: Generator) -> None:
    """Copy ``init``'s weights (and ``w_avg``) into the freshly built ``G``; a clear error when the architectures
    differ (a warm start continues the same network, it does not convert one)."""
    detail = config_differences(G.config, init.config)
    if detail:
        raise ValueError(
            f"the generator to continue has another architecture: {detail}; continue it with the settings it was "
            "trained with, or train from scratch"
        )
    G.load_state_dict(init.state_dict())


def save_checkpoint(path, nets: dict, opts: dict, gen: torch.Generator, steps_done: int, seconds: float, identity):
    """Write the whole training state (networks, Adam moments, the data generator's RNG state, steps done) to one
    ``.safetensors`` file, atomically: an interrupted run loses at most the steps since the last checkpoint."""
    tensors = {f"{name}.{k}": v for name, net in nets.items() for k, v in net.state_dict().items()}
    for name, opt in opts.items():
        for i, state in opt.state_dict()["state"].items():
            tensors.update({f"{name}.{i}.{k}": torch.as_tensor(v) for k, v in state.items()})
    tensors["rng"] = gen.get_state()
    meta = {"steps_done": steps_done, "seconds": seconds, **identity}
    save_safetensors(tensors, path, {CHECKPOINT_KEY: json.dumps(meta)})


def checkpoint_generator(path, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """The EMA generator (eval mode, fp32) saved in a training checkpoint, and the checkpoint's record (its
    ``config``, ``seed``, ``steps_done``, ``seconds``...): probes measure a run as it trains."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            record = json.loads((f.metadata() or {}).get(CHECKPOINT_KEY, "null"))
            state = {k[len("G_ema.") :]: f.get_tensor(k) for k in f.keys() if k.startswith("G_ema.")}
    except (SafetensorError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable MiniFaces GAN checkpoint ({e})") from e
    if not isinstance(record, dict) or not state:
        raise ValueError(f"{path} is not a MiniFaces GAN checkpoint (no {CHECKPOINT_KEY!r} header or no G_ema)")
    G = Generator(GanTrainConfig(**record["config"]).generator_config())
    G.load_state_dict(state)
    return G.to(device).eval(), record


def load_checkpoint(path, nets: dict, opts: dict, gen: torch.Generator, identity) -> tuple[int, float]:
    """Restore what :func:`save_checkpoint` wrote into freshly built ``nets``/``opts``/``gen``; returns ``(steps done,
    seconds spent so far)``. A checkpoint of another configuration, seed or exclusion list is refused."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {}).get(CHECKPOINT_KEY, "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable MiniFaces GAN checkpoint ({e}); delete it to start over") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not a MiniFaces GAN checkpoint (no {CHECKPOINT_KEY!r} header); delete it")
    theirs = {k: meta.get(k) for k in {*identity, "init"}}
    if json.loads(json.dumps(theirs)) != json.loads(json.dumps({"init": None, **identity})):
        changed = sorted(
            k for k in identity["config"] if theirs["config"] and theirs["config"].get(k) != identity["config"][k]
        )
        others = {"seed": "seed", "excluded": "exclusion list", "init": "warm-start generator"}
        differ = [text for k, text in others.items() if theirs.get(k) != identity.get(k)]
        differ = [f"config fields {changed}"] if changed else differ
        detail = " and ".join(differ) + (" differ" if changed or len(differ) > 1 else " differs")
        raise ValueError(
            f"{path} was written by a run with other settings ({detail}); resume with the same settings, "
            "or delete the checkpoint (or use another work folder) to train from scratch"
        )
    for name, net in nets.items():
        prefix = f"{name}."
        net.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, opt in opts.items():
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            head, _, rest = k.partition(".")
            if head == name:
                i, _, field_ = rest.partition(".")
                state.setdefault(int(i), {})[field_] = v
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    gen.set_state(tensors["rng"])
    return int(meta["steps_done"]), float(meta["seconds"])
