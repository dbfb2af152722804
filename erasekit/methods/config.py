"""Method configs: dataclasses whose fields carry help text, validate on creation and round-trip through YAML.

Overrides use dotted ``key=value`` strings (values parsed as YAML scalars, so ``steps=2``, ``lr=1e-5``,
``target=[unet,-xattn]`` all work). Unknown keys are an error that suggests the closest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._io import write_text


def option(default: Any, help: str, **kwargs) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field with help text (``metadata={"help": ...}``); lists/dicts get a factory."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def _unknown(key: str, valid: list[str], where: str) -> ValueError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"Unknown option {key!r} for {where}.{hint} Valid options: {', '.join(sorted(valid))}.")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


@dataclass
class MethodConfig:
    """Fields shared by every method. Subclasses add their own, each with help text."""

    seed: int = option(0, "seed of every random draw (noise, timesteps, data); same seed -> same patch")
    steps: int = option(100, "optimisation steps")
    lr: float = option(1e-5, "learning rate")
    batch_size: int = option(1, "samples per step")
    target: Any = option("xattn", "parameters the method may change: a preset, 're:<regex>', or a list of them")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(0.0, "clip the gradient norm to this value; 0 disables clipping")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass to save memory")
    mixed_precision: str = option("auto", "autocast: 'auto' (bf16 on CUDA, off on CPU), 'bf16' or 'no'")
    channels_last: bool = option(False, "run the UNet in channels_last memory format (restored afterwards)")
    compile: bool = option(False, "torch.compile the UNet calls of the loop (the first steps include compilation)")
    sync_every: int = option(
        1,
        "check NaN/Inf and log the loss every N steps; between checks fused AdamW (CUDA) "
        "skips non-finite steps on the device, so the loop needs no host sync",
    )
    optimizer_states: str = option(
        "targeted",
        "'targeted': AdamW state only for the parameters that may change; "
        "'full': also for the rest of the touched components, as reference code does "
        "(a benchmark baseline; results are identical)",
    )
    checkpoint_every: int = option(0, "save a resumable checkpoint every N steps (0 = never)")
    checkpoint_dir: str | None = option(None, "folder for checkpoints (default: next to the output patch)")
    resume: bool = option(False, "continue from the checkpoint in checkpoint_dir when one exists")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self):
        _check_types(self)
        for name in ("steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}.")
        check_choice("mixed_precision", self.mixed_precision, ("auto", "bf16", "no"))
        check_choice("optimizer_states", self.optimizer_states, ("targeted", "full"))
        if self.sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {self.sync_every!r}.")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0 (seeds are drawn from it as unsigned numbers), got {self.seed!r}.")
        if self.checkpoint_every < 0 or self.max_grad_norm < 0 or self.weight_decay < 0:
            raise ValueError("checkpoint_every, max_grad_norm and weight_decay must be >= 0.")
        if isinstance(self.target, tuple):
            self.target = list(self.target)
        if not isinstance(self.target, str | list) or not self.target:
            raise ValueError(f"target must be a preset name, 're:<regex>' or a list of them, got {self.target!r}.")

    # ---- dict / YAML ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodConfig:
        """Build from a mapping; nested dataclass fields accept mappings; unknown keys are an error."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in (data or {}).items():
            if key not in names:
                raise _unknown(key, list(names), cls.__name__)
            sub = hints.get(key)
            if dataclasses.is_dataclass(sub) and isinstance(value, dict):
                value = sub.from_dict(value) if hasattr(sub, "from_dict") else sub(**value)
            kwargs[key] = value
        return cls(**kwargs)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML (written atomically to ``path`` if given)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            write_text(path, text)
        return text

    @classmethod
    def from_yaml(cls, source: str | Path) -> MethodConfig:
        """Load from a YAML file path (or YAML text containing a newline)."""
        text = source if isinstance(source, str) and "\n" in source else Path(source).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"A method config must be a YAML mapping of options, got {type(data).__name__}.")
        return cls.from_dict(data)

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> MethodConfig:
        """A copy with dotted ``key=value`` overrides applied (validated again)."""
        data = self.to_dict()
        items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
        for key, value in items:
            _set_dotted(data, key, value, type(self).__name__)
        return type(self).from_dict(data)

    @classmethod
    def commented_yaml(cls, method: str | None = None) -> str:
        """The defaults as YAML with each option's help as a comment (what ``configs/methods/*.yaml`` hold)."""
        lines = [f"method: {method}"] if method else []
        for key, value in cls().to_dict().items():
            f = next(f for f in dataclasses.fields(cls) if f.name == key)
            text = yaml.safe_dump({key: value}, default_flow_style=True, width=1000).strip()[1:-1]
            lines.append(f"{text}  # {f.metadata.get('help', '')}")
        return "\n".join(lines) + "\n"

    @classmethod
    def help_text(cls) -> str:
        """One line per option: name, default and help."""
        lines = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            lines.append(f"  {f.name} = {default!r}\n      {f.metadata.get('help', '')}")
        return "\n".join(lines)


def _check_types(cfg) -> None:
    """Check scalar fields against their annotations (ints are accepted and converted for floats)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        hint, value = hints.get(f.name), getattr(cfg, f.name)
        allowed = tuple(a for a in (typing.get_args(hint) or (hint,)) if isinstance(a, type))
        if not allowed or hint is Any or (isinstance(value, allowed) and not _bool_for_number(value, allowed)):
            continue
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            setattr(cfg, f.name, float(value))
            continue
        names = " or ".join("None" if a is type(None) else a.__name__ for a in allowed)
        raise ValueError(f"{f.name} must be {names}, got {value!r} ({type(value).__name__}).")


def _bool_for_number(value, allowed: tuple) -> bool:
    """True for ``True``/``False`` given to an int field (Python's bools are ints; a user's are not)."""
    return isinstance(value, bool) and bool not in allowed


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)``, the value read as YAML (numbers like ``2e-5`` as floats), as ``--set``
    reads it.

    Example:
        >>> parse_override("lr=2e-5"), parse_override("forget_prompts=[a, b]")
        (('lr', 2e-05), ('forget_prompts', ['a', 'b']))
    """
    if "=" not in text:
        raise ValueError(f"Override {text!r} is not key=value (e.g. --set steps=200).")
    key, raw = text.split("=", 1)
    if _NUMBER.fullmatch(raw.strip()):  # YAML 1.1 reads "2e-5" as a string
        return key.strip(), float(raw) if any(c in raw for c in ".eE") else int(raw)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict, key: str, value: Any, where: str) -> None:
    *parents, leaf = key.split(".")
    node = data
    for p in parents:
        if not isinstance(node.get(p), dict):
            raise _unknown(key, list(data), where)
        node = node[p]
    if leaf not in node:
        raise _unknown(leaf, list(node), where)
    old = node[leaf]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    node[leaf] = value
