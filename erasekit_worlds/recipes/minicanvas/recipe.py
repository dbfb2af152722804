"""The MiniCanvas training recipe: every model of the world, from scratch, deterministic from one seed.

Stages (in order): render the training and held-out images; the style and object classifiers (the evaluator, always
trained on every class); CLIP; the autoencoder; VAE latents; the UNet; then the pipeline is assembled, everything is
saved as fp16 safetensors, reloaded and measured, and ``manifest.json`` records files, timings and metrics.

Every stage after the first trains against what the earlier stages *ship*: the UNet reads the saved (fp16) text
tower and VAE latents, reloaded, so the shipped parts fit each other exactly. ``reuse=DIR`` copies the classifier,
CLIP, VAE and UNet stages from an earlier world folder whose settings for them match (same seed, exclusions, data
and stage config) instead of retraining them (:mod:`erasekit_worlds.recipes.framework`); the result is the same as a
from-scratch run, and the manifest says which stages were copied and what the whole recipe would have cost.

``work=DIR`` keeps each finished stage (classifiers, CLIP and its tune, VAE, UNet) and the UNet's training
checkpoints, so an interrupted run picks up where it stopped, with the same result as an uninterrupted run.

``exclude=["style:Ink"]`` trains the gold standard of unlearning, the world *retrained without the concept*: the
concept's images never reach CLIP, the autoencoder or the UNet (the classifiers still know it, since they judge).
``exclude_from=["unet"]`` leaves the concept out of the UNet's data only, UnlearnCanvas's setting (its gold standard
fine-tunes only the UNet, on top of a text encoder and VAE that saw everything); with ``reuse`` the full world's CLIP
and VAE are then copied, and only the UNet is retrained.

Example:
    >>> from erasekit_worlds.recipes.minicanvas.recipe import train_world
    >>> manifest = train_world("worlds/no_ink", exclude=["style:Ink"], seed=0, work="worlds/no_ink.work")
    >>> manifest = train_world("worlds/no_ink_unet", exclude=["style:Ink"], exclude_from=["unet"],
    ...                        reuse="erasekit_worlds/minicanvas/weights")
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field, replace

import torch

from ...minicanvas.data import OBJECTS, STYLES, parse_exclude
from ...minicanvas.manifest import verify_manifest
from .. import framework
from ..clip import reload_clip, save_clip, text_encoder_from_clip
from ..framework import Stage, WorldBuild, WorldRecipe, check_seed, describe, half, plain, write_world
from ..training import Stopwatch, resolve_device
from .banks import ImageBank, render_bank
from .pipeline import check_pipeline, reload_classifiers, reload_unet, reload_vae, save_pipeline
from .train_classifiers import ClassifierTrainConfig, evaluate_classifiers, train_classifier
from .train_clip import ClipTrainConfig, ClipTuneConfig, train_clip, tune_clip_image_side, zero_shot
from .train_unet import UnetTrainConfig, train_unet
from .train_vae import VaeTrainConfig, encode_bank, train_vae

RECIPE = "minicanvas-v3"  # v2: offset noise in the UNet stage; later stages read the saved fp16 parts. v3: the
# CLIP stage ends by tuning the image side against the frozen text tower (the pipeline is unchanged)
EXCLUDABLE = ("clip", "vae", "unet")  # the stages an exclusion can apply to


@dataclass
class RecipeConfig:
    """Everything the recipe does, with its defaults; :func:`quick_config` shrinks the step counts for smoke tests."""

    train_per_pair: int = 64  # training images per (style, object) pair: 7,040 images, ~86 MB as uint8
    heldout_per_pair: int = 8  # held-out images per pair for the measurements
    classifier: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    clip: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    clip_tune: ClipTuneConfig = field(default_factory=ClipTuneConfig)
    vae: VaeTrainConfig = field(default_factory=VaeTrainConfig)
    unet: UnetTrainConfig = field(default_factory=UnetTrainConfig)
    sample_steps: int = 25  # the pipeline's default sampler steps (DPM-Solver++ 2M)
    guidance: float = 7.5  # the world's default classifier-free guidance scale
    check_seeds: int = 1  # seeds per pair in the end-of-recipe fidelity check (benchmarks use more)
    check_classes: int = 0  # 0: the check covers every pair; N: only the first N styles x first N objects (the
    # fidelity grid and the VAE's held-out reconstructions)
    quick: bool = False  # a seconds-long smoke run: the models are untrained and the metrics meaningless

    def to_dict(self) -> dict:
        """The config as a plain dict (the manifest's ``config``)."""
        return asdict(self)


def quick_config() -> RecipeConfig:
    """The same architectures with tiny data and a few steps per stage (seconds on a CPU), for tests."""
    cfg = RecipeConfig(train_per_pair=1, heldout_per_pair=1, sample_steps=1, check_classes=2, quick=True)
    cfg.classifier = replace(cfg.classifier, steps=2, batch_size=16, warmup=1)
    cfg.clip = replace(cfg.clip, steps=2, styles_per_batch=2, warmup=1)
    cfg.clip_tune = replace(cfg.clip_tune, steps=2, warmup=1)
    cfg.vae = replace(cfg.vae, steps=2, full_size_steps=1, batch_size=4, warmup=1)
    cfg.unet = replace(cfg.unet, steps=2, batch_size=4, warmup=1)
    return cfg


def check_exclude(exclude) -> tuple[list[str], list[str], list[str]]:
    """Validate ``exclude`` entries; returns ``(kept styles, kept objects, canonical entries)``.

    Raises:
        ValueError: a malformed or unknown entry, or an exclusion that leaves no style or no object.
    """
    drop_styles, drop_objects = parse_exclude(exclude)
    styles = [s for s in STYLES if s not in drop_styles]
    objects = [o for o in OBJECTS if o not in drop_objects]
    if not styles or not objects:
        raise ValueError("--exclude removes every style or every object; keep at least one of each")
    canonical = [f"style:{s}" for s in STYLES if s in drop_styles] + [
        f"object:{o}" for o in OBJECTS if o in drop_objects
    ]
    return styles, objects, canonical


def check_exclude_from(exclude_from) -> list[str]:
    """Validate ``exclude_from`` (default: every stage); returns the stages in recipe order.

    Raises:
        ValueError: an unknown stage, or a list without the UNet (its generator would have seen the concept).
    """
    stages = list(EXCLUDABLE if exclude_from is None else exclude_from)
    unknown = [s for s in stages if s not in EXCLUDABLE]
    if unknown:
        raise ValueError(f"--exclude-from takes stages among {', '.join(EXCLUDABLE)}; got {', '.join(unknown)}")
    if "unet" not in stages:
        raise ValueError("--exclude-from must include unet: a world whose UNet saw the concept is no gold standard")
    return [s for s in EXCLUDABLE if s in stages]


def stage_exclusions(excluded: list[str], exclude_from) -> dict[str, list[str]]:
    """What each excludable stage leaves out: ``excluded`` for the stages in ``exclude_from``, nothing elsewhere."""
    return {stage: sorted(excluded) if stage in exclude_from else [] for stage in EXCLUDABLE}


CLASSIFIERS = Stage(
    "classifiers",
    files=("classifiers",),
    entries=("style_classifier", "object_classifier"),
    sections=("classifier",),
    excludable=False,
)
CLIP = Stage("clip", files=("clip",), tail="clip_tune")
CLIP_TUNE = Stage("clip_tune", files=("clip",))  # the CLIP's tail: done here unless copied with the CLIP
VAE = Stage("vae", files=("pipeline/vae",))
UNET = Stage("unet", files=("pipeline/unet",), entries=("latents", "unet"), inputs=("clip", "vae"))  # the fp16 UNet
# as it ships; the pipeline saved later rewrites it with the same bytes (the tune leaves the text tower alone, so a
# tuned and an untuned CLIP give the same UNet)
WORLD = WorldRecipe(
    world="minicanvas",
    title="MiniCanvas",
    version=RECIPE,
    stages=(CLASSIFIERS, CLIP, VAE, UNET),
    data=("train_per_pair", "heldout_per_pair"),
    verify=verify_manifest,
    exclusions=lambda m: stage_exclusions(m.get("exclude", []), m.get("exclude_from", EXCLUDABLE)),
    packages=("diffusers", "transformers"),
)


def train_world(
    out: str | os.PathLike,
    exclude=None,
    seed: int = 0,
    device: str | torch.device = "auto",
    quick: bool = False,
    overwrite: bool = False,
    config: RecipeConfig | None = None,
    reuse: str | os.PathLike | None = None,
    exclude_from=None,
    work: str | os.PathLike | None = None,
) -> dict:
    """Train every model of the MiniCanvas world from scratch and write the world folder ``out`` atomically.

    Args:
        out: the world folder to create (``pipeline/``, ``clip/``, ``classifiers/``, ``manifest.json``).
        exclude: entries like ``"style:Ink"`` / ``"object:apple"`` left out of CLIP, VAE and UNet training.
        seed: the one seed everything follows from (same seed and device -> same weights).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        quick: tiny step counts (:func:`quick_config`) for smoke tests; ignored when ``config`` is given.
        overwrite: replace an existing non-empty ``out``.
        config: a full :class:`RecipeConfig` (default: the recipe's defaults).
        reuse: an earlier world folder; its classifier, CLIP, VAE and UNet stages are copied where their settings
            and inputs match this run's (see :func:`reusable_stages`), the rest is trained.
        exclude_from: the stages whose training data ``exclude`` applies to, among ``"clip"``, ``"vae"``,
            ``"unet"`` (default all three; the UNet is required).
        work: a folder that keeps each finished stage (classifiers, CLIP, its tune, VAE, UNet) and the UNet's
            training checkpoints (every 500 steps); running again with the same ``work`` (after an interruption)
            picks up where the last run stopped, with the same result as an uninterrupted run. Stages trained with
            other settings are refused rather than reused; delete the folder to start over.

    Returns:
        The manifest (also written to ``out/manifest.json``).
    """
    styles, objects, excluded = check_exclude(exclude)
    exclude_from = check_exclude_from(exclude_from)
    check_seed(seed)
    device = resolve_device(device)
    cfg = config or (quick_config() if quick else RecipeConfig())
    reused = reusable_stages(reuse, cfg, seed, excluded, exclude_from) if reuse is not None else {}
    identity = {"recipe": RECIPE, "seed": seed, "quick": cfg.quick, **{key: getattr(cfg, key) for key in WORLD.data}}

    def train(build: WorldBuild) -> dict:
        return _train_into(build, cfg, seed, (styles, objects), (excluded, exclude_from), device)

    return write_world(WORLD, out, train, overwrite=overwrite, reused=reused, work=work, identity=identity)


def reusable_stages(
    world: str | os.PathLike, cfg: RecipeConfig, seed: int, excluded: list[str], exclude_from=EXCLUDABLE
) -> dict:
    """The stages of an earlier world folder that this run may copy instead of training.

    A stage is reusable when the folder's files match its manifest and it was trained (quick or not, like this run)
    with the same seed, the same exclusions for that stage (the classifiers ignore exclusions; see
    :func:`stage_exclusions`), the same amount of training data and the same stage config. The CLIP stage's
    tuning (``clip_tune``) must match too, unless the old CLIP was never tuned: then it is copied and tuned here
    (``"tail_done": False``). The UNet is reusable only with the CLIP and the VAE, its inputs.
    Returns ``{stage: {"dir": Path, "created": ..., "stats": {...}, ...}}`` (see
    :func:`erasekit_worlds.recipes.framework.reusable_stages`).

    Raises:
        ValueError: the folder is not an intact MiniCanvas world folder.
    """
    run = {
        "seed": seed,
        "quick": cfg.quick,
        "config": plain(cfg.to_dict()),
        "exclude": excluded,
        "exclude_from": list(exclude_from),
    }
    return framework.reusable_stages(WORLD, world, run)


def _stage_identities(cfg: RecipeConfig, exclusions: dict[str, list[str]]) -> dict[str, dict]:
    """What each stage kept in a work folder must have been trained with, besides the run's seed, data and recipe
    version: its config section, its exclusions and its inputs' settings (a UNet trained on another CLIP or VAE is
    another UNet, even when the stages before it in the folder were deleted and trained again)."""
    config = plain(cfg.to_dict())
    own = {
        "classifiers": {"config": config["classifier"]},
        "clip": {"config": config["clip"], "exclude": exclusions["clip"]},
        "vae": {"config": config["vae"], "exclude": exclusions["vae"]},
    }
    own["clip_tune"] = {**own["clip"], "tune": config["clip_tune"]}
    own["unet"] = {"config": config["unet"], "exclude": exclusions["unet"]}
    own["unet"]["inputs"] = {name: own[name] for name in UNET.inputs}
    return own


def _train_into(build: WorldBuild, cfg: RecipeConfig, seed: int, classes, exclusion, device) -> dict:
    """Run every stage into ``build``'s folder; returns the manifest's description."""
    (styles, objects), (excluded, exclude_from) = classes, exclusion
    identities = _stage_identities(cfg, stage_exclusions(excluded, exclude_from))
    clock = Stopwatch(device)
    train = render_bank(cfg.train_per_pair, seed, "train", "rendering train").to(device)
    heldout = render_bank(cfg.heldout_per_pair, seed, "heldout", "rendering held-out").to(device)
    build.stages["render"] = {"seconds": clock.seconds(), "train_images": len(train), "heldout_images": len(heldout)}
    build.run(CLASSIFIERS, lambda: _train_classifiers(build, train, cfg, seed, device), identities["classifiers"])
    world = train.subset(styles, objects)
    full = train.subset(list(STYLES), list(OBJECTS))  # the same data the full world's stages learn from
    data = {stage: world if stage in exclude_from else full for stage in EXCLUDABLE}
    build.metrics["classifiers"] = evaluate_classifiers(reload_classifiers(build.tmp, device), heldout, device)
    tokenizer = _tokenizer()
    clip = _clip_stages(build, (data["clip"], heldout), tokenizer, classes, cfg, seed, device, identities)
    vae = _vae_stage(build, data["vae"], cfg, seed, device, identities["vae"])
    text_encoder = text_encoder_from_clip(clip)
    unet = _unet_stage(build, world, (vae, text_encoder, tokenizer), cfg, seed, device, identities["unet"])
    save_pipeline(build.tmp / "pipeline", vae, text_encoder, _tokenizer(), unet)  # a fresh tokenizer: the same files
    # whether or not this run saved a CLIPProcessor (which tags the tokenizer it is given)
    clock = Stopwatch(device)
    vae_metrics, fidelity = check_pipeline(build.tmp, cfg, heldout.subset(styles, objects), styles, objects)
    build.metrics["vae"], build.metrics["fidelity"] = vae_metrics, fidelity
    build.stages["check"] = {"seconds": clock.seconds(), "images": fidelity["images"]}
    facts = {
        "styles": styles,
        "objects": objects,
        "classifier_labels": {"style": list(STYLES), "object": list(OBJECTS)},
    }
    sampling = {"scheduler": "DPMSolverMultistepScheduler", "steps": cfg.sample_steps, "guidance": cfg.guidance}
    manifest = describe(build, cfg, seed, excluded, device, facts, sampling)
    manifest["exclude_from"] = list(exclude_from)
    return manifest


def _tokenizer():
    from erasekit.models.tokenizer import clip_tokenizer

    return clip_tokenizer()


def _train_classifiers(build: WorldBuild, bank: ImageBank, cfg: RecipeConfig, seed: int, device) -> dict:
    """Both classifiers, on every image (the judge knows every class); their statistics by entry."""
    stats = {}
    for kind in ("style", "object"):
        model, stats[f"{kind}_classifier"] = train_classifier(kind, bank, cfg.classifier, seed, device)
        model.save(build.tmp / "classifiers" / f"{kind}.safetensors")
    return stats


def _clip_stages(build: WorldBuild, banks, tokenizer, classes, cfg: RecipeConfig, seed: int, device, identities):
    """The CLIP and its tune (each trained, or copied from the earlier world) on the first of ``banks``, measured on
    the second (held out); returns the saved CLIP, reloaded."""
    (bank, heldout), path = banks, build.tmp / "clip"

    def train() -> dict:
        clip, stats = train_clip(bank, tokenizer, cfg.clip, seed, device)
        save_clip(clip, tokenizer, path)
        return stats

    build.run(CLIP, train, identities["clip"])
    clip = reload_clip(path, device)  # later stages read what ships (fp16 weights, computed in fp32)

    def tune() -> dict:
        stats = tune_clip_image_side(clip, bank, tokenizer, cfg.clip, cfg.clip_tune, seed, device)
        shutil.rmtree(path)
        save_clip(clip, tokenizer, path)
        return stats

    if cfg.clip_tune.steps > 0 and not build.tail_copied("clip"):
        build.metrics["clip_before_tune"] = zero_shot(clip, tokenizer, heldout, *classes)
        build.run(CLIP_TUNE, tune, identities["clip_tune"])
        clip = reload_clip(path, device)
    build.metrics["clip"] = zero_shot(clip, tokenizer, heldout, *classes)
    return clip


def _vae_stage(build: WorldBuild, bank: ImageBank, cfg: RecipeConfig, seed: int, device, identity: dict):
    """The autoencoder (trained, or copied from the earlier world); returns the saved one, reloaded."""
    path = build.tmp / "pipeline" / "vae"

    def train() -> dict:
        vae, stats = train_vae(bank, cfg.vae, seed, device)
        half(vae).save_pretrained(path, safe_serialization=True)
        return stats

    build.run(VAE, train, identity)
    return reload_vae(path, device)


def _unet_stage(build: WorldBuild, world: ImageBank, parts, cfg: RecipeConfig, seed: int, device, identity: dict):
    """The VAE latents and the UNet (trained on ``world`` with ``parts``: the VAE, the text encoder and the tokenizer;
    or copied from the earlier world, or restored from the work folder, where its training checkpoint lives too);
    returns the UNet as it ships (fp16 weights, computed in fp32), whichever way it came."""
    (vae, text_encoder, tokenizer), path = parts, build.tmp / "pipeline" / "unet"
    checkpoint = build.cache.checkpoint(UNET.name) if build.cache else None

    def train() -> dict:
        clock = Stopwatch(device)
        means, stds = encode_bank(vae, world)
        latents = {"seconds": clock.seconds(), "images": len(world)}
        unet, stats = train_unet(
            (means, stds, vae.config.scaling_factor),
            (world.style_ids, world.object_ids),
            text_encoder,
            tokenizer,
            cfg.unet,
            seed,
            device,
            checkpoint=checkpoint,
            identity={**build.identity, **identity},
        )
        half(unet).save_pretrained(path, safe_serialization=True)
        return {"latents": latents, "unet": stats}

    if not build.run(UNET, train, identity) and checkpoint is not None:
        checkpoint.unlink(missing_ok=True)  # the finished stage holds the UNet now
    return reload_unet(path, device)  # fp16 and back: the pipeline saved from it has the trained UNet's bytes
