"""Metrics, registered by name. Each takes the :class:`EvalContext` and returns a flat dict of numbers.

UA / IRA / CRA follow the UnlearnCanvas protocol (arXiv 2402.11846, DESIGN.md §4). For a style target:
UA = 1 − style accuracy on images of the target style; IRA = mean style accuracy over the other styles;
CRA = object accuracy over the whole grid. For an object target the roles of the two classifiers swap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .suite import Suite, Target

_METRICS: dict[str, Callable[[EvalContext], dict[str, Any]]] = {}


def register_metric(name: str):
    """Decorator: register a metric function under ``name``; duplicates fail at import."""

    def decorate(fn):
        if name in _METRICS:
            raise ValueError(f"Metric {name!r} is already registered.")
        _METRICS[name] = fn
        return fn

    return decorate


def list_metrics() -> list[str]:
    return list(_METRICS)


def get_metric(name: str):
    if name not in _METRICS:
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(_METRICS)}.")
    return _METRICS[name]


@dataclass
class EvalContext:
    """What the metrics see: the grid records with both classifiers' predictions, images and options."""

    suite: Suite
    target: Target | None
    records: list[dict]  # style, object, seed, prompt, style_pred, object_pred
    images: torch.Tensor
    heldout: list[dict] = field(default_factory=list)  # target-row records under held-out templates
    patch: Any = None
    options: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)


def accuracy_by_class(records: list[dict], kind: str, classes: list[str]) -> dict[str, float]:
    """Per true class of ``kind``: the fraction of its images the ``kind`` classifier labels correctly."""
    out = {}
    for c in classes:
        hits = [r[f"{kind}_pred"] == c for r in records if r[kind] == c]
        if hits:
            out[c] = sum(hits) / len(hits)
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def unlearncanvas_scores(records: list[dict], suite: Suite, target: Target) -> dict[str, Any]:
    """UA, IRA and CRA for one target, with the per-class accuracies they come from."""
    other = "object" if target.kind == "style" else "style"
    classes = suite.styles if target.kind == "style" else suite.objects
    acc = accuracy_by_class(records, target.kind, classes)
    cross = [r[f"{other}_pred"] == r[other] for r in records]
    return {
        "ua": 1.0 - acc[target.name],
        "ira": _mean(v for c, v in acc.items() if c != target.name),
        "cra": _mean(cross),
        f"{target.kind}_accuracy_by_class": acc,
        f"{other}_accuracy_by_class": accuracy_by_class(
            records, other, suite.objects if other == "object" else suite.styles
        ),
    }


def _scores(ctx: EvalContext) -> dict[str, Any]:
    if "uc" not in ctx.cache:
        if ctx.target is None:
            raise ValueError("UA/IRA/CRA need a target (style:NAME or object:NAME).")
        ctx.cache["uc"] = unlearncanvas_scores(ctx.records, ctx.suite, ctx.target)
    return ctx.cache["uc"]


@register_metric("ua")
def ua(ctx: EvalContext) -> dict[str, Any]:
    """Unlearning accuracy on the UnlearnCanvas template, and on the held-out paraphrases (leakage)."""
    out = {"ua": _scores(ctx)["ua"]}
    if ctx.heldout:
        kind, name = ctx.target.kind, ctx.target.name
        out["ua_heldout"] = 1.0 - _mean(r[f"{kind}_pred"] == name for r in ctx.heldout)
        by_template = {}
        for r in ctx.heldout:
            by_template.setdefault(r["template"], []).append(r[f"{kind}_pred"] != name)
        out["ua_heldout_by_template"] = {t: _mean(v) for t, v in by_template.items()}
    return out


@register_metric("ira")
def ira(ctx: EvalContext) -> dict[str, Any]:
    """In-domain retain accuracy: the target kind's accuracy over the other classes."""
    s = _scores(ctx)
    key = f"{ctx.target.kind}_accuracy_by_class"
    return {"ira": s["ira"], key: s[key]}


@register_metric("cra")
def cra(ctx: EvalContext) -> dict[str, Any]:
    """Cross-domain retain accuracy: the other classifier's accuracy over the whole grid."""
    s = _scores(ctx)
    other = "object" if ctx.target.kind == "style" else "style"
    return {"cra": s["cra"], f"{other}_accuracy_by_class": s[f"{other}_accuracy_by_class"]}


@register_metric("retainability")
def retainability(ctx: EvalContext) -> dict[str, Any]:
    """Summary: mean of IRA and CRA, and the mean of all three (no method is best on all at once)."""
    s = _scores(ctx)
    return {"retain_mean": (s["ira"] + s["cra"]) / 2, "uc_mean": (s["ua"] + s["ira"] + s["cra"]) / 3}


@register_metric("classes")
def classes(ctx: EvalContext) -> dict[str, Any]:
    """Without a target: per-class accuracies and, for every possible target, the base model's UA/IRA/CRA."""
    suite = ctx.suite
    per_target = {}
    for kind, names in (("style", suite.styles), ("object", suite.objects)):
        for name in names:
            s = unlearncanvas_scores(ctx.records, suite, Target(kind, name))
            per_target[f"{kind}:{name}"] = {k: s[k] for k in ("ua", "ira", "cra")}
    return {
        "style_accuracy": _mean(r["style_pred"] == r["style"] for r in ctx.records),
        "object_accuracy": _mean(r["object_pred"] == r["object"] for r in ctx.records),
        "style_accuracy_by_class": accuracy_by_class(ctx.records, "style", suite.styles),
        "object_accuracy_by_class": accuracy_by_class(ctx.records, "object", suite.objects),
        "per_target": per_target,
    }


def confusion_counts(records: list[dict], kind: str) -> dict[str, int]:
    """The ``kind`` classifier's mistakes as ``{"TRUE -> PREDICTED": count}``, most frequent first (ties by name)."""
    counts: dict[str, int] = {}
    for r in records:
        if r[f"{kind}_pred"] != r[kind]:
            key = f"{r[kind]} -> {r[f'{kind}_pred']}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@register_metric("confusions")
def confusions(ctx: EvalContext) -> dict[str, Any]:
    """What the accuracies hide: where each classifier's mistakes go over the grid and, with a target, what the
    target's images became and the grid cells where the target survived.

    - ``style_confusions`` / ``object_confusions``: every mistake of that classifier as ``{"Watercolor -> Photo": 18}``,
      most frequent first: an erased class sent to one neighbour, or retained classes dragged along with it.
    - with a target, ``target_predictions``: what the target kind's classifier called the target's grid images
      (``{"Photo": 19, "Watercolor": 1}``), and ``target_survived_in``: the cells (``"OTHER_CLASS/SEED"``) where it
      still recognised the target.
    """
    out: dict[str, Any] = {f"{kind}_confusions": confusion_counts(ctx.records, kind) for kind in ("style", "object")}
    if ctx.target is not None:
        kind, name = ctx.target.kind, ctx.target.name
        other = "object" if kind == "style" else "style"
        on = [r for r in ctx.records if r[kind] == name]
        predicted: dict[str, int] = {}
        for r in on:
            predicted[r[f"{kind}_pred"]] = predicted.get(r[f"{kind}_pred"], 0) + 1
        out["target_predictions"] = dict(sorted(predicted.items(), key=lambda kv: (-kv[1], kv[0])))
        out["target_survived_in"] = [f"{r[other]}/{r['seed']}" for r in on if r[f"{kind}_pred"] == name]
    return out


@register_metric("clip_score")
def clip_score(ctx: EvalContext) -> dict[str, Any]:
    """torchmetrics' CLIPScore (100·max(cos, 0)) of each image against its prompt, with the suite's CLIP."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    from .features import TensorCLIP

    if ctx.suite.clip is None:
        return {}
    model, processor = ctx.suite.clip()

    def loader():
        return TensorCLIP(model), processor

    metric = CLIPScore(model_name_or_path=loader)
    uint8 = (ctx.images.clamp(0, 1) * 255).round().to(torch.uint8)
    prompts = [r["prompt"] for r in ctx.records]
    for i in range(0, len(prompts), 64):
        metric.update(list(uint8[i : i + 64]), prompts[i : i + 64])
    out = {"clip_score": float(metric.compute())}
    if ctx.target is not None:
        on = [i for i, r in enumerate(ctx.records) if r[ctx.target.kind] == ctx.target.name]
        m = CLIPScore(model_name_or_path=loader)
        m.update(list(uint8[on]), [prompts[i] for i in on])
        out["clip_score_target"] = float(m.compute())
    return out


@register_metric("clip_accuracy")
def clip_accuracy(ctx: EvalContext) -> dict[str, Any]:
    """Zero-shot style and object accuracy of the generated images with the suite's CLIP."""
    from .features import CLIPImageFeatures, clip_text_features

    if ctx.suite.clip is None:
        return {}
    model, processor = ctx.suite.clip()
    image = CLIPImageFeatures(model, processor)(ctx.images)
    suite, out = ctx.suite, {}
    for kind, names in (("style", suite.styles), ("object", suite.objects)):
        protos = []
        for name in names:  # a class prototype: the mean text embedding over the other axis
            pairs = suite.grid(styles=[name]) if kind == "style" else suite.grid(objects=[name])
            protos.append(clip_text_features(model, processor, [p for _, _, p in pairs]).mean(0))
        pred = (image @ torch.nn.functional.normalize(torch.stack(protos), dim=-1).T).argmax(1)
        hits = [names[int(p)] == r[kind] for p, r in zip(pred, ctx.records, strict=True)]
        out[f"clip_{kind}_accuracy"] = _mean(hits)
        if ctx.target is not None and ctx.target.kind == kind:
            on = [h for h, r in zip(hits, ctx.records, strict=True) if r[kind] == ctx.target.name]
            out["clip_ua"] = 1.0 - _mean(on)
    return out


@register_metric("fid")
def fid(ctx: EvalContext) -> dict[str, Any]:
    """FID between the generated grid and as many real images of the suite (torchmetrics, injected features)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from .features import feature_extractor

    if ctx.suite.reference_images is None:
        return {}
    kind = ctx.options.get("fid_features") or ("clip" if ctx.suite.clip else "inception")
    extractor = feature_extractor(kind, ctx.suite.clip)
    metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
    real = ctx.suite.reference_images(len(ctx.images))
    for i in range(0, len(real), 64):
        metric.update(real[i : i + 64].float(), real=True)
    for i in range(0, len(ctx.images), 64):
        metric.update(ctx.images[i : i + 64].float(), real=False)
    return {"fid": float(metric.compute()), "fid_features": extractor.name, "fid_samples": len(ctx.images)}


@register_metric("efficiency")
def efficiency(ctx: EvalContext) -> dict[str, Any]:
    """Run time, peak memory and storage of the erasure, from the patch's metadata."""
    if ctx.patch is None:
        return {}
    stats = ctx.patch.metadata.get("stats", {})
    return {
        "erase_seconds": stats.get("erase_seconds"),
        "peak_gpu_memory_bytes": stats.get("peak_gpu_memory_bytes"),
        "patch_bytes": ctx.patch.nbytes,
        "values_changed": ctx.patch.num_changed,
    }


DEFAULT_METRICS = ("ua", "ira", "cra", "retainability", "clip_score", "clip_accuracy", "fid", "efficiency")
BASE_METRICS = ("classes", "clip_score", "clip_accuracy", "fid")
