"""The recipe framework both worlds' training recipes stand on: stages, reuse, resumable work folders, the world folder
written atomically with its manifest, and setting overrides.

A world's recipe declares its reusable :class:`Stage` s (name, the files each writes, the manifest statistics it owns,
the config sections that shape it, the stages whose outputs it reads) in a :class:`WorldRecipe`; a run trains them
in order inside :func:`write_world`, which hands it a :class:`WorldBuild`. For each stage the build

- copies it from an earlier world folder (``--reuse``) when :func:`reusable_stages` found one made with the same
  seed, data, exclusions and stage config;
- else restores it from a work folder (``--work``, :class:`StageCache`) where an interrupted run finished it;
- else trains it (and keeps it in the work folder).

The manifest records every file's sha256 and size, the stages' statistics and timings (copied stages say where from
and when they were first trained), the metrics, the config and the package versions; ``erasekit world verify``
checks a folder against it (:func:`erasekit_worlds.common.verify_world`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from erasekit._io import atomic_dir, write_json

from ..common import MANIFEST, copy_stage, file_table, read_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One reusable part of a recipe.

    Attributes:
        name: its name in ``--reuse`` decisions and work folders.
        files: the paths (files or folders) it writes in the world folder.
        entries: the ``manifest["stages"]`` statistics it owns (default: its name).
        sections: the ``RecipeConfig`` sections that shape it (default: its name).
        excludable: False for stages that see every concept whatever the run excludes (the judges).
        inputs: stages whose outputs it reads; it is copied only together with them.
        tail: an optional last part with its own config section and statistics entry, off at ``steps`` 0 (the
            CLIP's tune). An earlier world that did it with other settings lends nothing; one that skipped it lends
            the stage, and this run does the tail.
        tail_metrics: metrics of the earlier world copied with a done tail (measured between stage and tail).
        accepts: a last test of the earlier world's manifest (e.g. refusing a generator continued from another).
    """

    name: str
    files: tuple[str, ...] = ()
    entries: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    excludable: bool = True
    inputs: tuple[str, ...] = ()
    tail: str | None = None
    tail_metrics: tuple[str, ...] = ()
    accepts: Callable[[dict], bool] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", self.entries or (self.name,))
        object.__setattr__(self, "sections", self.sections or (self.name,))

    @property
    def owned(self) -> tuple[str, ...]:
        """Every statistics entry the stage may write, its tail's included."""
        return self.entries + ((self.tail,) if self.tail else ())


@dataclass(frozen=True)
class WorldRecipe:
    """What the framework knows of a world's recipe.

    Attributes:
        world: the world's name in manifests and commands (``"minicanvas"``).
        title: its name in messages (``"MiniCanvas"``).
        version: the recipe version recorded as ``manifest["recipe"]``.
        stages: the reusable stages, in recipe order.
        data: the config keys that fix the training data (a stage is reused only on the same data).
        verify: the world's folder check (problems, one line each; empty when intact).
        exclusions: ``manifest -> {stage: sorted exclusions}`` (default: the manifest's ``exclude`` for every
            excludable stage); it reads earlier manifests and this run's description alike.
        same_version: reuse only stages of worlds made by this recipe version.
        packages: packages whose versions the manifest records, besides Python, torch and erasekit.
    """

    world: str
    title: str
    version: str
    stages: tuple[Stage, ...]
    data: tuple[str, ...]
    verify: Callable[[Path], list[str]]
    exclusions: Callable[[dict], dict[str, list[str]]] | None = None
    same_version: bool = False
    packages: tuple[str, ...] = ("transformers",)

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        return next(s for s in self.stages if s.name == name)

    def stage_exclusions(self, manifest: dict) -> dict[str, list[str]]:
        """What each excludable stage of the world described by ``manifest`` left out."""
        if self.exclusions is not None:
            return self.exclusions(manifest)
        return {s.name: sorted(manifest.get("exclude", [])) for s in self.stages if s.excludable}


def check_seed(seed) -> int:
    """``seed`` if it is a non-negative integer; ValueError otherwise."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def plain(value):
    """A config dict as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def earlier_world(recipe: WorldRecipe, root: Path, option: str, hint: str = "") -> dict:
    """The manifest of an earlier world folder given to ``option``; ValueError unless it is an intact folder of
    ``recipe``'s world."""
    problems = recipe.verify(root)
    if problems:
        raise ValueError(
            f"{option} {root}: not an intact {recipe.title} world folder ({problems[0]}); pass a folder written by "
            f"`erasekit world train {recipe.world}`{hint}"
        )
    old = read_manifest(root)
    if old.get("world", recipe.world) != recipe.world:
        raise ValueError(f"{option} {root}: a {old.get('world')!r} world folder, not a {recipe.title} one")
    return old


def reusable_stages(recipe: WorldRecipe, world: str | os.PathLike, run: dict) -> dict:
    """The stages of an earlier world folder that a run described by ``run`` may copy instead of training.

    ``run`` reads like a manifest: ``seed``, ``quick``, ``config`` (as JSON), ``exclude`` and whatever
    ``recipe.exclusions`` reads. A stage is reusable when the folder's files match its manifest, the world was made
    with the same seed, quick setting and data (and recipe version, where the recipe asks), the stage saw the same
    exclusions with the same config, its inputs are reusable too, and its tail (see :class:`Stage`) allows it.

    Returns:
        ``{stage: {"dir": Path, "created": ..., "stats": {...}, "metrics": {...}, "tail_done": bool}}``
        (``tail_done`` only for stages with a tail).

    Raises:
        ValueError: the folder is not an intact world folder of this world.
    """
    root = Path(world)
    old = earlier_world(recipe, root, "--reuse", ", or leave --reuse out")
    old_cfg, cfg = old.get("config", {}), run["config"]
    same_data = (
        (not recipe.same_version or old.get("recipe") == recipe.version)
        and old.get("seed") == run["seed"]
        and bool(old.get("quick")) == run["quick"]
        and all(old_cfg.get(key) == cfg[key] for key in recipe.data)
    )
    ours, theirs = recipe.stage_exclusions(run), recipe.stage_exclusions(old)
    found = {}
    for stage in recipe.stages if same_data else ():
        same_exclusions = not stage.excludable or ours.get(stage.name) == theirs.get(stage.name)
        same_config = all(old_cfg.get(key) == cfg[key] for key in stage.sections)
        accepted = stage.accepts is None or stage.accepts(old)
        if same_exclusions and same_config and accepted and all(i in found for i in stage.inputs):
            entry = _lend(stage, old, cfg)
            if entry is not None:
                found[stage.name] = {"dir": root, **entry}
    logger.info("reusing %s from %s", ", ".join(found) or "no stage", root)
    return found


def _lend(stage: Stage, old: dict, cfg: dict) -> dict | None:
    """What an earlier world's manifest ``old`` lends of ``stage`` (None: nothing, its tail was done otherwise)."""
    entry, keys = {"created": old.get("created"), "metrics": {}}, stage.entries
    if stage.tail:
        old_tail = old.get("config", {}).get(stage.tail)
        done = bool(old_tail) and old_tail.get("steps", 0) > 0
        if done and old_tail != cfg[stage.tail]:
            return None  # a differently tuned stage cannot be untuned
        entry["tail_done"] = done
        if done:
            keys = stage.owned
            carried = old.get("metrics", {})
            entry["metrics"] = {k: carried[k] for k in stage.tail_metrics if k in carried}
    entry["stats"] = {k: old["stages"][k] for k in keys if k in old.get("stages", {})}
    return entry


def _copy_paths(source: Path, target: Path, paths) -> None:
    """Copy ``paths`` (files or folders, relative) from ``source`` to ``target``, replacing folders there."""
    for name in paths:
        src, dst = source / name, target / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir():  # a later stage's version of an earlier stage's files (the tuned CLIP)
            shutil.rmtree(dst)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


class StageCache:
    """Finished recipe stages kept in a work folder: ``<work>/<stage>/`` holds the stage's files and ``stage.json``
    (the settings that made them and the stage's statistics); each is written atomically when the stage ends."""

    def __init__(self, work: str | os.PathLike):
        self.root = Path(work)
        self.root.mkdir(parents=True, exist_ok=True)

    def restore(self, stage: str, identity: dict, into: Path, files) -> dict | None:
        """Copy the stage's ``files`` into ``into`` and return its statistics, or None when it has not finished; a
        stage finished with other settings is an error (it would silently mix two recipes)."""
        folder = self.root / stage
        if not (folder / "stage.json").exists():
            return None
        record = json.loads((folder / "stage.json").read_text(encoding="utf-8"))
        if record.get("identity") != plain(identity):
            raise ValueError(
                f"{folder} holds a {stage} stage trained with other settings; use another --work folder, or delete "
                f"{folder} to train the stage again"
            )
        _copy_paths(folder, into, files)
        logger.info("%s: reusing the finished stage in %s", stage, folder)
        return record["stats"]

    def store(self, stage: str, identity: dict, source: Path, files, stats: dict) -> None:
        """Keep the finished stage's ``files`` (from ``source``) and its statistics."""
        with atomic_dir(self.root / stage, overwrite=True) as tmp:
            _copy_paths(source, tmp, files)
            write_json(tmp / "stage.json", {"identity": identity, "stats": stats})

    def checkpoint(self, stage: str) -> Path:
        """Where a long stage keeps its training checkpoint."""
        return self.root / f"{stage}.checkpoint.safetensors"

    def folder(self, stage: str) -> Path:
        """The folder of a finished stage."""
        return self.root / stage


@dataclass
class WorldBuild:
    """One recipe run writing the temporary world folder ``tmp``: the stages' statistics and the metrics so far, the
    stages it may copy (``reused``), the work folder (``cache``) and the settings every stage's identity shares."""

    recipe: WorldRecipe
    tmp: Path
    reused: dict = field(default_factory=dict)
    cache: StageCache | None = None
    identity: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def run(self, stage: Stage, train: Callable[[], dict], identity: dict | None = None) -> bool:
        """Copy ``stage`` from the earlier world, restore it from the work folder, or ``train()`` it.

        ``train`` writes the stage's files into ``tmp`` and returns its statistics (``{entry: stats}`` for a stage
        owning several entries); ``identity`` (with the shared settings) is what a finished stage in the work
        folder must match. Returns True when the stage was copied from the earlier world.
        """
        if stage.name in self.reused:
            copy_stage(stage.files, self.reused[stage.name], self.tmp, self.stages)
            self.metrics.update(self.reused[stage.name]["metrics"])
            logger.info("%s: copied from %s", stage.name, self.reused[stage.name]["dir"])
            return True
        identity = {**self.identity, **(identity or {})}
        stats = self.cache.restore(stage.name, identity, self.tmp, stage.files) if self.cache else None
        resumed = stats is not None
        if not resumed:
            stats = train()
            if self.cache:
                self.cache.store(stage.name, identity, self.tmp, stage.files, stats)
        entries = stats if len(stage.entries) > 1 else {stage.entries[0]: stats}
        for key, value in entries.items():
            self.stages[key] = {**value, "resumed_from": str(self.cache.folder(stage.name))} if resumed else value
        return False

    def tail_copied(self, name: str) -> bool:
        """Whether the stage ``name`` was copied with its tail done (so this run skips the tail)."""
        return bool(self.reused.get(name, {}).get("tail_done"))

    def reused_entries(self) -> list[str]:
        """The statistics entries copied from the earlier world, in recipe order (``manifest["reused"]``)."""
        owned = [key for name in self.reused for key in self.recipe.stage(name).owned]
        return [key for key in owned if "reused_from" in self.stages.get(key, {})]


def write_world(
    recipe: WorldRecipe,
    out: str | os.PathLike,
    train: Callable[[WorldBuild], dict],
    overwrite: bool = False,
    reused: dict | None = None,
    work: str | os.PathLike | None = None,
    identity: dict | None = None,
) -> dict:
    """Write the world folder ``out`` atomically: ``train(build)`` fills the build's temporary folder and returns the
    manifest's description (see :func:`describe`); the copied entries, timings and file table are added here.

    Returns:
        The manifest (also written to ``out/manifest.json``).
    """
    started = time.perf_counter()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        cache = StageCache(work) if work else None
        build = WorldBuild(recipe, Path(tmp), reused or {}, cache, identity or {})
        manifest = train(build)
        manifest["reused"] = build.reused_entries()
        manifest["total_seconds"] = round(time.perf_counter() - started, 1)
        copied = sum(manifest["stages"][name].get("seconds", 0.0) for name in manifest["reused"])
        manifest["full_recipe_seconds"] = round(manifest["total_seconds"] + copied, 1)
        manifest["files"] = file_table(tmp)
        manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
        write_json(Path(tmp) / MANIFEST, manifest)
    logger.info("wrote the %s world to %s (%.1f MB)", recipe.title, out, manifest["total_bytes"] / 1e6)
    return manifest


def describe(build: WorldBuild, cfg, seed: int, excluded: list[str], device, facts: dict, sampling: dict) -> dict:
    """The manifest's description of a run: world, recipe, seed, exclusions, ``facts`` (the world's classes or
    attributes), the sampling settings, device, versions, creation time, statistics, metrics and config."""
    import importlib

    from erasekit import __version__

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    versions.update({name: importlib.import_module(name).__version__ for name in build.recipe.packages})
    return {
        "world": build.recipe.world,
        "recipe": build.recipe.version,
        "seed": seed,
        "exclude": excluded,
        "quick": cfg.quick,
        **facts,
        "sampling": sampling,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "versions": {**versions, "erasekit": __version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stages": build.stages,
        "metrics": build.metrics,
        "config": cfg.to_dict(),
    }


def half(module: torch.nn.Module) -> torch.nn.Module:
    """An fp16 CPU copy of ``module``: how a world ships its weights."""
    return copy.deepcopy(module).to(device="cpu", dtype=torch.float16)


def fp32_config(config_path: Path) -> None:
    """Make a saved transformers config say float32: transformers loads a model in the dtype its config names, and
    the weights ship in fp16 while erasekit computes in fp32 by default on CPU (as diffusers does)."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["dtype"] = "float32"
    write_json(config_path, config)


def apply_overrides(cfg, overrides):
    """A copy of the recipe config ``cfg`` with ``["gan.lr=3e-3", "check_samples=500"]``-style settings applied
    (values read the way ``erasekit erase --set`` reads them). Unknown names and values of the wrong type are errors
    that list what may be set."""
    from erasekit.methods.config import _check_types, parse_override

    out = copy.deepcopy(cfg)
    for item in overrides or []:
        key, value = parse_override(str(item)) if "=" in str(item) else ("", None)
        if not key:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE, e.g. gan.lr=0.003")
        head, _, name = key.rpartition(".")
        target = getattr(out, head, None) if head else out
        if head and not dataclasses.is_dataclass(target):
            sections = [f.name for f in dataclasses.fields(out) if dataclasses.is_dataclass(getattr(out, f.name))]
            raise ValueError(f"--set {item!r}: no section {head!r}; sections: {', '.join(sections)}")
        names = [f.name for f in dataclasses.fields(target) if not dataclasses.is_dataclass(getattr(target, f.name))]
        if name not in names:
            raise ValueError(
                f"--set {item!r}: {head or 'the recipe'} has no setting {name!r}; it has {', '.join(names)}"
            )
        try:
            changed = dataclasses.replace(target, **{name: value})  # the section's __post_init__ checks the value
            _check_types(changed)
        except (TypeError, ValueError) as e:
            raise ValueError(f"--set {item!r}: {e}") from e
        if head:
            setattr(out, head, changed)
        else:
            out = changed
    return out
