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
CLIP with its tune, the generator; see :func:`reusable_stages` and :mod:`erasekit_worlds.recipes.framework`), e.g.
to retrain only the generator with more steps;
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
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ...minifaces.classifier import load_attribute_classifier
from ...minifaces.data import (
    ATTRIBUTES,
    HAIR_COLOURS,
    INDICATORS,
    PROBABILITIES,
    FaceBank,
    render_bank,
    resolve_indicator,
)
from ...minifaces.manifest import CLASSIFIER, GENERATOR, verify_manifest
from .. import framework
from ..clip import reload_clip, save_clip
from ..framework import Stage, WorldBuild, WorldRecipe, check_seed, describe, earlier_world, plain, write_world
from ..training import Stopwatch, resolve_device
from .gan_checkpoint import config_differences
from .gan_config import GanTrainConfig
from .train_classifier import ClassifierTrainConfig, evaluate_classifier, train_attribute_classifier
from .train_clip import FaceClipTrainConfig, FaceClipTuneConfig, train_face_clip, tune_face_clip, zero_shot
from .train_gan import train_gan

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
        """The config as a plain dict (the manifest's ``config``)."""
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


def _not_continued(old: dict) -> bool:
    """Whether an earlier world's generator was trained from scratch: a continued one's config says only the steps
    of its last run, not what a from-scratch run trains."""
    return "continued_from" not in old.get("stages", {}).get("gan", {})


CLASSIFIER_STAGE = Stage("classifier", files=(CLASSIFIER,), excludable=False)  # the judge sees every face
CLIP_STAGE = Stage("clip", files=("clip",), tail="clip_tune", tail_metrics=("clip_before_tune",))
CLIP_TUNE = Stage("clip_tune", files=("clip",))  # the CLIP's tail: done here unless copied with the CLIP
GAN_STAGE = Stage("gan", files=(GENERATOR,), accepts=_not_continued)
WORLD = WorldRecipe(
    world="minifaces",
    title="MiniFaces",
    version=RECIPE,
    stages=(CLASSIFIER_STAGE, CLIP_STAGE, GAN_STAGE),  # they do not read each other: any subset may be copied
    data=("train_images",),
    verify=verify_manifest,
    same_version=True,
)


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
    check_seed(seed)
    device = resolve_device(device)
    cfg = config or (quick_config() if quick else RecipeConfig())
    reused = reusable_stages(reuse, cfg, seed, excluded) if reuse is not None else {}
    init = generator_to_continue(gan_from, cfg, excluded) if gan_from is not None else None
    if init is not None:
        reused.pop("gan", None)  # continued, not copied
    identity = {"recipe": RECIPE, "seed": seed, "train_images": cfg.train_images, "quick": cfg.quick}

    def train(build: WorldBuild) -> dict:
        return _train_into(build, cfg, seed, excluded, device, init)

    return write_world(WORLD, out, train, overwrite=overwrite, reused=reused, work=work, identity=identity)


def reusable_stages(world: str | os.PathLike, cfg: RecipeConfig, seed: int, excluded: list[str]) -> dict:
    """The stages of an earlier MiniFaces world folder that this run may copy instead of training.

    A stage is reusable when the folder's files match its manifest and it was made by this recipe version, with the
    same seed, quick setting and number of training faces, the same exclusions (except the classifier, which always
    sees every face) and the same stage config. The CLIP's tune must match too, unless the old CLIP was never tuned:
    it is then copied and tuned here (``"tail_done": False``). The stages do not read each other, so any subset may
    be copied: a run with only ``gan.steps`` changed copies the classifier and the CLIP and trains the generator.
    Returns ``{stage: {"dir": Path, "created": ..., "stats": {...}, "metrics": {...}}}`` (see
    :func:`erasekit_worlds.recipes.framework.reusable_stages`).

    Raises:
        ValueError: the folder is not an intact MiniFaces world folder.
    """
    run = {"seed": seed, "quick": cfg.quick, "config": plain(cfg.to_dict()), "exclude": excluded}
    return framework.reusable_stages(WORLD, world, run)


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
    old = earlier_world(WORLD, root, "--gan-from")
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


def _train_into(build: WorldBuild, cfg: RecipeConfig, seed: int, excluded: list[str], device, init) -> dict:
    """Run every stage into ``build``'s folder (``init``: the generator to continue); returns the manifest's
    description."""
    from erasekit.models.tokenizer import clip_tokenizer

    clock = Stopwatch(device)
    train = render_bank(cfg.train_images, seed, "train", "rendering train faces").to(device)
    heldout = render_bank(cfg.heldout_images, seed, "heldout", "rendering held-out faces").to(device)
    world = train.without(excluded)
    build.stages["render"] = {"seconds": clock.seconds(), "train_images": len(train), "heldout_images": len(heldout)}
    _classifier_stage(build, (train, heldout), cfg, seed, device)
    banks = (world, heldout.without(excluded))
    _clip_stages(build, banks, clip_tokenizer(), cfg, seed, device, excluded)
    _gan_stage(build, world, cfg, seed, device, excluded, init)
    clock = Stopwatch(device)
    build.metrics["generator"] = _check_generator(build.tmp, cfg, *banks, device)
    build.stages["check"] = {"seconds": clock.seconds(), "samples": cfg.check_samples}
    facts = {"attributes": list(ATTRIBUTES), "hair_colours": list(HAIR_COLOURS), "probabilities": PROBABILITIES}
    sampling = {"truncation_psi": 1.0, "noise_mode": "const", "seeds": f"0..{cfg.check_samples - 1}"}
    return describe(build, cfg, seed, excluded, device, facts, sampling)


def _classifier_stage(build: WorldBuild, banks, cfg: RecipeConfig, seed: int, device) -> None:
    """The attribute classifier, trained on the first of ``banks`` (every face) and measured on the second."""
    train, heldout = banks

    def run() -> dict:
        classifier, stats = train_attribute_classifier(train, cfg.classifier, seed, device)
        classifier.save(build.tmp / CLASSIFIER)
        return stats

    build.run(CLASSIFIER_STAGE, run, {"config": asdict(cfg.classifier)})
    judge = load_attribute_classifier(build.tmp / CLASSIFIER, device)
    build.metrics["classifier"] = evaluate_classifier(judge, heldout, device)


def _clip_stages(build: WorldBuild, banks, tokenizer, cfg: RecipeConfig, seed: int, device, excluded) -> None:
    """The CLIP and its tune on the first of ``banks``, each measured on the second (held out)."""
    (world, heldout), path = banks, build.tmp / "clip"

    def train() -> dict:
        clip, stats = train_face_clip(world, tokenizer, cfg.clip, seed, device)
        save_clip(clip, tokenizer, path)
        return stats

    def tune() -> dict:
        clip = reload_clip(path, device)  # the saved fp16 weights: a resumed run tunes the same start
        stats = tune_face_clip(clip, world, tokenizer, cfg.clip, cfg.clip_tune, seed, device, excluded)
        shutil.rmtree(path)
        save_clip(clip, tokenizer, path)
        return stats

    build.run(CLIP_STAGE, train, {"config": asdict(cfg.clip), "exclude": excluded})
    build.metrics["clip"] = zero_shot(reload_clip(path, device), tokenizer, heldout)
    if cfg.clip_tune.steps and not build.tail_copied("clip"):
        identity = {"config": asdict(cfg.clip), "tune": asdict(cfg.clip_tune), "exclude": excluded}
        build.run(CLIP_TUNE, tune, identity)
        build.metrics["clip_before_tune"] = build.metrics["clip"]
        build.metrics["clip"] = zero_shot(reload_clip(path, device), tokenizer, heldout)


def _gan_stage(build: WorldBuild, world: FaceBank, cfg: RecipeConfig, seed: int, device, excluded, init) -> None:
    """The generator, from scratch or continued from ``init``; its training checkpoint lives in the work folder."""
    from erasekit.models.stylegan import save_generator

    def train() -> dict:
        checkpoint = build.cache.checkpoint("gan") if build.cache else None
        G, stats = train_gan(
            world, cfg.gan, seed, device, excluded, checkpoint=checkpoint, init=init and init["generator"]
        )
        save_generator(copy.deepcopy(G).cpu(), build.tmp / GENERATOR, dtype=torch.float16)
        if init is not None:
            stats["continued_from"] = init["entry"]
            stats["total_steps"] = init["entry"]["steps"] + cfg.gan.steps
        return stats

    identity = {"config": asdict(cfg.gan), "exclude": excluded}
    if init is not None:
        identity["continued_from"] = init["entry"]["generator_sha256"]
    if not build.run(GAN_STAGE, train, identity) and build.cache:
        build.cache.checkpoint("gan").unlink(missing_ok=True)  # the finished stage holds the generator now


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
    clip = reload_clip(tmp / "clip", torch.device("cpu"))
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
