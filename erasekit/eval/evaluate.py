"""``erasekit.evaluate``: one sampler, one seed list, every class of a suite, scored by registered metrics."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

import torch

from .._env import package_versions
from ..models import load_model
from ..sampling import generate_pairs
from .metrics import BASE_METRICS, DEFAULT_METRICS, EvalContext, get_metric
from .report import EvalReport
from .suite import Suite, Target, get_suite

logger = logging.getLogger(__name__)

DEFAULT_SEEDS = (0, 1, 2, 3)


def classify(classifier, images: torch.Tensor, batch_size: int = 128) -> list[str]:
    """Label names the classifier gives ``images`` (``[N, 3, H, W]`` in ``[0, 1]``)."""
    device = next(classifier.parameters()).device
    preds = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            preds += classifier(images[i : i + batch_size].to(device)).argmax(1).tolist()
    labels = list(classifier.labels)
    return [labels[p] for p in preds]


def _heldout_records(suite: Suite, target: Target, seeds: Sequence[int]) -> list[dict]:
    """The target's row under every held-out template: one image per (template, other class).

    The seeds rotate over the cells, so the paraphrase check costs one image per cell whatever the seed count
    (with 4 templates and 4 seeds as many target images as the grid's own UA uses) and every seed is used.
    """
    rows = []
    others = suite.objects if target.kind == "style" else suite.styles
    for template in suite.heldout_templates:
        for other in others:
            style, obj = (target.name, other) if target.kind == "style" else (other, target.name)
            seed = seeds[len(rows) % len(seeds)]
            prompt = suite.caption(style, obj, template)
            rows.append({"style": style, "object": obj, "seed": seed, "template": template, "prompt": prompt})
    return rows


def _versions() -> dict[str, str]:
    return package_versions(("erasekit", "torch", "diffusers", "transformers", "torchmetrics", "open-clip-torch"))


def _run_info(handle, seeds, steps, guidance, batch_size, n, patch, scale, seconds) -> dict:
    sched = handle.pipe.scheduler
    keep = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type", "timestep_spacing")
    return {
        "versions": _versions(),
        "device": str(handle.device),
        "dtype": str(handle.dtype),
        "sampler": {"class": type(sched).__name__, **{k: sched.config.get(k) for k in keep}},
        "steps": steps,
        "guidance": guidance,
        "seeds": list(seeds),
        "batch_size": batch_size,
        "negative_prompt": "",
        "image_size": handle.image_size,
        "num_images": n,
        "model": getattr(handle, "spec", None),
        "patch": None if patch is None else {k: patch.metadata.get(k) for k in ("method", "concept", "config")},
        "scale": scale if patch is not None else None,
        "seconds": seconds,
    }


def evaluate(
    pipe,
    suite: str | Suite = "minicanvas",
    target: str | Target | None = None,
    patch=None,
    seeds: Sequence[int] | None = None,
    *,
    steps: int = 25,
    guidance: float = 7.5,
    batch_size: int = 32,
    metrics: Sequence[str] | None = None,
    heldout: bool = True,
    fid_features: str | None = None,
    scale: float = 1.0,
    check_fingerprint: bool = True,
    progress: bool = True,
) -> EvalReport:
    """Generate the suite's full grid with fixed seeds (patched if ``patch`` is given) and score it.

    Args:
        pipe: a diffusers pipeline, handle or model spec.
        suite: a suite name (``"minicanvas"``) or a :class:`Suite`.
        target: ``"style:NAME"`` or ``"object:NAME"``; ``None`` scores the model on every class.
        patch: an :class:`~erasekit.ErasurePatch` applied (at ``scale``) during sampling and removed after.
        seeds: the seed list (default 0-3), the same for every prompt and every method.
        metrics: names from :func:`list_metrics`; default UA/IRA/CRA, retainability, CLIP, FID, efficiency
            (with a target) or per-class accuracies, CLIP and FID (without).
        heldout: also measure UA on the suite's held-out caption templates (paraphrase leakage).
        fid_features: ``"clip"`` (default when the suite has a CLIP) or ``"inception"``.

    Example:
        >>> report = erasekit.evaluate(pipe, "minicanvas", "style:Watercolor", patch=patch)
        >>> report["ua"], report["ira"], report["cra"]
    """
    suite = get_suite(suite)
    target = suite.parse_target(target)
    names = list(metrics or (DEFAULT_METRICS if target else BASE_METRICS))
    fns = {n: get_metric(n) for n in names}  # unknown names fail before any work
    handle, seeds = load_model(pipe), list(seeds if seeds is not None else DEFAULT_SEEDS)
    if not seeds:
        raise ValueError("The seed list is empty.")
    records = [{"style": s, "object": o, "seed": seed, "prompt": p} for s, o, p in suite.grid() for seed in seeds]
    extra = _heldout_records(suite, target, seeds) if heldout and target and suite.heldout_templates else []
    started = time.perf_counter()
    applied = patch.applied(handle, scale, check_fingerprint) if patch is not None else contextlib.nullcontext()
    with applied:
        # one sampling pass over grid and held-out cells: full batches, one progress bar
        everything = generate_pairs(
            handle, [(r["prompt"], r["seed"]) for r in records + extra], steps, guidance, batch_size, progress
        )
    images, extra_images = everything[: len(records)], everything[len(records) :]
    sampled = time.perf_counter() - started
    for rows, imgs in ((records, images), (extra, extra_images)):
        if rows:
            for r, sp, op in zip(
                rows, classify(suite.style_classifier, imgs), classify(suite.object_classifier, imgs), strict=True
            ):
                r["style_pred"], r["object_pred"] = sp, op
    ctx = EvalContext(suite, target, records, images, extra, patch, {"fid_features": fid_features})
    results: dict = {}
    for fn in fns.values():
        results.update(fn(ctx))
    seconds = {"sampling": round(sampled, 2), "total": round(time.perf_counter() - started, 2)}
    run = _run_info(handle, seeds, steps, guidance, batch_size, len(records) + len(extra), patch, scale, seconds)
    run["suite"] = suite.info
    return EvalReport(suite.name, str(target) if target else None, results, run, records + extra, images)
