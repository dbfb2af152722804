"""``erasekit.attack``: run registered attacks on an erasure, with the base model (and the gold model) as references."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .base import AttackConfig, AttackContext, get_attack
from .judge import AttributeJudge, ClassifierJudge, ClipJudge
from .report import AttackReport

logger = logging.getLogger(__name__)

DEFAULT_ATTACKS = ("relearn", "prompt", "inversion", "quantize", "probe")
GAN_ATTACKS = ("relearn", "quantize")
DEFAULT_SEEDS = (0,)
GAN_SEEDS = tuple(range(64))


def _load_gold(gold, model, handle):
    """A gold model from a handle, a pipeline, a diffusers folder, a world folder (read as ``WORLD:DIR`` of the
    attacked model's world) or any model spec."""
    from ..models import load_model
    from ..plugins import world_of_spec

    if gold is None or not isinstance(gold, str | Path):
        return None if gold is None else load_model(gold)
    path = Path(gold).expanduser()
    kwargs = {"device": handle.device}
    if handle.kind == "diffusion":
        kwargs["dtype"] = handle.dtype
    if path.is_dir() and not (path / "model_index.json").is_file():
        spec = model if isinstance(model, str) else getattr(handle, "spec", None)
        found = world_of_spec(spec) if spec else None
        if found is None:
            raise ValueError(
                f"--gold {gold}: not a diffusers pipeline folder (no model_index.json); for a world folder, name the "
                "attacked model by its world (e.g. --model minicanvas)."
            )
        return load_model(f"{found[0].name}:{path}", **kwargs)
    if handle.kind == "stylegan":
        kwargs.pop("device")
    return load_model(str(gold), **kwargs)


def _diffusion_setup(suite, target, judge: str) -> dict[str, Any]:
    from ..eval.suite import get_suite

    suite = get_suite(suite)
    if target is None:
        raise ValueError("An attack needs a target: style:NAME or object:NAME.")
    target = suite.parse_target(target)
    kind, name = target.kind, target.name
    others = suite.objects if kind == "style" else suite.styles
    same = [c for c in (suite.styles if kind == "style" else suite.objects) if c != name]

    def cap(cls: str, other: str, template: str | None = None) -> str:
        return suite.caption(cls, other, template) if kind == "style" else suite.caption(other, cls, template)

    prompts = [cap(name, o) for o in others]
    positives, negatives = [], []
    for ti, template in enumerate([suite.template, *suite.heldout_templates]):
        for j, o in enumerate(others):
            positives.append(cap(name, o, template))
            negatives.append(cap(same[(j + ti) % len(same)], o, template))
    if judge == "classifier":
        clf = suite.style_classifier if kind == "style" else suite.object_classifier
        the_judge = ClassifierJudge(clf, name)
    elif judge == "clip":
        if suite.clip is None:
            raise ValueError(f"Suite {suite.name!r} has no CLIP model for a CLIP judge; use judge='classifier'.")
        phrase = "{} style" if kind == "style" else "a {}"
        texts = [phrase.format(c.replace("_", " ")) for c in [name, *same]]
        the_judge = ClipJudge(*suite.clip(), texts)
    else:
        raise ValueError(f"judge must be 'classifier' or 'clip', got {judge!r}.")
    return {
        "suite": suite,
        "target": str(target),
        "name": name,
        "prompts": prompts,
        "contrast": (positives, negatives),
        "judge": the_judge,
    }


def _gan_setup(handle, suite, target) -> dict[str, Any]:
    from ..eval.gan import GanSuite, _suite_for

    suite = suite if isinstance(suite, GanSuite) else _suite_for(handle, suite)
    if target is None:
        raise ValueError(
            f"An attack on a generator needs the erased attribute, e.g. one of {list(suite.indicators)[:4]}."
        )
    names = suite.parse_targets(target)
    if len(names) != 1:
        raise ValueError(f"Attack one attribute at a time; got {names}.")
    return {
        "suite": suite,
        "target": names[0],
        "name": names[0],
        "prompts": [],
        "contrast": None,
        "judge": AttributeJudge(suite.classifier, names[0]),
    }


def attack(
    model,
    patch,
    suite: Any = "minicanvas",
    target: str | None = None,
    attacks: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    *,
    gold=None,
    configs: dict[str, dict | AttackConfig] | None = None,
    steps: int = 10,
    guidance: float = 7.5,
    batch_size: int = 32,
    judge: str = "classifier",
    check_fingerprint: bool = True,
    progress: bool = True,
) -> AttackReport:
    """Attack an erasure: how sure is it that the concept is gone?

    Every attack measures the erased model (``patch`` applied to ``model``), the unpatched base model (the attack
    must succeed there, or it proves nothing) and, when ``gold`` is given, the model retrained without the concept.

    Args:
        model: a diffusers pipeline, StyleGAN2 generator, handle or model spec (``"minicanvas"``).
        patch: the :class:`~erasekit.ErasurePatch` under attack.
        suite: the suite that judges the concept (a name or a suite); for a generator, its attribute suite.
        target: ``"style:NAME"`` / ``"object:NAME"``; for a generator, the attribute (``"glasses"``).
        attacks: names from :func:`list_attacks` (default: all that apply to the model's kind).
        seeds: the sampling seeds of every concept rate (default ``(0,)`` for diffusion, 0-63 for a generator).
        gold: the gold model (a spec, folder or pipeline), or ``None``.
        configs: per attack, a config or ``{option: value}`` overrides (budgets: steps, tokens, k, lr, seed).
        steps: sampler steps of every generation.
        guidance: classifier-free guidance scale of every generation.
        batch_size: images generated per forward pass.
        judge: ``"classifier"`` (the suite's) or ``"clip"`` (zero-shot with the suite's CLIP).

    Returns:
        An :class:`AttackReport`.

    Example:
        >>> report = erasekit.attack("minicanvas", patch, "minicanvas", "style:Watercolor", ["quantize", "relearn"])
        >>> report["relearn"]["final"]["patched"], report["relearn"]["final"]["base"]
    """
    from .. import __version__
    from .._env import package_versions
    from ..models import load_model

    handle = load_model(model)
    setup = _gan_setup(handle, suite, target) if handle.kind == "stylegan" else _diffusion_setup(suite, target, judge)
    names = list(attacks or (GAN_ATTACKS if handle.kind == "stylegan" else DEFAULT_ATTACKS))
    configs = dict(configs or {})
    unknown = [k for k in configs if k not in names]
    if unknown:
        raise ValueError(f"Options given for {unknown}, which are not among the attacks run ({', '.join(names)}).")
    instances = []
    for name in names:
        cls = get_attack(name)
        given = configs.get(name)
        instances.append(cls(given if isinstance(given, AttackConfig) else cls.config_class.from_dict(given)))
    seeds = [
        int(s) for s in (seeds if seeds is not None else GAN_SEEDS if handle.kind == "stylegan" else DEFAULT_SEEDS)
    ]
    if not seeds:
        raise ValueError("The seed list is empty.")
    with patch.applied(handle, check_fingerprint=check_fingerprint):
        pass  # a patch for another model fails here, before any work
    ctx = AttackContext(
        handle,
        patch,
        setup["judge"],
        setup["target"],
        setup["prompts"],
        seeds,
        gold=_load_gold(gold, model, handle),
        steps=steps,
        guidance=guidance,
        batch_size=batch_size,
        progress=progress,
        check_fingerprint=check_fingerprint,
        contrast=setup["contrast"],
    )
    ctx.cache["concept_name"] = setup["name"]
    for inst in instances:
        inst.check(ctx)
    for inst in instances:
        inst.prepare(ctx)
    results, images, cpu, wall = {}, {}, {}, {}
    for inst in instances:
        logger.info("attack %s on %s", inst.name, ctx.target)
        c0, w0 = time.process_time(), time.perf_counter()
        out = inst.run(ctx)
        cpu[inst.name], wall[inst.name] = round(time.process_time() - c0, 1), round(time.perf_counter() - w0, 1)
        images[inst.name] = out.pop("images", {}) or {}
        results[inst.name] = out
    cpu["total"], wall["total"] = round(sum(cpu.values()), 1), round(sum(wall.values()), 1)
    run = {
        "model": getattr(handle, "spec", None),
        "gold": None if gold is None else str(getattr(ctx.gold, "spec", None) or gold),
        "patch": {k: patch.metadata.get(k) for k in ("method", "concept", "config")},
        "seeds": seeds,
        "judge": ctx.judge.name,
        "device": str(handle.device),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(("erasekit", "torch", "diffusers", "transformers")),
        "erasekit": __version__,
        "plain_rates": {v: ctx.plain_rate(v) for v in ctx.variants},
    }
    if handle.kind == "diffusion":
        run.update(
            {
                "sampler": type(handle.pipe.scheduler).__name__,
                "steps": steps,
                "guidance": guidance,
                "batch_size": batch_size,
                "prompts": ctx.prompts,
            }
        )
    return AttackReport(
        setup["suite"].name, ctx.target, results, {i.name: i.config.to_dict() for i in instances}, run, images
    )
