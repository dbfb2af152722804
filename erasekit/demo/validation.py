"""Bounds and checks on everything the demo's browser sends, applied before any work starts.

The browser never names a file: models are chosen from a server-side list, patches by their session names, and
method options only from those that cannot point at the server's file system (numbers and booleans, plus a few
named text options). Every count the browser controls is bounded by :class:`Limits`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from ..methods import get_method
from ..methods.config import MethodConfig, parse_override

# Options the server owns: the file system, resumption, compilation and logging are not the browser's business.
SERVER_OPTIONS = frozenset(
    {
        "checkpoint_every",
        "checkpoint_dir",
        "resume",
        "compile",
        "progress",
        "sync_every",
        "optimizer_states",
        "masked_training",
        "channels_last",
        "mixed_precision",
        "gradient_checkpointing",
    }
)
# Text-valued options the browser may set: words, presets and prompts, never paths. Any other text option (a new
# method's image folder, say) is refused with a pointer to the CLI, which may name files.
TEXT_OPTIONS = frozenset(
    {
        "target",
        "variant",
        "concept_kind",
        "surgery",
        "guide",
        "erase",
        "preserve",
        "misaligned_prompts",
        "retain_prompts",
    }
)


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what one browser request may ask for.

    Example:
        >>> Limits(max_images=8).check_int("images", 9, 1, Limits(max_images=8).max_images)
        Traceback (most recent call last):
        ValueError: images must be between 1 and 8, got 9.
    """

    max_prompt_chars: int = 200  # prompt, concept and anchor length, in characters
    max_sample_steps: int = 50  # sampler steps of a compare or evaluate request
    max_images: int = 4  # images per side of a compare (its batch size)
    max_eval_seeds: int = 4  # seeds per prompt of an evaluation
    max_erase_steps: int = 1000  # optimisation steps of an erasure
    max_batch_size: int = 8  # the erasure's batch size
    max_count: int = 64  # any other integer option (samples to generate, sampler steps, warm-up ...)
    max_list_items: int = 16  # entries of a list option (preserved concepts, retain prompts ...)
    max_guidance: float = 30.0  # classifier-free guidance scale
    max_lora_rank: int = 64  # rank of the exported LoRA
    max_patches: int = 64  # erasures one browser session may run; after that the page must be reloaded
    keep_patches: int = 8  # patches a session keeps (memory bound); erasing one more drops the oldest and its files
    max_sessions: int = 32  # sessions the server keeps; a new one beyond this closes the least recently used
    session_idle_seconds: float = 3600.0  # a session unused this long is closed (its patches and files dropped)
    concurrent_jobs: int = 1  # jobs (erase, compare, evaluate) running at once; the others wait in the queue
    max_queue: int = 32  # jobs waiting at once; more are refused until the queue drains

    def __post_init__(self):
        for name in ("max_patches", "keep_patches", "max_sessions", "concurrent_jobs", "max_queue"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be a whole number >= 1, got {getattr(self, name)!r}.")
        if not self.session_idle_seconds > 0:
            raise ValueError(f"Limits.session_idle_seconds must be > 0, got {self.session_idle_seconds!r}.")

    @staticmethod
    def check_int(name: str, value: Any, low: int, high: int) -> int:
        """``value`` as an int within ``[low, high]`` (floats with no fraction, as sliders send, are accepted)."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}.")
        if value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}.")
        if not low <= int(value) <= high:
            raise ValueError(f"{name} must be between {low} and {high}, got {int(value)}.")
        return int(value)

    @staticmethod
    def check_float(name: str, value: Any, low: float, high: float) -> float:
        """``value`` as a finite float within ``[low, high]``."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}.")
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}, got {value}.")
        return float(value)

    def check_text(self, name: str, value: Any, required: bool = True) -> str:
        """Stripped text of at most ``max_prompt_chars`` characters; empty only when not ``required``."""
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {type(value).__name__}.")
        value = value.strip()
        if required and not value:
            raise ValueError(f"{name} is empty; type some words.")
        if len(value) > self.max_prompt_chars:
            raise ValueError(
                f"{name} is {len(value)} characters long; the demo accepts at most {self.max_prompt_chars}."
            )
        if any(ord(c) < 32 and c not in "\t\n" for c in value):
            raise ValueError(f"{name} contains control characters.")
        return value


def parse_options(text: str | None) -> dict[str, Any]:
    """``key=value`` lines (or ``;``-separated pairs) as a dict, values parsed like the CLI's ``--set``.

    Example:
        >>> parse_options("ddim_steps=3\\nvariant=u")
        {'ddim_steps': 3, 'variant': 'u'}
    """
    out: dict[str, Any] = {}
    for raw in (text or "").replace(";", "\n").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, value = parse_override(line)
        if not key:
            raise ValueError(f"Option line {line!r} has no name; write key=value, e.g. ddim_steps=10.")
        if key in out:
            raise ValueError(f"Option {key!r} is given twice.")
        out[key] = value
    return out


MAX_SEED = 2**31 - 1


def _int_bound(name: str, limits: Limits) -> int:
    if name == "seed":
        return MAX_SEED
    if name == "steps":
        return limits.max_erase_steps
    if name == "batch_size":
        return limits.max_batch_size
    return limits.max_count


def _check_option(name: str, value: Any, hint: Any, limits: Limits) -> Any:
    """One browser-set option checked against its annotation and the demo's bounds."""
    allowed = tuple(a for a in (typing.get_args(hint) or (hint,)) if isinstance(a, type))
    if allowed and all(a in (int, float, bool, type(None)) for a in allowed):
        if bool in allowed:
            if not isinstance(value, bool):
                raise ValueError(f"Option {name} must be true or false, got {value!r}.")
            return value
        if int in allowed:
            return limits.check_int(f"Option {name}", value, 0, _int_bound(name, limits))
        return limits.check_float(f"Option {name}", value, -1e6, 1e6)
    if name not in TEXT_OPTIONS:
        raise ValueError(
            f"Option {name!r} cannot be set from the demo (it may name files on the server); put it in a config "
            "file and use `erasekit erase --config FILE`."
        )
    items = value if isinstance(value, list) else [value]
    if len(items) > limits.max_list_items:
        raise ValueError(f"Option {name} has {len(items)} entries; the demo accepts at most {limits.max_list_items}.")
    for item in items:
        if item is not None and not isinstance(item, str | int | float):
            raise ValueError(f"Option {name} must be text or a list of text, got {item!r}.")
        limits.check_text(f"Option {name}", "" if item is None else str(item), required=False)
    return value


def check_method_options(method: str, options: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """The options the browser may set for ``method``, checked and bounded; a clear error on anything else.

    Unknown names fail with the method's own message (which suggests the closest valid name).
    """
    cls: type[MethodConfig] = get_method(method).config_class
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for name, value in options.items():
        if name in SERVER_OPTIONS:  # run options (RunConfig) and the like: before the unknown-name check
            raise ValueError(f"Option {name!r} is managed by the demo server and cannot be set from the browser.")
        if name not in fields:
            cls().with_overrides({name: value})  # raises the config's "Unknown option ... Did you mean" error
        out[name] = _check_option(name, value, hints[name], limits)
    return out


def browser_options(method: str) -> list[tuple[str, Any, str]]:
    """``(name, default, help)`` of every option of ``method`` the browser may set, for the options help."""
    cls = get_method(method).config_class
    hints = typing.get_type_hints(cls)
    default = cls()
    out = []
    for f in dataclasses.fields(cls):
        allowed = tuple(a for a in (typing.get_args(hints[f.name]) or (hints[f.name],)) if isinstance(a, type))
        numeric = allowed and all(a in (int, float, bool, type(None)) for a in allowed)
        if f.name not in SERVER_OPTIONS and (numeric or f.name in TEXT_OPTIONS):
            out.append((f.name, getattr(default, f.name), f.metadata.get("help", "")))
    return out
