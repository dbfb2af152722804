"""Plugins: how worlds, suites and CLI commands join erasekit without the library knowing them by name.

The library core never imports a world. A plugin is a zero-argument function published under the
``erasekit.plugins`` entry-point group; it calls :func:`register_world`, :func:`erasekit.eval.register_suite` and
:func:`register_command` for what it brings. erasekit's own worlds (``erasekit_worlds``) plug in exactly like a
third-party package would::

    # pyproject.toml of a plugin package
    [project.entry-points."erasekit.plugins"]
    myworld = "myworld.plugin:register"

Plugins are loaded once, lazily, the first time a registry is asked for a name it does not hold (or for its list);
a plugin that fails to load is logged and skipped, so a broken plugin never breaks the core.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "erasekit.plugins"
KINDS = ("diffusion", "stylegan")

_WORLDS: dict[str, World] = {}
_COMMANDS: dict[str, Any] = {}
_loaded = False
_lock = threading.RLock()


@dataclass(frozen=True)
class World:
    """A model world a plugin ships: a name usable as a model spec (``NAME`` or ``NAME:DIR``), its models and judge.

    Attributes:
        name: the spec scheme (``--model NAME`` for the shipped world, ``--model NAME:DIR`` for a trained one).
        kind: ``"diffusion"`` (a diffusers pipeline) or ``"stylegan"`` (an erasekit StyleGAN2 generator).
        description: one line for ``erasekit list``.
        shipped: returns the shipped world's folder (it may be missing in a slim install).
        model_path: world folder -> what the loader reads (a pipeline folder or a generator file); raises a
            ``ValueError`` naming the fix when the folder holds no such model.
        suite: the name of the registered suite that judges this world (its factory takes ``world_dir=``).
        plan: ``(method, target) -> (concept, anchor, config overrides)``: how to phrase a suite target such as
            ``"style:Ink"`` (or a list of targets erased together) for each method: prompt lists and anchor, no
            hyperparameters (a preset with ``plan: true`` applies it).
        presets: ``() -> {method: preset file}``: the world's tuned settings per method (:mod:`erasekit.presets`);
            an erasure on the world's model selects them automatically.
        target_of: concept -> the world's target it names (``"Ink style"`` -> ``"style:Ink"``), else ``None``; its
            kind (the part before ``:``) picks a preset's ``by_kind`` section.
        verify: world folder -> problems against its manifest (empty when it matches).
        recognises: world folder -> whether it is a folder of this world (for ``erasekit demo --model-dir``).
        title: how pages and tables name it (default: ``name``).
    """

    name: str
    kind: str
    description: str
    shipped: Callable[[], Path]
    model_path: Callable[[Path], Path]
    suite: str | None = None
    plan: Callable[[str, Any], tuple[Any, str | None, dict]] | None = None
    presets: Callable[[], dict[str, Path]] | None = None
    target_of: Callable[[str], str | None] | None = None
    verify: Callable[[Path], list[str]] | None = None
    recognises: Callable[[Path], bool] | None = None
    title: str = ""

    def __post_init__(self):
        if not self.name or ":" in self.name or "/" in self.name:
            raise ValueError(f"A world name must be a plain word (no ':' or '/'), got {self.name!r}.")
        if self.kind not in KINDS:
            raise ValueError(f"World {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}.")

    def folder(self, spec_rest: str | None = None) -> Path:
        """The world folder of ``NAME`` (the shipped one) or ``NAME:DIR``."""
        return Path(spec_rest).expanduser() if spec_rest else self.shipped()


def register_world(world: World) -> World:
    """Register ``world`` under ``world.name``; a duplicate name is an error (two plugins claiming one scheme)."""
    from .models.specs import BUILTIN_SPECS

    with _lock:
        if world.name in _WORLDS or world.name == "local" or world.name in BUILTIN_SPECS:
            raise ValueError(f"A world named {world.name!r} is already registered.")
        _WORLDS[world.name] = world
    return world


def get_world(name: str) -> World:
    """The registered world ``name``; the error lists the known ones."""
    load_plugins()
    if name not in _WORLDS:
        known = ", ".join(sorted(_WORLDS)) or "none (is the erasekit_worlds package installed?)"
        raise ValueError(f"Unknown world {name!r}; registered worlds: {known}.")
    return _WORLDS[name]


def list_worlds() -> list[World]:
    """Every registered world, in registration order."""
    load_plugins()
    return list(_WORLDS.values())


def world_of_spec(spec: Any) -> tuple[World, Path] | None:
    """``(world, folder)`` for a model spec ``NAME`` / ``NAME:DIR`` naming a registered world, else ``None``."""
    if not isinstance(spec, str) or not spec:
        return None
    name, sep, rest = spec.partition(":")
    load_plugins()
    world = _WORLDS.get(name)
    if world is None:
        return None
    return world, world.folder(rest if sep else None)


def register_command(module: Any) -> Any:
    """Add a CLI subcommand: ``module.add_parser(subparsers)`` must define it with ``set_defaults(run=...)``.

    ``module.NAME`` is the subcommand's name (unique across the core and every plugin).
    """
    name = getattr(module, "NAME", None)
    if not name or not callable(getattr(module, "add_parser", None)):
        raise ValueError(f"A CLI plugin needs NAME and add_parser(sub); {module!r} lacks one of them.")
    with _lock:
        if name in _COMMANDS and _COMMANDS[name] is not module:
            raise ValueError(f"A CLI command named {name!r} is already registered.")
        _COMMANDS[name] = module
    return module


def commands() -> list[Any]:
    """The CLI subcommands that plugins registered."""
    load_plugins()
    return list(_COMMANDS.values())


def load_plugins() -> None:
    """Run every ``erasekit.plugins`` entry point once (idempotent, thread-safe)."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        _loaded = True  # set first: a plugin that asks a registry while loading must not recurse
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()()
            except Exception as err:  # noqa: BLE001 - a broken plugin must not break the core
                logger.warning("erasekit plugin %r (%s) failed to load: %s", ep.name, ep.value, err)
