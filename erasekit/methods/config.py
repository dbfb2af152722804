"""Method configs: dataclasses whose fields carry help text, validate on creation and round-trip through YAML.

Overrides use dotted ``key=value`` strings (values parsed as YAML scalars, so ``steps=2``, ``lr=1e-5``,
``target=[unet,-xattn]`` all work). Unknown keys are an error that suggests the closest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .._io import write_text


def option(default: Any, help: str, advanced: bool = False, **kwargs) -> Any:  # noqa: A002 - argparse's name
    """A dataclass field with help text (``metadata={"help": ...}``); lists/dicts get a factory.

    ``advanced=True`` marks an experimental option: ``erasekit list``, the YAML template and the demo show it only
    when asked (``--all``).
    """
    meta = {"help": help, "advanced": advanced}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kwargs)
    return field(default=default, metadata=meta, **kwargs)


def _unknown(key: str, valid: list[str], where: str) -> ValueError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"Unknown option {key!r} for {where}.{hint} Valid options: {', '.join(sorted(valid))}.")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


class _ConfigType(type):
    """Lets code written before the config split pass run options to a config's constructor: they are kept aside
    (``run_options``, never part of the config or its dict) with a warning, and the method takes them into its
    :class:`RunConfig` when it is given none."""

    def __call__(cls, *args, **kwargs):
        run = {k: kwargs.pop(k) for k in list(kwargs) if k in RUN_FIELDS}
        cfg = super().__call__(*args, **kwargs)
        if run:
            warnings.warn(
                f"{cls.__name__}: {sorted(run)} are run options; pass them as a RunConfig (erasekit.erase(..., "
                "run=...) or keywords of erasekit.erase), not to the method's config.",
                FutureWarning,
                stacklevel=2,
            )
        object.__setattr__(cfg, "run_options", run)
        return cfg


@dataclass
class MethodConfig(metaclass=_ConfigType):
    """What a method computes: its options, saved in the patch. Fields shared by every method; subclasses add
    their own, each with help text. Loop-based methods derive from :class:`TrainingConfig`. How a run executes
    (precision, compilation, checkpoints, progress) is a :class:`RunConfig`, never part of this.
    """

    # old option name -> current name; a config or patch that uses the old name still loads, with a warning
    renamed: ClassVar[dict[str, str]] = {}

    seed: int = option(0, "seed of every random draw (noise, timesteps, data); same seed -> same patch")
    target: Any = option("xattn", "parameters the method may change: a preset, 're:<regex>', or a list of them")

    def __post_init__(self):
        _check_types(self)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0 (seeds are drawn from it as unsigned numbers), got {self.seed!r}.")
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
        for key, value in cls.upgrade(data or {}).items():
            if key not in names:
                raise _misplaced(cls, key) or _unknown(key, list(names), cls.__name__)
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
            key = self._current_name(key)
            if key.split(".", 1)[0] not in data and _misplaced(type(self), key):
                raise _misplaced(type(self), key)
            _set_dotted(data, key, value, type(self).__name__)
        return type(self).from_dict(data)

    @classmethod
    def _current_name(cls, key: str) -> str:
        new = cls.renamed.get(key)
        if new is None:
            return key
        warnings.warn(
            f"{cls.__name__}: option {key!r} is now called {new!r}; update the config.", FutureWarning, stacklevel=3
        )
        return new

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with renamed options under their current names (a warning for each old name)."""
        return {cls._current_name(k): v for k, v in data.items()}

    @classmethod
    def fields_of(cls, advanced: bool = True) -> list[dataclasses.Field]:
        """The config's fields; without ``advanced``, those marked advanced (experiments) are left out."""
        return [f for f in dataclasses.fields(cls) if advanced or not f.metadata.get("advanced")]

    @classmethod
    def commented_yaml(cls, method: str | None = None, advanced: bool = False) -> str:
        """The defaults as YAML with each option's help as a comment (what ``configs/methods/*.yaml`` hold);
        options marked advanced only with ``advanced=True`` (left out, they keep their defaults)."""
        lines = [f"method: {method}"] if method else []
        defaults = cls().to_dict()
        for f in cls.fields_of(advanced):
            text = yaml.safe_dump({f.name: defaults[f.name]}, default_flow_style=True, width=1000).strip()[1:-1]
            lines.append(f"{text}  # {f.metadata.get('help', '')}")
        return "\n".join(lines) + "\n"

    @classmethod
    def help_text(cls, advanced: bool = False, preset: dict[str, Any] | None = None) -> str:
        """One line per option: name, default and help (advanced options only with ``advanced=True``); ``preset``
        (option -> value) adds the value a preset gives where it differs from the default."""
        lines = []
        for f in cls.fields_of(advanced):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            extra = f"   (preset {preset[f.name]})" if preset and f.name in preset else ""
            mark = "   [advanced]" if f.metadata.get("advanced") else ""
            lines.append(f"  {f.name} = {default!r}{extra}{mark}\n      {f.metadata.get('help', '')}")
        return "\n".join(lines)


@dataclass
class TrainingConfig(MethodConfig):
    """The training knobs every loop-based method shares (the loop reads them; closed-form methods have none)."""

    steps: int = option(100, "optimisation steps")
    lr: float = option(1e-5, "learning rate")
    batch_size: int = option(1, "samples per step")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(0.0, "clip the gradient norm to this value; 0 disables clipping")

    def __post_init__(self):
        super().__post_init__()
        for name in ("steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}.")
        if self.max_grad_norm < 0 or self.weight_decay < 0:
            raise ValueError("max_grad_norm and weight_decay must be >= 0.")


TRAINING_FIELDS = tuple(f.name for f in dataclasses.fields(TrainingConfig) if f.name not in ("seed", "target"))


@dataclass
class RunConfig:
    """How a run executes: precision, compilation, memory, checkpoints, progress. Never saved as part of the result
    (it changes nothing beyond float rounding) and free to change when a run resumes.

    Example:
        >>> RunConfig.from_dict({"progress": False}).progress
        False
    """

    mixed_precision: str = option("auto", "autocast: 'auto' (bf16 on CUDA, off on CPU), 'bf16' or 'no'")
    compile: bool = option(False, "torch.compile the UNet calls of the loop (the first steps include compilation)")
    channels_last: bool = option(False, "run the UNet in channels_last memory format (restored afterwards)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass to save memory")
    sync_every: int = option(
        1,
        "check NaN/Inf and log the loss every N steps; between checks fused AdamW (CUDA) "
        "skips non-finite steps on the device, so the loop needs no host sync",
    )
    optimizer_states: str = option(
        "targeted",
        "'targeted': AdamW state only for what may change (the parameters; for SalUn with masked_training, the "
        "masked entries); "
        "'full': also for the rest of the touched components, as reference code does "
        "(a memory baseline for benchmarks/sd_scale.py; results are identical)",
        advanced=True,
    )
    masked_training: str = option(
        "auto",
        "SalUn: train only the mask's entries, each full weight built just before its submodule runs (values, "
        "gradients and AdamW moments for the masked entries alone, no full float32 copy): 'auto' where the candidate "
        "tensors hold at least 50 M entries, 'on', 'off' (results are identical; on small models a full copy is "
        "faster; a checkpoint resumes under the same choice)",
        advanced=True,
    )
    checkpoint_every: int = option(0, "save a resumable checkpoint every N steps (0 = never)")
    checkpoint_dir: str | None = option(None, "folder for checkpoints (default: next to the output patch)")
    resume: bool = option(False, "continue from the checkpoint in checkpoint_dir when one exists")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self):
        _check_types(self)
        check_choice("mixed_precision", self.mixed_precision, ("auto", "bf16", "no"))
        check_choice("optimizer_states", self.optimizer_states, ("targeted", "full"))
        check_choice("masked_training", self.masked_training, ("auto", "on", "off"))
        if self.sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {self.sync_every!r}.")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunConfig:
        """Build from a mapping; unknown keys are an error that suggests the closest valid name."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data or {}:
            if key not in names:
                raise _unknown(key, names, cls.__name__)
        return cls(**(data or {}))

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        return type(self).from_dict({**self.to_dict(), **overrides})


RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def split_run_options(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` as ``(method options, run options)``: keys that name a :class:`RunConfig` field go to the second.

    Example:
        >>> split_run_options({"steps": 2, "progress": False})
        ({'steps': 2}, {'progress': False})
    """
    method = {k: v for k, v in data.items() if k not in RUN_FIELDS}
    return method, {k: v for k, v in data.items() if k in RUN_FIELDS}


def _misplaced(cls: type, key: str) -> ValueError | None:
    """An error for an option that exists, but not in ``cls``: a run option, or a training knob of a closed-form
    method; ``None`` for a key that is simply unknown."""
    if key in RUN_FIELDS:
        return ValueError(
            f"{key!r} is a run option (how to run, not what to compute): pass it as a RunConfig "
            "(erasekit.erase(..., run=RunConfig(...)) or keyword), or with --set on the command line."
        )
    if key in TRAINING_FIELDS and not issubclass(cls, TrainingConfig):
        return ValueError(
            f"{key!r} does not apply to {cls.__name__}: the method has no training loop (it is solved in closed "
            "form); drop the option."
        )
    return None


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
