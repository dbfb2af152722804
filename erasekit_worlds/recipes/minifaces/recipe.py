"""The MiniFaces training recipe: every model of the world, from scratch, deterministic from one seed.

Stages (in order): render the training and held-out faces; the attribute classifier (the judge, always trained on
every face); the world's CLIP, then tuned on per-attribute statements; the StyleGAN2; then everything
is saved as fp16 safetensors, reloaded and measured (classifier accuracy per attribute, CLIP zero-shot per
attribute, the generator's attribute frequencies against the data's, and FID in the CLIP's feature space), and
``manifest.json`` records files, timings and metrics.

``exclude=["glasses"]`` trains the gold standard of unlearning, the world *retrained without the attribute*: faces
with it never reach CLIP or the GAN (attributes are independent, so the other attributes keep their frequencies).

``work=DIR`` keeps each finished stage (and the generator's checkpoints) so an interrupted run resumes;
``reuse=WORLD`` copies the stages of an earlier world folder whose settings match this run's (the classifier, the
CLIP with its tune, the generator; see :func:`reusable_stages`), e.g. to retrain only the generator with more steps;
``gan_from=WORLD`` starts the generator from that world's generator instead of from scratch (a warm start: its
``gan.steps`` are more steps on a fresh schedule, and the manifest adds them up in ``total_steps``).

Example:
    >>> from dataclasses import replace
    >>> from erasekit_worlds.recipes.minifaces.recipe import RecipeConfig, train_world
    >>> manifest = train_world("worlds/minifaces", seed=0)
    >>> cfg = RecipeConfig()
    >>> cfg.gan = replace(cfg.gan, steps=60_000)
    >>> manifest = train_world("worlds/faces_v2", config=cfg, reuse="erasekit_worlds/minifaces/weights")
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from erasekit._io import atomic_dir, write_json

from ...minicanvas.manifest import MANIFEST, copy_stage, file_table, read_manifest
from ...minifaces.classifier import load_attribute_classifier
from ...minifaces.data import HAIR_COLOURS, INDICATORS, FaceBank, render_bank, resolve_indicator
from ...minifaces.manifest import CLASSIFIER, GENERATOR, verify_manifest
from ..minicanvas.training import Stopwatch, resolve_device
from .train_classifier import ClassifierTrainConfig, evaluate_classifier, train_attribute_classifier
from .train_clip import FaceClipTrainConfig, FaceClipTuneConfig, train_face_clip, tune_face_clip, zero_shot
from .train_gan import GanTrainConfig, config_differences, train_gan

logger = logging.getLogger(__name__)

RECIPE = "minifaces-v1"


@dataclass
class RecipeConfig:
    """Everything the recipe does, with its defaults; :func:`quick_config` shrinks it for smoke tests."""

    train_images: int = 30_000  # rendered training faces (~370 MB as uint8; ~45 s to render on one core)
    heldout_images: int = 2_000  # held-out faces for the measurements and the FID reference
    classifier: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    clip: FaceClipTrainConfig = field(default_factory=FaceClipTrainConfig)
    clip_tune: FaceClipTuneConfig = field(default_factory=FaceClipTuneConfig)
    gan: GanTrainConfig = field(default_factory=GanTrainConfig)
    check_samples: int = 2_000  # generator samples (seeds 0..N-1) for attribute frequencies and FID
    quick: bool = False  # a seconds-long smoke run: the models are untrained and the metrics meaningless

    def to_dict(self) -> dict:
        return asdict(self)


def quick_config() -> RecipeConfig:
    """Tiny data, tiny networks and a couple of steps per stage (seconds on a CPU), for tests."""
    cfg = RecipeConfig(train_images=64, heldout_images=16, check_samples=8, quick=True)
    cfg.classifier = replace(cfg.classifier, width=4, steps=2, batch_size=16, warmup=1)
    small = dict(text_hidden=16, text_layers=1, text_heads=2, vision_hidden=16, vision_layers=1, vision_heads=2)
    cfg.clip = replace(cfg.clip, **small, projection_dim=16, steps=2, batch_size=16, warmup=1)
    cfg.clip_tune = replace(cfg.clip_tune, steps=2, batch_size=16, warmup=1)
    cfg.gan = replace(cfg.gan, z_dim=48, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
    cfg.gan = replace(cfg.gan, d_channel_base=256, d_channel_max=16, steps=2, batch_size=4, r1_every=2)
    cfg.gan = replace(cfg.gan, teacher_steps=2)
    return cfg


def apply_overrides(cfg: RecipeConfig, overrides) -> RecipeConfig:
    """A copy of ``cfg`` with ``["gan.lr=3e-3", "check_samples=500"]``-style settings applied (values read the way
    ``erasekit erase --set`` reads them). Unknown names and values of the wrong type are errors that list what may
    be set."""
    import dataclasses

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
            changed = replace(target, **{name: value})  # the section's __post_init__ checks the value
            _check_types(changed)
        except (TypeError, ValueError) as e:
            raise ValueError(f"--set {item!r}: {e}") from e
        if head:
            setattr(out, head, changed)
        else:
            out = changed
    return out


def check_exclude(exclude) -> list[str]:
    """Indicator names from ``["glasses", "hair:red"]``-style entries (phrases are resolved); errors name the
    valid ones. Excluding every hair colour is refused."""
    items = [exclude] if isinstance(exclude, str) else list(exclude or [])
    names = []
    for item in items:
        text = str(item).strip()
        if text.lower().startswith("hair:"):
            text = f"hair_{text[5:].strip().lower()}"
        names.append(text if text in INDICATORS else resolve_indicator(text))
    names = list(dict.fromkeys(names))
    if all(f"hair_{c}" in names for c in HAIR_COLOURS):
        raise ValueError("--exclude removes every hair colour, which leaves no face; keep at least one")
    return names


def train_world(
    out: str | os.PathLike,
    seed: int = 0,
    device: str | torch.device = "auto",
    quick: bool = False,
    overwrite: bool = False,
    config: RecipeConfig | None = None,
    exclude=None,
    work: str | os.PathLike | None = None,
    reuse: str | os.PathLike | None = None,
    gan_from: str | os.PathLike | None = None,
) -> dict:
    """Train every model of the MiniFaces world from scratch and write the world folder ``out`` atomically.

    Args:
        out: the world folder to create (see :mod:`erasekit_worlds.minifaces.manifest` for its layout).
        seed: the one seed everything follows from (same seed and device -> same weights).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        quick: :func:`quick_config` (seconds; for smoke tests); ignored when ``config`` is given.
        overwrite: replace an existing non-empty ``out``.
        config: a full :class:`RecipeConfig` (default: the recipe's defaults).
        exclude: attributes left out of CLIP and GAN training (``["glasses"]``, ``["hair:red"]``).
        work: a folder that keeps each finished stage (classifier, CLIP, generator) and the generator's training
            checkpoints; running again with the same ``work`` (after an interruption) picks up where the last run
            stopped, with the same result as an uninterrupted run. Stages trained with other settings are refused
            rather than reused; delete the folder to start over.
        reuse: an earlier world folder; its stages whose settings match this run's are copied instead of trained
            (see :func:`reusable_stages`); the manifest lists them under ``"reused"``.
        gan_from: an earlier world folder whose generator this run continues (see :func:`generator_to_continue`):
            the generator stage starts from its weights and trains ``gan.steps`` more steps; never copied by
            ``reuse``.

    Returns:
        The manifest (also written to ``out/manifest.json``).
    """
    excluded = check_exclude(exclude)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    device = resolve_device(device)
    cfg = config or (quick_config() if quick else RecipeConfig())
    reused = reusable_stages(reuse, cfg, seed, excluded) if reuse is not None else {}
    init = generator_to_continue(gan_from, cfg, excluded) if gan_from is not None else None
    if init is not None:
        reused.pop("gan", None)  # continued, not copied
    started = time.perf_counter()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        cache = StageCache(work) if work else None
        manifest = _train_into(Path(tmp), cfg, seed, excluded, device, cache, reused, init)
        manifest["total_seconds"] = round(time.perf_counter() - started, 1)
        copied = sum(manifest["stages"][name].get("seconds", 0.0) for name in manifest["reused"])
        manifest["full_recipe_seconds"] = round(manifest["total_seconds"] + copied, 1)
        manifest["files"] = file_table(tmp)
        manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
        write_json(Path(tmp) / MANIFEST, manifest)
    logger.info("wrote the MiniFaces world to %s (%.1f MB)", out, manifest["total_bytes"] / 1e6)
    return manifest


class StageCache:
    """Finished recipe stages kept in a work folder: ``<work>/<stage>/`` holds the stage's files and ``stage.json``
    (the settings that made them and the stage's statistics); each is written atomically when the stage ends."""

    def __init__(self, work: str | os.PathLike):
        self.root = Path(work)
        self.root.mkdir(parents=True, exist_ok=True)

    def restore(self, stage: str, identity: dict, into: Path, files: list[str]) -> dict | None:
        """Copy the stage's ``files`` into ``into`` and return its statistics, or None when it has not finished; a
        stage finished with other settings is an error (it would silently mix two recipes)."""
        folder = self.root / stage
        if not (folder / "stage.json").exists():
            return None
        record = json.loads((folder / "stage.json").read_text(encoding="utf-8"))
        if record.get("identity") != json.loads(json.dumps(identity)):
            raise ValueError(
                f"{folder} holds a {stage} stage trained with other settings; use another --work folder, or delete "
                f"{folder} to train the stage again"
            )
        for name in files:
            source, target = folder / name, into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():  # a later stage's version of an earlier stage's files (the tuned CLIP)
                shutil.rmtree(target)
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
        logger.info("%s: reusing the finished stage in %s", stage, folder)
        return {**record["stats"], "resumed_from": str(folder)}

    def store(self, stage: str, identity: dict, source: Path, files: list[str], stats: dict) -> None:
        with atomic_dir(self.root / stage, overwrite=True) as tmp:
            for name in files:
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if (source / name).is_dir() else shutil.copy2)(source / name, target)
            write_json(tmp / "stage.json", {"identity": identity, "stats": stats})

    def checkpoint(self, stage: str) -> Path:
        return self.root / f"{stage}.checkpoint.safetensors"


# stage -> (files it writes, the stage-statistics entries it owns, the config sections that shape it)
REUSABLE = {
    "classifier": ((CLASSIFIER,), ("classifier",), ("classifier",)),
    "clip": (("clip",), ("clip", "clip_tune"), ("clip",)),
    "gan": ((GENERATOR,), ("gan",), ("gan",)),
}


def _plain(value):
    """A config dict as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _earlier_world(root: Path, option: str, hint: str = "") -> dict:
    """The manifest of an earlier MiniFaces world folder given to ``option``; ValueError unless it is intact."""
    problems = verify_manifest(root)
    if problems:
        raise ValueError(
            f"{option} {root}: not an intact MiniFaces world folder ({problems[0]}); pass a folder written by "
            f"`erasekit world train minifaces`{hint}"
        )
    old = read_manifest(root)
    if old.get("world") != "minifaces":
        raise ValueError(f"{option} {root}: a {old.get('world')!r} world folder, not a MiniFaces one")
    return old


def reusable_stages(world: str | os.PathLike, cfg: RecipeConfig, seed: int, excluded: list[str]) -> dict:
    """The stages of an earlier MiniFaces world folder that this run may copy instead of training.

    A stage is reusable when the folder's files match its manifest and it was made by this recipe version, with the
    same seed, quick setting and number of training faces, the same exclusions (except the classifier, which always
    sees every face) and the same stage config. The CLIP's tune must match too, unless the old CLIP was never tuned:
    it is then copied and tuned here (``"tuned": False``). The stages do not read each other, so any subset may be
    copied: a run with only ``gan.steps`` changed copies the classifier and the CLIP and trains the generator.
    Returns ``{stage: {"dir": Path, "created": ..., "stats": {...}, "metrics": {...}}}``.

    Raises:
        ValueError: the folder is not an intact MiniFaces world folder.
    """
    root = Path(world)
    old = _earlier_world(root, "--reuse", ", or leave --reuse out")
    old_cfg = old.get("config", {})
    same_data = (
        old.get("recipe") == RECIPE
        and old.get("seed") == seed
        and bool(old.get("quick")) == cfg.quick
        and old_cfg.get("train_images") == cfg.train_images
    )
    found = {}
    for stage, (_, stat_keys, sections) in REUSABLE.items():
        same_exclusions = stage == "classifier" or sorted(old.get("exclude", [])) == sorted(excluded)
        same_config = all(old_cfg.get(k) == _plain(asdict(getattr(cfg, k))) for k in sections)
        if not (same_data and same_exclusions and same_config):
            continue
        if stage == "gan" and "continued_from" in old.get("stages", {}).get("gan", {}):
            continue  # its config's steps are only the last of several runs: not what a from-scratch run trains
        entry = {"dir": root, "created": old.get("created"), "metrics": {}}
        if stage == "clip":
            old_tune, tuned = old_cfg.get("clip_tune"), bool(old_cfg.get("clip_tune", {}).get("steps"))
            if tuned and old_tune != _plain(asdict(cfg.clip_tune)):
                continue  # a differently tuned CLIP cannot be untuned
            entry["tuned"] = tuned
            stat_keys = stat_keys if tuned else ("clip",)
            if tuned and "clip_before_tune" in old.get("metrics", {}):
                entry["metrics"]["clip_before_tune"] = old["metrics"]["clip_before_tune"]
        entry["stats"] = {k: old["stages"][k] for k in stat_keys if k in old.get("stages", {})}
        found[stage] = entry
    logger.info("reusing %s from %s", ", ".join(found) or "no stage", root)
    return found


def generator_to_continue(world: str | os.PathLike, cfg: RecipeConfig, excluded: list[str]) -> dict:
    """The generator of an earlier MiniFaces world folder, checked for a warm start of this run's generator stage.

    It must be intact (files match the manifest), trained with the same exclusions (a generator that never drew
    glasses does not become the with-glasses world's by training on) and have the architecture ``cfg.gan`` builds.
    Returns ``{"generator": Generator, "entry": {"world", "created", "generator_sha256", "steps"}}`` where
    ``steps`` counts every step behind those weights (earlier warm starts included).

    Raises:
        ValueError: any of the above does not hold; the message says which and how to fix it.
    """
    from erasekit.models.stylegan import load_generator

    root = Path(world)
    old = _earlier_world(root, "--gan-from")
    if sorted(old.get("exclude", [])) != sorted(excluded):
        raise ValueError(
            f"--gan-from {root}: its generator was trained without {old.get('exclude', [])}, this run excludes "
            f"{excluded}; continue a generator of the same exclusions, or train this one from scratch"
        )
    G = load_generator(root / GENERATOR)
    detail = config_differences(cfg.gan.generator_config(), G.config)
    if detail:
        raise ValueError(
            f"--gan-from {root}: its generator has another architecture ({detail}); continue it with the settings "
            "it was trained with"
        )
    gan = old.get("stages", {}).get("gan", {})
    return {
        "generator": G,
        "entry": {
            "world": str(root),
            "created": old.get("created"),
            "generator_sha256": old["files"][GENERATOR]["sha256"],
            "steps": int(gan.get("total_steps", gan.get("steps", 0))),
        },
    }


def _copy_stage(stage: str, reused: dict, tmp: Path, stages: dict) -> None:
    copy_stage(REUSABLE[stage][0], reused[stage], tmp, stages)
    logger.info("%s: copied from %s", stage, reused[stage]["dir"])


def _train_into(
    tmp: Path,
    cfg: RecipeConfig,
    seed: int,
    excluded: list[str],
    device: torch.device,
    cache: StageCache | None,
    reused: dict | None = None,
    init: dict | None = None,
) -> dict:
    from erasekit.models.stylegan import save_generator
    from erasekit.models.tokenizer import clip_tokenizer

    reused = reused or {}
    stages, metrics, clock = {}, {}, Stopwatch(device)
    train = render_bank(cfg.train_images, seed, "train", "rendering train faces").to(device)
    heldout = render_bank(cfg.heldout_images, seed, "heldout", "rendering held-out faces").to(device)
    world = train.without(excluded)
    stages["render"] = {"seconds": clock.seconds(), "train_images": len(train), "heldout_images": len(heldout)}
    base = {"recipe": RECIPE, "seed": seed, "train_images": cfg.train_images, "quick": cfg.quick}

    def stage(name: str, identity: dict, files: list[str], run) -> dict:
        identity = {**base, **identity}
        stats = cache.restore(name, identity, tmp, files) if cache else None
        if stats is None:
            stats = run()
            if cache:
                cache.store(name, identity, tmp, files, stats)
        return stats

    def classifier_stage() -> dict:
        classifier, stats = train_attribute_classifier(train, cfg.classifier, seed, device)
        classifier.save(tmp / CLASSIFIER)
        return stats

    if "classifier" in reused:
        _copy_stage("classifier", reused, tmp, stages)
    else:
        identity = {"config": asdict(cfg.classifier)}
        stages["classifier"] = stage("classifier", identity, [CLASSIFIER], classifier_stage)
    metrics["classifier"] = evaluate_classifier(load_attribute_classifier(tmp / CLASSIFIER, device), heldout, device)
    tokenizer = clip_tokenizer()

    def clip_stage() -> dict:
        clip, stats = train_face_clip(world, tokenizer, cfg.clip, seed, device)
        _save_clip(clip, tokenizer, tmp / "clip")
        return stats

    if "clip" in reused:
        _copy_stage("clip", reused, tmp, stages)
        metrics.update(reused["clip"]["metrics"])
    else:
        identity = {"config": asdict(cfg.clip), "exclude": excluded}
        stages["clip"] = stage("clip", identity, ["clip"], clip_stage)
    metrics["clip"] = zero_shot(_reload_clip(tmp / "clip", device), tokenizer, heldout.without(excluded))

    def clip_tune_stage() -> dict:
        clip = _reload_clip(tmp / "clip", device)  # the saved fp16 weights: a resumed run tunes the same start
        stats = tune_face_clip(clip, world, tokenizer, cfg.clip, cfg.clip_tune, seed, device, excluded)
        shutil.rmtree(tmp / "clip")
        _save_clip(clip, tokenizer, tmp / "clip")
        return stats

    if cfg.clip_tune.steps and not reused.get("clip", {}).get("tuned"):
        identity = {"config": asdict(cfg.clip), "tune": asdict(cfg.clip_tune), "exclude": excluded}
        stages["clip_tune"] = stage("clip_tune", identity, ["clip"], clip_tune_stage)
        metrics["clip_before_tune"] = metrics["clip"]
        metrics["clip"] = zero_shot(_reload_clip(tmp / "clip", device), tokenizer, heldout.without(excluded))

    def gan_stage() -> dict:
        checkpoint = cache.checkpoint("gan") if cache else None
        G, stats = train_gan(
            world, cfg.gan, seed, device, excluded, checkpoint=checkpoint, init=init and init["generator"]
        )
        save_generator(copy.deepcopy(G).cpu(), tmp / GENERATOR, dtype=torch.float16)
        if init is not None:
            stats["continued_from"] = init["entry"]
            stats["total_steps"] = init["entry"]["steps"] + cfg.gan.steps
        return stats

    if "gan" in reused:
        _copy_stage("gan", reused, tmp, stages)
    else:
        identity = {"config": asdict(cfg.gan), "exclude": excluded}
        if init is not None:
            identity["continued_from"] = init["entry"]["generator_sha256"]
        stages["gan"] = stage("gan", identity, [GENERATOR], gan_stage)
        if cache:
            cache.checkpoint("gan").unlink(missing_ok=True)  # the finished stage holds the generator now
    clock = Stopwatch(device)
    metrics["generator"] = _check_generator(tmp, cfg, world, heldout.without(excluded), device)
    stages["check"] = {"seconds": clock.seconds(), "samples": cfg.check_samples}
    manifest = _manifest(cfg, seed, excluded, device, stages, metrics)
    manifest["reused"] = [
        key for stage in reused for key in REUSABLE[stage][1] if "reused_from" in stages.get(key, {})
    ]
    return manifest


def _save_clip(clip, tokenizer, path: Path) -> None:
    """Save CLIP in fp16 with a processor for 64×64 faces; the config says float32 so it loads for fp32 compute."""
    from transformers import CLIPProcessor

    from ..minicanvas.train_clip import image_processor

    copy.deepcopy(clip).to(device="cpu", dtype=torch.float16).save_pretrained(path, safe_serialization=True)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    config["dtype"] = "float32"
    write_json(path / "config.json", config)
    CLIPProcessor(image_processor=image_processor(), tokenizer=tokenizer).save_pretrained(path)


def _reload_clip(path: Path, device: torch.device):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()


def _check_generator(tmp: Path, cfg: RecipeConfig, world: FaceBank, heldout: FaceBank, device) -> dict:
    """Reload the saved generator, classify ``check_samples`` samples, compare with the data, CLIP-space FID."""
    from transformers import CLIPProcessor

    from erasekit.eval.features import CLIPImageFeatures
    from erasekit.eval.gan import attribute_rates, clip_fid
    from erasekit.images import grid, save_image
    from erasekit.models import load_model

    handle = load_model(str(tmp / GENERATOR), device=device)
    seeds = list(range(cfg.check_samples))
    samples = torch.cat([handle.generate(seeds[i : i + 256]).cpu() for i in range(0, len(seeds), 256)])
    save_image(grid(samples[:64], 8), tmp / "samples.png")
    rates = attribute_rates(load_attribute_classifier(tmp / CLASSIFIER, device).indicators(samples))
    data = world.frequencies()
    diff = {k: round(100 * abs(rates[k] - data[k]), 2) for k in data}
    clip = _reload_clip(tmp / "clip", torch.device("cpu"))
    extractor = CLIPImageFeatures(clip, CLIPProcessor.from_pretrained(tmp / "clip", local_files_only=True))
    real = heldout.floats(torch.arange(min(len(heldout), len(samples)), device=heldout.images.device)).cpu()
    return {
        "samples": len(samples),
        "sample_frequencies": {k: round(v, 4) for k, v in rates.items()},
        "data_frequencies": data,
        "frequency_difference_points": diff,
        "max_frequency_difference_points": max(diff.values()),
        "fid_clip": round(clip_fid(real, samples, extractor), 4),
        "fid_features": extractor.name,
        "fid_reference_images": len(real),
    }


def _manifest(cfg: RecipeConfig, seed: int, excluded: list[str], device, stages: dict, metrics: dict) -> dict:
    import transformers

    from erasekit import __version__

    from ...minifaces.data import ATTRIBUTES, HAIR_COLOURS, PROBABILITIES

    return {
        "world": "minifaces",
        "recipe": RECIPE,
        "seed": seed,
        "exclude": excluded,
        "quick": cfg.quick,
        "attributes": list(ATTRIBUTES),
        "hair_colours": list(HAIR_COLOURS),
        "probabilities": PROBABILITIES,
        "sampling": {"truncation_psi": 1.0, "noise_mode": "const", "seeds": f"0..{cfg.check_samples - 1}"},
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "erasekit": __version__,
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stages": stages,
        "metrics": metrics,
        "config": cfg.to_dict(),
    }
