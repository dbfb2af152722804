"""The MiniCanvas training recipe: every model of the world, from scratch, deterministic from one seed.

Stages (in order): render the training and held-out images; the style and object classifiers (the evaluator, always
trained on every class); CLIP; the autoencoder; VAE latents; the UNet; then the pipeline is assembled, everything is
saved as fp16 safetensors, reloaded and measured, and ``manifest.json`` records files, timings and metrics.

Every stage after the first trains against what the earlier stages *ship*: the UNet reads the saved (fp16) text
tower and VAE latents, reloaded, so the shipped parts fit each other exactly. ``reuse=DIR`` copies the classifier,
CLIP and VAE stages from an earlier world folder whose settings for them match (same seed, exclusions, data and
stage config) instead of retraining them; the result is the same as a from-scratch run, and the manifest says
which stages were copied and what the whole recipe would have cost.

``exclude=["style:Ink"]`` trains the gold standard of unlearning, the world *retrained without the concept*: the
concept's images never reach CLIP, the autoencoder or the UNet (the classifiers still know it, since they judge).
``exclude_from=["unet"]`` leaves the concept out of the UNet's data only, UnlearnCanvas's setting (its gold standard
fine-tunes only the UNet, on top of a text encoder and VAE that saw everything); with ``reuse`` the full world's CLIP
and VAE are then copied, and only the UNet is retrained.

Example:
    >>> from erasekit_worlds.recipes.minicanvas.recipe import train_world
    >>> manifest = train_world("worlds/no_ink", exclude=["style:Ink"], seed=0)
    >>> manifest = train_world("worlds/no_ink_unet", exclude=["style:Ink"], exclude_from=["unet"],
    ...                        reuse="erasekit_worlds/minicanvas/weights")
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

from ...minicanvas.data import OBJECTS, STYLES, UNLEARNCANVAS_TEMPLATE, parse_exclude
from ...minicanvas.manifest import MANIFEST, copy_stage, file_table, read_manifest, verify_manifest
from .train_classifiers import ClassifierTrainConfig, evaluate_classifiers, train_classifier
from .train_clip import (
    ClipTrainConfig,
    ClipTuneConfig,
    image_processor,
    text_encoder_from_clip,
    train_clip,
    tune_clip_image_side,
    zero_shot,
)
from .train_unet import UnetTrainConfig, noise_schedulers, train_unet
from .train_vae import VaeTrainConfig, encode_bank, evaluate_vae, train_vae
from .training import ImageBank, Stopwatch, render_bank, resolve_device

logger = logging.getLogger(__name__)

RECIPE = "minicanvas-v3"  # v2: offset noise in the UNet stage; later stages read the saved fp16 parts. v3: the
# CLIP stage ends by tuning the image side against the frozen text tower (the pipeline is unchanged)


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
    check_classes: int = 0  # 0: the check samples every pair; N: only the first N styles x first N objects
    quick: bool = False  # a seconds-long smoke run: the models are untrained and the metrics meaningless

    def to_dict(self) -> dict:
        return asdict(self)


def quick_config() -> RecipeConfig:
    """The same architectures with tiny data and a few steps per stage (seconds on a CPU), for tests."""
    cfg = RecipeConfig(train_per_pair=1, heldout_per_pair=1, sample_steps=2, check_classes=2, quick=True)
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


EXCLUDABLE = ("clip", "vae", "unet")  # the stages an exclusion can apply to


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

    Returns:
        The manifest (also written to ``out/manifest.json``).
    """
    styles, objects, excluded = check_exclude(exclude)
    exclude_from = check_exclude_from(exclude_from)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    device = resolve_device(device)
    cfg = config or (quick_config() if quick else RecipeConfig())
    reused = reusable_stages(reuse, cfg, seed, excluded, exclude_from) if reuse is not None else {}
    started = time.perf_counter()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        manifest = _train_into(Path(tmp), cfg, seed, styles, objects, (excluded, exclude_from), device, reused)
        manifest["total_seconds"] = round(time.perf_counter() - started, 1)
        copied = sum(manifest["stages"][name].get("seconds", 0.0) for name in manifest["reused"])
        manifest["full_recipe_seconds"] = round(manifest["total_seconds"] + copied, 1)
        manifest["files"] = file_table(tmp)
        manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
        write_json(Path(tmp) / MANIFEST, manifest)
    logger.info("wrote the MiniCanvas world to %s (%.1f MB)", out, manifest["total_bytes"] / 1e6)
    return manifest


# stage name -> (files it writes, the stage-statistics entries it owns, the config section that shapes it)
REUSABLE = {
    "classifiers": (("classifiers",), ("style_classifier", "object_classifier"), "classifier"),
    "clip": (("clip",), ("clip", "clip_tune"), "clip"),
    "vae": (("pipeline/vae",), ("vae",), "vae"),
    "unet": ((), ("latents", "unet"), "unet"),  # read back by _train_into, saved with the rest of the pipeline
}


def _tuned(section) -> bool:
    """Whether a manifest's ``clip_tune`` section (absent before recipe v3) tuned the CLIP."""
    return bool(section) and section.get("steps", 0) > 0


def reusable_stages(
    world: str | os.PathLike, cfg: RecipeConfig, seed: int, excluded: list[str], exclude_from=EXCLUDABLE
) -> dict:
    """The stages of an earlier world folder that this run may copy instead of training.

    A stage is reusable when the folder's files match its manifest and it was trained (quick or not, like this run)
    with the same seed, the same exclusions for that stage (the classifiers ignore exclusions; see
    :func:`stage_exclusions`), the same amount of training data and the same stage config. The CLIP stage's
    tuning (``clip_tune``) must match too, unless the old CLIP was never tuned: then it is copied and tuned here
    (``"tuned": False``). The UNet is reusable only with the CLIP and the VAE, its inputs (the tuning leaves the text
    tower alone, so a tuned and an untuned CLIP give the same UNet).
    Returns ``{stage: {"dir": Path, "created": ..., "stats": {...}}}`` (the CLIP's entry also says ``"tuned"``).

    Raises:
        ValueError: the folder is not an intact world folder.
    """
    root = Path(world)
    problems = verify_manifest(root)
    if problems:
        raise ValueError(
            f"--reuse {root}: not an intact world folder ({problems[0]}); pass a folder written by `erasekit world "
            "train minicanvas`, or leave --reuse out"
        )
    old = read_manifest(root)
    old_cfg = old.get("config", {})
    same_data = (
        old.get("seed") == seed
        and bool(old.get("quick")) == cfg.quick
        and old_cfg.get("train_per_pair") == cfg.train_per_pair
        and old_cfg.get("heldout_per_pair") == cfg.heldout_per_pair
    )
    ours = stage_exclusions(excluded, exclude_from)
    theirs = stage_exclusions(old.get("exclude", []), old.get("exclude_from", EXCLUDABLE))
    found = {}
    for stage, (_, stat_keys, section) in REUSABLE.items():
        same_exclusions = stage == "classifiers" or ours[stage] == theirs[stage]
        if not (same_data and same_exclusions and old_cfg.get(section) == _plain(asdict(getattr(cfg, section)))):
            continue
        entry = {"dir": root, "created": old.get("created")}
        if stage == "clip":
            old_tune, our_tune = old_cfg.get("clip_tune"), _plain(asdict(cfg.clip_tune))
            if _tuned(old_tune) and old_tune != our_tune:
                continue  # a differently tuned CLIP cannot be untuned
            entry["tuned"] = _tuned(old_tune)
            stat_keys = stat_keys if entry["tuned"] else ("clip",)
        if stage == "unet" and not ("clip" in found and "vae" in found):
            continue
        entry["stats"] = {k: old["stages"][k] for k in stat_keys if k in old["stages"]}
        found[stage] = entry
    logger.info("reusing %s from %s", ", ".join(found) or "no stage", root)
    return found


def _plain(value):
    """A config dict as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _copy_stage(stage: str, reused: dict, tmp: Path, stages: dict) -> None:
    copy_stage(REUSABLE[stage][0], reused[stage], tmp, stages)


def _train_into(tmp: Path, cfg: RecipeConfig, seed: int, styles, objects, exclusion, device, reused: dict) -> dict:
    excluded, exclude_from = exclusion
    stages, metrics = {}, {}
    clock = Stopwatch(device)
    train = render_bank(cfg.train_per_pair, seed, "train", "rendering train").to(device)
    heldout = render_bank(cfg.heldout_per_pair, seed, "heldout", "rendering held-out").to(device)
    stages["render"] = {"seconds": clock.seconds(), "train_images": len(train), "heldout_images": len(heldout)}
    if "classifiers" in reused:
        _copy_stage("classifiers", reused, tmp, stages)
    else:
        for kind in ("style", "object"):
            model, stages[f"{kind}_classifier"] = train_classifier(kind, train, cfg.classifier, seed, device)
            model.save(tmp / "classifiers" / f"{kind}.safetensors")
    world = train.subset(styles, objects)
    full = train.subset(list(STYLES), list(OBJECTS))  # the same data the full world's stages learn from
    data = {stage: world if stage in exclude_from else full for stage in EXCLUDABLE}
    metrics["classifiers"] = evaluate_classifiers(_reload_classifiers(tmp, device), heldout, device)
    tokenizer = _tokenizer()
    if "clip" in reused:
        _copy_stage("clip", reused, tmp, stages)
    else:
        clip, stages["clip"] = train_clip(data["clip"], tokenizer, cfg.clip, seed, device)
        _save_clip(clip, tokenizer, tmp / "clip")
    clip = _reload_clip(tmp / "clip", device)  # later stages read what ships (fp16 weights, computed in fp32)
    if cfg.clip_tune.steps > 0 and not reused.get("clip", {}).get("tuned"):
        metrics["clip_before_tune"] = zero_shot(clip, tokenizer, heldout, styles, objects)
        stages["clip_tune"] = tune_clip_image_side(
            clip, data["clip"], tokenizer, cfg.clip, cfg.clip_tune, seed, device
        )
        shutil.rmtree(tmp / "clip")
        _save_clip(clip, tokenizer, tmp / "clip")
        clip = _reload_clip(tmp / "clip", device)
    metrics["clip"] = zero_shot(clip, tokenizer, heldout, styles, objects)
    if "vae" in reused:
        _copy_stage("vae", reused, tmp, stages)
    else:
        vae, stages["vae"] = train_vae(data["vae"], cfg.vae, seed, device)
        _half(vae).save_pretrained(tmp / "pipeline" / "vae", safe_serialization=True)
    vae = _reload_vae(tmp / "pipeline" / "vae", device)
    text_encoder = text_encoder_from_clip(clip)
    if "unet" in reused:
        _copy_stage("unet", reused, tmp, stages)
        unet = _reload_unet(reused["unet"]["dir"] / "pipeline" / "unet", device)
    else:
        clock = Stopwatch(device)
        means, stds = encode_bank(vae, world)
        stages["latents"] = {"seconds": clock.seconds(), "images": len(world)}
        latents = (means, stds, vae.config.scaling_factor)
        unet, stages["unet"] = train_unet(
            latents, (world.style_ids, world.object_ids), text_encoder, tokenizer, cfg.unet, seed, device
        )
    _save_pipeline(tmp / "pipeline", vae, text_encoder, _tokenizer(), unet)  # a fresh tokenizer: the same files
    # whether or not this run saved a CLIPProcessor (which tags the tokenizer it is given)
    clock = Stopwatch(device)
    metrics["vae"], metrics["fidelity"] = _check_pipeline(tmp, cfg, heldout.subset(styles, objects), styles, objects)
    stages["check"] = {"seconds": clock.seconds(), "images": metrics["fidelity"]["images"]}
    manifest = _manifest(cfg, seed, excluded, styles, objects, device, stages, metrics)
    manifest["exclude_from"] = list(exclude_from)
    manifest["reused"] = [
        key for stage in reused for key in REUSABLE[stage][1] if "reused_from" in stages.get(key, {})
    ]
    return manifest


def _tokenizer():
    from erasekit.models.tokenizer import clip_tokenizer

    return clip_tokenizer()


def _half(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module).to(device="cpu", dtype=torch.float16)


def _load_in_fp32(config_path: Path) -> None:
    """transformers loads a model in the dtype its config names; the weights are stored fp16 but erasekit computes
    in fp32 by default on CPU (as diffusers does), so the config says float32."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["dtype"] = "float32"
    write_json(config_path, config)


def _save_clip(clip, tokenizer, path: Path) -> None:
    from transformers import CLIPProcessor

    _half(clip).save_pretrained(path, safe_serialization=True)
    _load_in_fp32(path / "config.json")
    CLIPProcessor(image_processor=image_processor(), tokenizer=tokenizer).save_pretrained(path)


def _reload_clip(path: Path, device: torch.device):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()


def _reload_unet(path: Path, device: torch.device):
    from diffusers import UNet2DConditionModel

    loaded = UNet2DConditionModel.from_pretrained(path, local_files_only=True)
    unet = UNet2DConditionModel.from_config({k: v for k, v in loaded.config.items() if not k.startswith("_")})
    unet.load_state_dict(loaded.state_dict())  # rebuilt as _reload_vae does, for the same reason
    return unet.float().to(device).eval()


def _reload_vae(path: Path, device: torch.device):
    from diffusers import AutoencoderKL

    loaded = AutoencoderKL.from_pretrained(path, local_files_only=True)
    # rebuilt from its config so the saved pipeline does not record the temporary folder as `_name_or_path`
    vae = AutoencoderKL.from_config({k: v for k, v in loaded.config.items() if not k.startswith("_")})
    vae.load_state_dict(loaded.state_dict())
    return vae.float().to(device).eval()  # .float(): to(dtype=...) makes diffusers warn about fp32 modules


def _reload_classifiers(tmp: Path, device: torch.device) -> dict:
    from ...minicanvas.classifier import load_classifier

    return {k: load_classifier(tmp / "classifiers" / f"{k}.safetensors", device=device) for k in ("style", "object")}


def _save_pipeline(path: Path, vae, text_encoder, tokenizer, unet) -> None:
    from diffusers import StableDiffusionPipeline

    _, sampler = noise_schedulers()
    pipe = StableDiffusionPipeline(
        vae=_half(vae),
        text_encoder=_half(text_encoder),
        tokenizer=tokenizer,
        unet=_half(unet),
        scheduler=sampler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    _load_in_fp32(path / "text_encoder" / "config.json")


def _check_pipeline(tmp: Path, cfg: RecipeConfig, heldout: ImageBank, styles, objects) -> tuple[dict, dict]:
    """Reload what was saved and measure it: VAE reconstructions and a one-seed-per-pair fidelity grid."""
    from erasekit.models import DiffusionHandle, load_pipeline

    from .fidelity import fidelity

    device = heldout.images.device
    handle = DiffusionHandle(load_pipeline(str(tmp / "pipeline"), device=device, dtype=torch.float32))
    classifiers = _reload_classifiers(tmp, device)
    vae_metrics = evaluate_vae(handle.pipe.vae, heldout, classifiers)
    seeds = list(range(cfg.check_seeds))
    if cfg.check_classes:
        styles, objects = styles[: cfg.check_classes], objects[: cfg.check_classes]
    result, _ = fidelity(
        handle,
        classifiers["style"],
        classifiers["object"],
        styles,
        objects,
        [UNLEARNCANVAS_TEMPLATE],
        seeds,
        cfg.sample_steps,
        cfg.guidance,
        progress=False,
    )
    return vae_metrics, {"template": UNLEARNCANVAS_TEMPLATE, "seeds": seeds, **result}


def _manifest(cfg: RecipeConfig, seed: int, excluded, styles, objects, device, stages, metrics) -> dict:
    import diffusers
    import transformers

    from erasekit import __version__

    return {
        "world": "minicanvas",
        "recipe": RECIPE,
        "seed": seed,
        "exclude": excluded,
        "quick": cfg.quick,
        "styles": styles,
        "objects": objects,
        "classifier_labels": {"style": list(STYLES), "object": list(OBJECTS)},
        "sampling": {"scheduler": "DPMSolverMultistepScheduler", "steps": cfg.sample_steps, "guidance": cfg.guidance},
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "erasekit": __version__,
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stages": stages,
        "metrics": metrics,
        "config": cfg.to_dict(),
    }
