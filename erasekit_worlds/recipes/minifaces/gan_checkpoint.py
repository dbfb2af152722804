"""Checkpoints and warm starts of the MiniFaces generator stage: the whole training state in one ``.safetensors``
file under this stage's header (:mod:`erasekit_worlds.recipes.checkpoint`; resumed with the same result as an
uninterrupted run), and an earlier generator's weights as a start."""

from __future__ import annotations

import hashlib
from dataclasses import asdict

import torch

from erasekit.models.stylegan import Generator, StyleGAN2Config

from .. import checkpoint
from ..checkpoint import TrainingState
from .gan_config import GanTrainConfig

CHECKPOINT_KEY = "erasekit_minifaces_gan_checkpoint"
TITLE = "MiniFaces GAN"
LABELS = {"excluded": "exclusion list", "init": "warm-start generator"}  # the identity's keys in errors


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
    record = {"steps_done": steps_done, "seconds": seconds, **identity}
    checkpoint.save_checkpoint(path, CHECKPOINT_KEY, TrainingState(nets, opts, gen), record)


def checkpoint_generator(path, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """The EMA generator (eval mode, fp32) saved in a training checkpoint, and the checkpoint's record (its
    ``config``, ``seed``, ``steps_done``, ``seconds``...): probes measure a run as it trains."""
    record, tensors = checkpoint.read_checkpoint(path, CHECKPOINT_KEY, TITLE)
    state = {k[len("G_ema.") :]: v for k, v in tensors.items() if k.startswith("G_ema.")}
    if not state:
        raise ValueError(f"{path} is not a {TITLE} checkpoint (no G_ema)")
    G = Generator(GanTrainConfig(**record["config"]).generator_config())
    G.load_state_dict(state)
    return G.to(device).eval(), record


def load_checkpoint(path, nets: dict, opts: dict, gen: torch.Generator, identity) -> tuple[int, float]:
    """Restore what :func:`save_checkpoint` wrote into freshly built ``nets``/``opts``/``gen``; returns ``(steps done,
    seconds spent so far)``. A checkpoint of another configuration, seed, exclusion list or warm start is refused."""
    identity = {**identity, "init": identity.get("init")}  # a checkpoint without "init" was trained from scratch
    state = TrainingState(nets, opts, gen)
    record = checkpoint.load_checkpoint(path, CHECKPOINT_KEY, TITLE, state, identity, LABELS)
    return int(record["steps_done"]), float(record["seconds"])
