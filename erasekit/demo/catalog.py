"""The demo's fixed, server-side list of models. The browser picks one by its key; it never sends a path.

Models load lazily on first use and are shared by every browser session; a per-model lock serialises the jobs that
use one (a compare applies patches to the shared weights in place, and an erasure reads them).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model list.

    Args:
        key: what the browser sends to pick it.
        label: what the page shows.
        kind: ``"diffusion"`` or ``"stylegan"``; decides which methods and tabs apply.
        load: builds the model handle (called once, on first use).
        suite: builds the evaluation suite for this model, or ``None`` when it has none.
        probe: returns why the model cannot be used (shown in the page), or ``None`` when it can.
    """

    key: str
    label: str
    kind: str
    load: Callable[[], Any]
    suite: Callable[[], Any] | None = None
    probe: Callable[[], str | None] | None = None


class ModelCatalog:
    """The models a demo server offers, loaded on demand and cached.

    Example:
        >>> catalog = ModelCatalog(default_choices())
        >>> with catalog.using("tiny-sd") as handle:
        ...     images = handle.generate(["a cat"], [0], 2)
    """

    def __init__(self, choices: Sequence[ModelChoice]):
        keys = [c.key for c in choices]
        if not keys:
            raise ValueError("The demo needs at least one model.")
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"Duplicate model keys: {duplicates}.")
        self._choices = {c.key: c for c in choices}
        self._handles: dict[str, Any] = {}
        self._locks = {k: threading.RLock() for k in keys}
        self._probed: dict[str, str | None] = {}

    def __iter__(self) -> Iterator[ModelChoice]:
        return iter(self._choices.values())

    def get(self, key: str) -> ModelChoice:
        """The choice with ``key``; a clear error for anything not on the server's list."""
        if not isinstance(key, str) or key not in self._choices:
            raise ValueError(f"Unknown model {key!r}; choose one of: {', '.join(self._choices)}.")
        return self._choices[key]

    def unavailable(self, key: str) -> str | None:
        """Why the model ``key`` cannot be used (cached), or ``None`` when it can."""
        if key not in self._probed:
            choice = self.get(key)
            self._probed[key] = choice.probe() if choice.probe else None
        return self._probed[key]

    def dropdown(self) -> list[tuple[str, str]]:
        """``(label, key)`` pairs for a dropdown; unusable models are listed with a note."""
        return [(c.label + (" (unavailable)" if self.unavailable(c.key) else ""), c.key) for c in self]

    def default_key(self) -> str:
        """The first usable model."""
        for choice in self:
            if not self.unavailable(choice.key):
                return choice.key
        return next(iter(self._choices))

    def handle(self, key: str):
        """The loaded model handle of ``key`` (loaded on first use); a clear error when it cannot be used."""
        reason = self.unavailable(key)
        if reason:
            raise ValueError(reason)
        with self._locks[key]:
            if key not in self._handles:
                logger.info("loading model %s", key)
                self._handles[key] = self.get(key).load()
            return self._handles[key]

    @contextlib.contextmanager
    def using(self, key: str) -> Iterator[Any]:
        """Hold the model's lock for a job and yield its handle."""
        handle = self.handle(key)
        with self._locks[key]:
            yield handle


_LABELS = {"diffusion": "shipped", "stylegan": "StyleGAN2"}


def _missing(world) -> Callable[[], str | None]:
    """A probe: why the shipped ``world`` cannot be used (its weights are not installed), or ``None``."""

    def probe() -> str | None:
        try:
            world.model_path(world.shipped())
        except ValueError as err:
            return (
                f"The shipped {world.name} weights are not in this installation ({err}) Train a world with "
                f"`erasekit world train {world.name} --out DIR` and start the demo with `--model-dir DIR`."
            )
        return None

    return probe


def _suite_factory(world, folder: Path | None) -> Callable[[], Any] | None:
    """A suite factory for ``world`` at ``folder`` (``None``: the shipped one), or ``None`` when it has no suite."""
    if world.suite is None:
        return None

    def suite():
        from ..eval import get_suite

        return get_suite(world.suite, **({"world_dir": folder} if folder is not None else {}))

    return suite


def _world_choice(world, kw: dict) -> ModelChoice:
    from ..models import load_model

    kwargs = kw if world.kind == "diffusion" else {"device": kw.get("device")}
    return ModelChoice(
        world.name,
        f"{world.title or world.name} ({_LABELS.get(world.kind, world.kind)})",
        world.kind,
        lambda: load_model(world.name, **kwargs),
        _suite_factory(world, None),
        _missing(world),
    )


def local_choice(index: int, folder: str | Path, load_kwargs: dict) -> ModelChoice:
    """A choice for a folder named on the server's command line: a diffusers pipeline or a diffusion world's folder.

    Raises:
        ValueError: the folder is neither (checked when the server starts, not when a browser asks).
    """
    from ..models import load_model
    from ..plugins import list_worlds

    path = Path(folder).expanduser().resolve()
    worlds = [w for w in list_worlds() if w.kind == "diffusion" and w.recognises is not None]
    world = next((w for w in worlds if w.recognises(path)), None)
    if world is not None:  # a world: its pipeline, and its suite when trained
        spec, suite = f"{world.name}:{path}", _trained_suite(world, path)
    elif (path / "model_index.json").is_file():  # a pipeline folder, perhaps inside a world folder
        spec = str(path)
        world = next((w for w in worlds if w.recognises(path.parent)), None)
        suite = _trained_suite(world, path.parent) if world is not None else None
    else:
        names = ", ".join(w.name for w in worlds) or "none registered"
        raise ValueError(
            f"--model-dir {folder}: not a diffusers pipeline folder (no model_index.json) nor a world folder "
            f"({names})."
        )
    return ModelChoice(
        f"local-{index}", f"{path.name} (local folder)", "diffusion", lambda: load_model(spec, **load_kwargs), suite
    )


def _trained_suite(world, folder: Path) -> Callable[[], Any] | None:
    """The suite of a trained world folder, when the folder is complete enough to judge with (its suite loads)."""
    factory = _suite_factory(world, folder)
    if factory is None:
        return None
    try:
        factory()
    except ValueError:  # e.g. a world folder without classifiers: no Evaluate tab for it
        return None
    return factory


def default_choices(model_dirs: Sequence[str | Path] = (), device: str | None = None, dtype=None) -> list[ModelChoice]:
    """The demo's model list: the shipped diffusion worlds, ``tiny-sd``, the server's ``model_dirs``, then the
    shipped StyleGAN2 worlds (worlds come from the registered plugins, :mod:`erasekit.plugins`).

    Args:
        model_dirs: local diffusers folders or world folders (from the server's command line).
        device, dtype: where and in which precision models load (default: CUDA if present; fp32 on CPU).
    """
    from ..models import load_model
    from ..plugins import list_worlds

    kw = {"device": device, "dtype": dtype}
    worlds = list_worlds()
    choices = [_world_choice(w, kw) for w in worlds if w.kind == "diffusion"]
    choices.append(
        ModelChoice(
            "tiny-sd", "tiny-sd (random weights, smoke test)", "diffusion", lambda: load_model("tiny-sd", **kw)
        )
    )
    choices += [local_choice(i, d, kw) for i, d in enumerate(model_dirs, start=1)]
    choices += [_world_choice(w, kw) for w in worlds if w.kind != "diffusion"]
    return choices
