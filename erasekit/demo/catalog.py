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


def _shipped_minicanvas_missing() -> str | None:
    from ..worlds.minicanvas import weights_dir

    folder = weights_dir() / "pipeline"
    if (folder / "model_index.json").is_file():
        return None
    return (
        f"The shipped MiniCanvas weights are not in this installation yet (no pipeline at {folder}). Train a world "
        "with `erasekit world train minicanvas --out DIR` and start the demo with `erasekit demo --model-dir DIR`."
    )


def _minifaces_missing() -> str | None:
    from ..worlds.minifaces import weights_dir
    from ..worlds.minifaces.manifest import GENERATOR

    path = weights_dir() / GENERATOR
    if path.is_file():
        return None
    return (
        f"The shipped MiniFaces weights are not in this installation (no generator at {path}). Train a world with "
        "`erasekit world train minifaces --out DIR` and use it from the CLI (`--model minifaces:DIR`)."
    )


def _world_suite(world: Path) -> Callable[[], Any] | None:
    """A MiniCanvas suite factory for a world folder that has classifiers, else ``None``."""
    if not (world / "classifiers" / "style.safetensors").is_file():
        return None

    def suite():
        from ..eval import minicanvas_suite

        return minicanvas_suite(world)

    return suite


def local_choice(index: int, folder: str | Path, load_kwargs: dict) -> ModelChoice:
    """A choice for a folder named on the server's command line: a diffusers pipeline or a MiniCanvas world.

    Raises:
        ValueError: the folder is neither (checked when the server starts, not when a browser asks).
    """
    from ..models import load_model

    path = Path(folder).expanduser().resolve()
    if (path / "pipeline" / "model_index.json").is_file():  # a world: its pipeline, and its suite when trained
        spec, suite = f"minicanvas:{path}", _world_suite(path)
    elif (path / "model_index.json").is_file():
        spec, suite = str(path), _world_suite(path.parent)
    else:
        raise ValueError(
            f"--model-dir {folder}: not a diffusers pipeline folder (no model_index.json) nor a MiniCanvas world "
            "(no pipeline/model_index.json)."
        )
    return ModelChoice(
        f"local-{index}", f"{path.name} (local folder)", "diffusion", lambda: load_model(spec, **load_kwargs), suite
    )


def default_choices(model_dirs: Sequence[str | Path] = (), device: str | None = None, dtype=None) -> list[ModelChoice]:
    """The demo's model list: shipped MiniCanvas, ``tiny-sd``, the server's ``model_dirs``, and MiniFaces.

    Args:
        model_dirs: local diffusers folders or MiniCanvas world folders (from the server's command line).
        device, dtype: where and in which precision models load (default: CUDA if present; fp32 on CPU).
    """
    from ..models import load_model

    kw = {"device": device, "dtype": dtype}

    def minicanvas_suite():
        from ..eval import get_suite

        return get_suite("minicanvas")

    choices = [
        ModelChoice(
            "minicanvas",
            "MiniCanvas (shipped)",
            "diffusion",
            lambda: load_model("minicanvas", **kw),
            minicanvas_suite,
            _shipped_minicanvas_missing,
        ),
        ModelChoice(
            "tiny-sd", "tiny-sd (random weights, smoke test)", "diffusion", lambda: load_model("tiny-sd", **kw)
        ),
    ]
    choices += [local_choice(i, d, kw) for i, d in enumerate(model_dirs, start=1)]
    choices.append(
        ModelChoice(
            "minifaces",
            "MiniFaces (StyleGAN2)",
            "stylegan",
            lambda: load_model("minifaces", device=device),
            probe=_minifaces_missing,
        )
    )
    return choices
