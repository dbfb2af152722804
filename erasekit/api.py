"""The one-call Python API: ``erasekit.erase(model, method, concept, ...)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .methods import MethodConfig, RunConfig, get_method
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


def read_config_source(method: str, config: dict | str | Path | None) -> dict[str, Any]:
    """The options a config mapping or YAML file holds (``{}`` for ``None``); a ``method:`` key must agree."""
    if config is None:
        return {}
    data = dict(config) if isinstance(config, dict) else _read_yaml(Path(config))
    named = data.pop("method", method)
    if named != method:
        raise ValueError(f"The config is for method {named!r} but {method!r} was requested.")
    return data


def resolve_config(
    method: str,
    config: MethodConfig | dict | str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> MethodConfig:
    """The method's config from a dataclass, a dict, or a YAML file, with dotted overrides applied (no preset:
    :func:`erasekit.presets.resolve_erasure` adds a world's preset and splits off the run options).

    A YAML file may name its method (``method: salun``); it must then agree with ``method``.
    """
    cls = get_method(method).config_class
    if isinstance(config, MethodConfig):
        if not isinstance(config, cls):
            raise TypeError(f"Method {method!r} takes a {cls.__name__}, got a {type(config).__name__}.")
        cfg = config
    else:
        cfg = cls.from_dict(read_config_source(method, config))
    return cfg.with_overrides(overrides) if overrides else cfg


def erase(
    model,
    method: str,
    concept: str | list[str],
    anchor: str | None = None,
    config: MethodConfig | dict | str | Path | None = None,
    callbacks=(),
    preset: str | Path | None = None,
    run: RunConfig | dict | None = None,
    on: ErasurePatch | str | Path | None = None,
    world: str | None = None,
    **overrides,
) -> ErasurePatch:
    """Erase ``concept`` from ``model`` with ``method``; the model is left unchanged and a patch is returned.

    Args:
        model: a diffusers pipeline, an erasekit model handle, or a spec (``"tiny-sd"``, ``"minicanvas"``).
        method: a registered method name (see :func:`erasekit.list_methods`).
        concept: the words to erase, e.g. ``"Van Gogh style"``, or a list of concepts erased together in one run.
        anchor: what the concept should become, for methods that use one (default: the method's choice).
        config: a config dataclass, a dict, or a YAML path; ``**overrides`` are applied on top (``steps=200``).
        callbacks: extra :class:`erasekit.methods.Callback` objects for the training loop.
        preset: tuned settings (:mod:`erasekit.presets`): default the preset of the world ``model`` comes from,
            ``"none"`` for the method's (paper) defaults, a world name, ``WORLD/METHOD`` or a YAML file.
        run: how to run (:class:`erasekit.methods.RunConfig`); run options among ``**overrides`` (``progress=False``)
            go there too. They never change the result.
        on: an earlier patch (or its file): erase from the model with it applied (a patch on a patch). The result is
            one patch relative to the original base model, holding the earlier erasure and this one.
        world: the world whose preset, plan and concept kinds apply when ``model`` is a loaded pipeline or handle
            that does not say where it comes from (``"minicanvas"``, ``"minicanvas:DIR"``).

    Example:
        >>> patch = erasekit.erase("tiny-sd", "esd", "a cat", steps=2)
        >>> patch.save("no_cat.safetensors")
    """
    from .presets import resolve_erasure

    resolved = resolve_erasure(method, model, concept, anchor, config, overrides, preset, run, world)
    return erase_resolved(load_model(model), resolved, callbacks, on)


def erase_resolved(handle, resolved, callbacks=(), on: ErasurePatch | str | Path | None = None) -> ErasurePatch:
    """Run an erasure :func:`erasekit.presets.resolve_erasure` resolved, on a loaded model handle; the patch
    metadata records the preset (``"preset"``) beside the fully resolved config (``"config"``).

    ``on``: an earlier patch to erase on top of (see :func:`erase`).
    """
    from .patch import load_patch

    earlier = load_patch(on) if isinstance(on, str | Path) else on
    runner = get_method(resolved.method)(resolved.config, resolved.run)
    if earlier is None:
        patch = runner.erase(handle, resolved.concept, anchor=resolved.anchor, callbacks=callbacks)
    else:
        with earlier.applied(handle):
            patch = runner.erase(handle, resolved.concept, anchor=resolved.anchor, callbacks=callbacks)
    patch.metadata["preset"] = resolved.record()
    return patch if earlier is None else sequential(earlier, patch)


def sequential(earlier: ErasurePatch, later: ErasurePatch) -> ErasurePatch:
    """One patch relative to the original base from ``earlier`` and ``later``, a patch made on the model with
    ``earlier`` applied: applying it equals applying both in turn (up to float rounding where they overlap).

    The metadata keeps both erasures' own metadata, in order, under ``"sequence"``.
    """
    combined = earlier + later
    steps = earlier.metadata.get("sequence") or [_without_deltas(earlier.metadata)]
    combined.metadata.update(method="sequence", sequence=[*steps, _without_deltas(later.metadata)])
    return combined


def _without_deltas(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "sequence"}
