"""The one-call Python API: ``erasekit.erase(model, method, concept, ...)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .methods import MethodConfig, get_method
from .models import load_model
from .patch import ErasurePatch


def _read_yaml(path: Path) -> dict:
    """A YAML config file's mapping; every way it can be wrong is a ``ValueError`` that says how to fix it."""
    if not path.is_file():
        raise ValueError(f"No config file at {path}; check the path (`erasekit list METHOD --yaml` prints one).")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ValueError(
            f"{path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}; fix the syntax."
        ) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} must hold a mapping of option: value (e.g. 'steps: 100'), not a {type(data).__name__}."
        )
    return data


def resolve_config(
    method: str,
    config: MethodConfig | dict | str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> MethodConfig:
    """The method's config from a dataclass, a dict, or a YAML file, with dotted overrides applied.

    A YAML file may name its method (``method: salun``); it must then agree with ``method``.
    """
    cls = get_method(method).config_class
    if config is None:
        cfg = cls()
    elif isinstance(config, MethodConfig):
        if not isinstance(config, cls):
            raise TypeError(f"Method {method!r} takes a {cls.__name__}, got a {type(config).__name__}.")
        cfg = config
    else:
        data = dict(config) if isinstance(config, dict) else _read_yaml(Path(config))
        named = data.pop("method", method)
        if named != method:
            raise ValueError(f"The config is for method {named!r} but {method!r} was requested.")
        cfg = cls.from_dict(data)
    return cfg.with_overrides(overrides) if overrides else cfg


def erase(
    model,
    method: str,
    concept: str,
    anchor: str | None = None,
    config: MethodConfig | dict | str | Path | None = None,
    callbacks=(),
    **overrides,
) -> ErasurePatch:
    """Erase ``concept`` from ``model`` with ``method``; the model is left unchanged and a patch is returned.

    Args:
        model: a diffusers pipeline, an erasekit model handle, or a spec (``"tiny-sd"``, ``"local:/path"``).
        method: a registered method name (see :func:`erasekit.list_methods`).
        concept: the words to erase, e.g. ``"Van Gogh style"``.
        anchor: what the concept should become, for methods that use one (default: the method's choice).
        config: a config dataclass, a dict, or a YAML path; ``**overrides`` are applied on top (``steps=200``).
        callbacks: extra :class:`erasekit.methods.Callback` objects for the training loop.

    Example:
        >>> patch = erasekit.erase("tiny-sd", "esd", "a cat", steps=2)
        >>> patch.save("no_cat.safetensors")
    """
    cfg = resolve_config(method, config, overrides)
    return get_method(method)(cfg).erase(load_model(model), concept, anchor=anchor, callbacks=callbacks)
