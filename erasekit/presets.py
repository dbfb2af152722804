"""Presets: named, tuned settings of a method for one world, and how an erasure's config is resolved.

A method's defaults are its paper's settings for full-size models. Settings tuned on a world live in that world's
preset, a YAML file the world's plugin ships (``World.presets``)::

    method: salun
    description: tuned on the shipped MiniCanvas world
    plan: true            # phrase the world's targets with its erasure plan (prompt lists, anchor)
    options:              # for every concept
      lr: 1.0e-4
    by_kind:              # per concept kind, on top of ``options`` (the world tells the kind of a concept)
      style: {null_weight: 1.0}

A model that comes from a world selects that world's preset automatically; ``preset=`` (``--preset``) names another
one (``WORLD`` or ``WORLD/METHOD``), a YAML file, or ``"none"`` for the paper defaults. The config is resolved in one
order, and the patch records the preset and the result: the method's defaults, the world's plan for the target
(prompt lists and anchor, when the preset asks for it), the preset's ``options``, its ``by_kind`` section of the
concepts' kind (which may also drop a plan's list, e.g. ``retain_prompts: null``), the user's config file or mapping,
then the user's overrides.

Example:
    >>> resolved = resolve_erasure("salun", "minicanvas", "Mosaic style")
    >>> resolved.preset.name, resolved.kind
    ('minicanvas/salun', 'style')
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .methods import MethodConfig, RunConfig, get_method
from .methods.config import split_run_options
from .methods.loop import concept_list

logger = logging.getLogger(__name__)

PRESET_KEYS = ("method", "description", "plan", "options", "by_kind")
AUTO, NONE = "auto", "none"


@dataclass(frozen=True)
class Preset:
    """A method's settings tuned for a world (or any YAML preset file).

    Attributes:
        name: ``WORLD/METHOD`` for a world's preset, else the file's path.
        method: the method the settings are for.
        options: option -> value for every concept.
        by_kind: concept kind (e.g. ``"style"``) -> options on top of ``options`` for concepts of that kind.
        plan: whether to phrase the world's targets with its erasure plan (prompt lists and anchor).
        description: one line for ``erasekit list``.
        path: the file it was read from.
    """

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    plan: bool = False
    description: str = ""
    path: str = ""

    def settings(self, kind: str | None = None) -> dict[str, Any]:
        """The options this preset sets for a concept of ``kind`` (``None``: the shared ones only)."""
        return {**self.options, **(self.by_kind.get(kind, {}) if kind else {})}

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "path"}


def load_preset(path: str | Path, name: str | None = None, method: str | None = None) -> Preset:
    """Read a preset file; every way it can be wrong is a ``ValueError`` naming the fix.

    Args:
        path: the YAML file.
        name: what to call it (default: the path).
        method: when given, the preset must be for this method.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"No preset file at {path}; give a world name (e.g. minicanvas), WORLD/METHOD or a file.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}; fix the syntax.") from err
    if not isinstance(data, dict) or "method" not in data:
        raise ValueError(f"{path} must be a mapping with 'method:' and 'options:' (see `erasekit list METHOD`).")
    unknown = sorted(set(data) - set(PRESET_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown preset keys {unknown}; a preset holds {', '.join(PRESET_KEYS)}.")
    if method is not None and data["method"] != method:
        raise ValueError(f"The preset {path} is for {data['method']!r}, not {method!r}.")
    by_kind = data.get("by_kind") or {}
    options = data.get("options") or {}
    if not isinstance(options, dict) or not isinstance(by_kind, dict):
        raise ValueError(f"{path}: 'options' must map option names to values and 'by_kind' kinds to such mappings.")
    preset = Preset(
        name=name or str(path),
        method=str(data["method"]),
        options=dict(options),
        by_kind={str(k): dict(v or {}) for k, v in by_kind.items()},
        plan=bool(data.get("plan", False)),
        description=str(data.get("description", "")),
        path=str(path),
    )
    _check(preset)
    return preset


def _check(preset: Preset) -> None:
    """Every option the preset sets must be one of the method's (so a bad preset fails before any work)."""
    cls = get_method(preset.method).config_class
    for kind in [None, *preset.by_kind]:
        method_opts, run_opts = split_run_options(preset.settings(kind))
        if run_opts:
            raise ValueError(f"Preset {preset.name}: {sorted(run_opts)} are run options; a preset sets results only.")
        try:
            cls().with_overrides(method_opts)
        except (TypeError, ValueError) as err:
            raise ValueError(f"Preset {preset.name}{f' ({kind})' if kind else ''}: {err}") from None


def world_presets(world) -> dict[str, Preset]:
    """Method -> preset of a registered world (empty when it ships none)."""
    if world.presets is None:
        return {}
    out = {}
    for method, path in world.presets().items():
        out[method] = load_preset(path, name=f"{world.name}/{method}", method=method)
    return out


def find_preset(spec: str | Path | None, method: str, model: Any = None) -> Preset | None:
    """The preset ``spec`` names for ``method``.

    ``None``/``"auto"``: the preset of the world ``model`` comes from, if any; ``"none"``: no preset (the method's
    defaults); ``WORLD`` or ``WORLD/METHOD``: a registered world's; anything else: a YAML file.
    """
    from .plugins import get_world

    if spec is None or spec == AUTO:
        world = model_world(model)
        return world_presets(world).get(method) if world is not None else None
    spec = str(spec)
    if spec == NONE:
        return None
    if spec.endswith((".yaml", ".yml")) or Path(spec).expanduser().is_file():
        return load_preset(spec, method=method)
    world_name, _, named_method = spec.partition("/")
    if named_method and named_method != method:
        raise ValueError(f"The preset {spec!r} is for {named_method!r}, not {method!r}.")
    try:
        world = get_world(world_name)
    except ValueError as err:
        raise ValueError(
            f"Unknown preset {spec!r}: give a world name, WORLD/METHOD, a preset YAML file or 'none' ({err})"
        ) from None
    found = world_presets(world).get(method)
    if found is None:
        raise ValueError(f"The world {world_name!r} ships no preset for {method!r}; use --preset none or a file.")
    return found


def model_world(model: Any):
    """The registered world a model spec (or a handle loaded from one) comes from, else ``None``."""
    from .plugins import world_of_spec

    spec = model if isinstance(model, str) else getattr(model, "spec", None)
    found = world_of_spec(spec) if isinstance(spec, str) else None
    return found[0] if found else None


@dataclass
class ResolvedErasure:
    """What an erasure runs with: the method's config, the run options, the concepts and anchor, and the preset."""

    method: str
    config: MethodConfig
    run: RunConfig
    concepts: list[str]
    anchor: str | None
    preset: Preset | None = None
    kind: str | None = None
    targets: list[str] | None = None  # the world's targets the concepts name, when the plan phrased them

    @property
    def concept(self) -> str | list[str]:
        """The concept as the method takes it: one string, or a list for several."""
        return self.concepts[0] if len(self.concepts) == 1 else list(self.concepts)

    def record(self) -> dict[str, Any]:
        """What the patch metadata records about how the config was chosen."""
        return {
            "name": self.preset.name if self.preset else None,
            "kind": self.kind,
            "targets": self.targets,
            "settings": self.preset.settings(self.kind) if self.preset else {},
        }

    def ran_as(self, record: Any, config: dict[str, Any], anchor: str | None) -> bool:
        """Whether an erasure that recorded ``record`` (its patch's ``metadata["preset"]``), ``config`` and ``anchor``
        ran as this one runs now: the same anchor and preset record. A ``record`` that is not a full record (a
        preset name, as older results kept) is judged by the preset's settings for this concept's kind instead, each
        compared with ``config``."""
        if anchor != self.anchor:
            return False
        if isinstance(record, dict):
            return record == self.record()
        settings = self.preset.settings(self.kind) if self.preset else {}
        return all(k in config and config[k] == v for k, v in settings.items())


def resolve_erasure(
    method: str,
    model: Any,
    concept: str | list[str],
    anchor: str | None = None,
    config: MethodConfig | dict | str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    preset: str | Path | Preset | None = None,
    run: RunConfig | dict | None = None,
    world: str | None = None,
) -> ResolvedErasure:
    """Resolve everything an erasure needs before any work (see the module docstring for the order).

    Args:
        method: a registered method.
        model: the model (a spec such as ``"minicanvas"``, or a handle/pipeline; only a spec or a handle's
            ``spec`` can select a world's preset automatically).
        concept: the concept, or a list of concepts erased together.
        anchor: what the concept becomes (default: the plan's or the method's choice).
        config: a config dataclass (used as is, no preset), a mapping, or a YAML file, applied after the preset.
        overrides: ``key=value`` strings or a mapping applied last; run options among them go to the RunConfig.
        preset: see :func:`find_preset`, or a :class:`Preset`.
        run: run options (a RunConfig or a mapping), before those among ``overrides``.
        world: the world (a spec, ``"minicanvas"`` or ``"minicanvas:DIR"``) whose presets, plan and concept kinds
            apply, for a model handle that does not say where it comes from (default: the model's own world).
    """
    from .api import read_config_source

    cls = get_method(method).config_class
    concepts = concept_list(concept)
    items = _override_items(overrides)
    method_items, run_items = split_run_options(items)
    run_cfg = run if isinstance(run, RunConfig) else RunConfig.from_dict(run or {})
    if isinstance(config, MethodConfig):  # a finished config: nothing goes under it
        if not isinstance(config, cls):
            raise TypeError(f"Method {method!r} takes a {cls.__name__}, got a {type(config).__name__}.")
        cfg = config.with_overrides(method_items) if method_items else config
        return ResolvedErasure(method, cfg, run_cfg.with_overrides(run_items), concepts, anchor)
    source, source_run = split_run_options(read_config_source(method, config))
    where = world if world is not None else model
    chosen = preset if isinstance(preset, Preset) else find_preset(preset, method, where)
    kind, targets, plan = None, None, {}
    world = model_world(where)
    if world is not None and world.target_of is not None:
        found = [world.target_of(c) for c in concepts]
        if all(found):
            targets = found
            kinds = sorted({t.partition(":")[0] for t in targets})
            if len(kinds) > 1:
                raise ValueError(
                    f"{', '.join(concepts)} are of different kinds ({', '.join(kinds)}); erase them in separate runs "
                    "(a patch on a patch: --on PATCH)."
                )
            kind = kinds[0]
    if chosen is not None and chosen.plan and targets and world.plan is not None:
        phrased, plan_anchor, plan = world.plan(method, targets if len(targets) > 1 else targets[0])
        concepts = concept_list(phrased)
        anchor = anchor if anchor is not None else plan_anchor
    layers = [plan, chosen.settings(kind) if chosen else {}, source, method_items]
    cfg = cls()
    for layer in layers:
        if layer:
            cfg = cfg.with_overrides(layer)
    run_cfg = run_cfg.with_overrides({**source_run, **run_items})
    return ResolvedErasure(method, cfg, run_cfg, concepts, anchor, chosen, kind, targets)


def _override_items(overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    from .methods.config import parse_override

    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    return dict(parse_override(o) for o in overrides)
