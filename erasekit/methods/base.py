"""The method registry and the base classes every erasure method derives from.

A method is a registered class with a config dataclass and one entry point,
``erase(model, concept, anchor=None, callbacks=()) -> ErasurePatch``, which leaves the caller's model as it found it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

from .config import MethodConfig, RunConfig

_REGISTRY: dict[str, type[EraseMethod]] = {}
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class EraseMethod:
    """Base class. Subclasses set ``config_class`` and ``kinds`` and implement :meth:`erase`."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    kinds: ClassVar[tuple[str, ...]] = ("diffusion",)  # model kinds the method works on
    summary: ClassVar[str] = ""  # one line for `erasekit list`

    def __init__(self, config: MethodConfig | None = None, run: RunConfig | None = None):
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name} takes a {self.config_class.__name__}, got {type(config).__name__}.")
        if run is not None and not isinstance(run, RunConfig):
            raise TypeError(f"run must be a RunConfig, got {type(run).__name__}.")
        self.config = config
        legacy = getattr(config, "run_options", None)  # run options given to the config's constructor (old code)
        self.run = run if run is not None else RunConfig.from_dict(legacy or {})

    def erase(self, model, concept: str | list[str], anchor: str | None = None, callbacks=()):
        """Erase ``concept`` (or several concepts at once, a list) from ``model``; returns an ErasurePatch."""
        raise NotImplementedError

    def seed_matters(self) -> bool:
        """Whether ``config.seed`` changes the result (closed-form methods may be deterministic)."""
        return True


def register_method(name: str):
    """Class decorator adding a method to the registry; a bad or duplicate name fails at import time.

    Example:
        >>> @register_method("esd")
        ... class ESD(TrainedMethod):
        ...     config_class = ESDConfig
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"Method name {name!r} must be lowercase letters, digits and underscores.")

    def decorate(cls: type[EraseMethod]) -> type[EraseMethod]:
        if name in _REGISTRY:
            raise ValueError(f"Method {name!r} is already registered by {_REGISTRY[name].__qualname__}.")
        if not (isinstance(cls, type) and issubclass(cls, EraseMethod)):
            raise TypeError(f"@register_method({name!r}) must decorate an EraseMethod subclass.")
        cfg = cls.config_class
        if not (dataclasses.is_dataclass(cfg) and issubclass(cfg, MethodConfig)):
            raise TypeError(f"{cls.__qualname__}.config_class must be a MethodConfig dataclass.")
        undocumented = [f.name for f in dataclasses.fields(cfg) if not f.metadata.get("help")]
        if undocumented:
            raise TypeError(f"{cfg.__qualname__} fields lack help text: {undocumented}.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_REGISTRY)


def get_method(name: str) -> type[EraseMethod]:
    """The method class registered under ``name``; a clear error listing the choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; available: {', '.join(list_methods())}.") from None
