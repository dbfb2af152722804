"""Evaluation of an erasure on a StyleGAN2 generator (DESIGN.md §2, Text-to-Unlearn; §5, MiniFaces).

The same seeds are sampled before and after the patch, and every image is judged by an attribute classifier:

- the erased attributes' rates before and after, and every other attribute's rate (they should not move);
- drift: mean absolute pixel change and CLIP-feature change (1 − cosine) on the samples that did *not* have an
  erased attribute before (those should come out the same);
- FID against reference images in a CLIP feature space (torchmetrics' FID with an injected feature extractor);
- γ, the "degree of unlearning" of Text-to-Unlearn (arXiv 2504.01218): the Wasserstein-1 distance between the
  distributions of CLIP scores (100 · cosine of image and attribute prompt) before and after.

Example:
    >>> suite = erasekit.eval.get_suite("minifaces", world_dir="worlds/minifaces")
    >>> report = evaluate_gan("minifaces:worlds/minifaces", patch, "glasses", suite=suite, seeds=range(1000))
    >>> report["glasses_rate_after"], report["gamma"]
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._io import write_json, write_text

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- pure metrics


def wasserstein_1(a: Sequence[float] | torch.Tensor, b: Sequence[float] | torch.Tensor) -> float:
    """Wasserstein-1 distance between two 1-D empirical distributions: ``∫ |F_a(x) − F_b(x)| dx``.

    Exact for samples of any (different) sizes; equals ``scipy.stats.wasserstein_distance``.

    Example:
        >>> wasserstein_1([0.0, 1.0], [2.0, 3.0])
        2.0
    """
    a = np.sort(np.asarray(torch.as_tensor(a, dtype=torch.float64).cpu(), dtype=np.float64).ravel())
    b = np.sort(np.asarray(torch.as_tensor(b, dtype=torch.float64).cpu(), dtype=np.float64).ravel())
    if not len(a) or not len(b):
        raise ValueError("wasserstein_1 needs two non-empty samples")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("wasserstein_1 got NaN or Inf values")
    grid = np.sort(np.concatenate([a, b]))
    widths = np.diff(grid)
    cdf_a = np.searchsorted(a, grid[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, grid[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * widths))


def attribute_rates(flags: dict[str, torch.Tensor]) -> dict[str, float]:
    """Share of samples for which each boolean ``[N]`` indicator holds."""
    return {k: float(torch.as_tensor(v).float().mean()) for k, v in flags.items()}


def drift(
    before: torch.Tensor,
    after: torch.Tensor,
    keep: torch.Tensor,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float | int]:
    """How much the samples selected by ``keep`` changed between ``before`` and ``after`` (``[N, 3, H, W]`` in
    ``[0, 1]``, same seeds).

    Returns:
        ``pixel_drift`` (mean absolute pixel difference, in [0, 1] units), ``feature_drift`` (mean ``1 − cos`` of
        ``features``, when given) and ``drift_samples`` (how many were kept); NaN drifts when none is kept.
    """
    if before.shape != after.shape:
        raise ValueError(f"before and after differ in shape: {tuple(before.shape)} vs {tuple(after.shape)}")
    keep = torch.as_tensor(keep, dtype=torch.bool).cpu()
    if keep.shape != (len(before),):
        raise ValueError(f"keep must be a boolean [N={len(before)}] mask, got shape {tuple(keep.shape)}")
    out: dict[str, float | int] = {"drift_samples": int(keep.sum())}
    if not keep.any():
        out["pixel_drift"] = float("nan")
        if features is not None:
            out["feature_drift"] = float("nan")
        return out
    b, a = before[keep].float(), after[keep].float()
    out["pixel_drift"] = float((a - b).abs().mean())
    if features is not None:
        fb, fa = F.normalize(features(b).float(), dim=-1), F.normalize(features(a).float(), dim=-1)
        out["feature_drift"] = float((1 - (fb * fa).sum(-1)).mean())
    return out


def clip_fid(real: torch.Tensor, fake: torch.Tensor, extractor: torch.nn.Module, batch_size: int = 128) -> float:
    """FID between ``real`` and ``fake`` images (``[N, 3, H, W]`` in ``[0, 1]``) in ``extractor``'s feature space,
    with torchmetrics' implementation (e.g. :class:`erasekit.eval.features.CLIPImageFeatures`)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 real and 2 fake images, got {len(real)} and {len(fake)}")
    metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            metric.update(images[i : i + batch_size].float(), real=is_real)
    return float(metric.compute())


@torch.no_grad()
def clip_scores(images: torch.Tensor, model, processor, prompts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
    """CLIP scores ``[N]``: 100 · cosine between each image and the mean (normalised) embedding of ``prompts``
    (the same concept in several templates)."""
    from .features import CLIPImageFeatures, clip_text_features

    if not prompts:
        raise ValueError("clip_scores needs at least one prompt")
    text = F.normalize(clip_text_features(model, processor, list(prompts)).mean(0), dim=-1)
    extractor = CLIPImageFeatures(model, processor)
    feats = torch.cat([extractor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return 100 * feats.float().cpu() @ text.float().cpu()


# ---------------------------------------------------------------------------------------------------- suites


@dataclass
class GanSuite:
    """What judges a generator: an attribute classifier (``indicators(images) -> {name: BoolTensor[N]}``), the
    indicator names, how a concept maps to them, the prompts a CLIP score uses, a CLIP loader and reference images.
    """

    name: str
    classifier: Any
    indicators: Sequence[str]
    resolve: Callable[[str], str]  # a concept phrase -> an indicator name
    prompts: Callable[[str], list[str]]  # an indicator -> CLIP-score prompts
    groups: dict[str, str] = field(default_factory=dict)  # indicator -> group (hair colours move together)
    clip: Callable[[], tuple[Any, Any]] | None = None
    reference_images: Callable[[int], torch.Tensor] | None = None
    info: dict = field(default_factory=dict)

    def parse_targets(self, target: str | Sequence[str]) -> list[str]:
        """Indicator names from ``"glasses"``, ``"glasses, beard"`` or a list; an error names the valid ones."""
        items = [t.strip() for t in target.split(",")] if isinstance(target, str) else [str(t) for t in target]
        items = [t for t in items if t]
        if not items:
            raise ValueError(f"No target attribute given; choose from {', '.join(self.indicators)}.")
        names = [t if t in self.indicators else self.resolve(t) for t in items]
        return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------- evaluation


@dataclass
class GanReport:
    """Result of :func:`evaluate_gan`: flat metrics, run information, and (not serialised) the images."""

    suite: str
    targets: list[str]
    metrics: dict[str, Any]
    run: dict[str, Any]
    before: torch.Tensor | None = field(default=None, repr=False)
    after: torch.Tensor | None = field(default=None, repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "targets": self.targets, "metrics": self.metrics, "run": self.run}

    def save_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def to_markdown(self) -> str:
        """The headline per target, then every indicator's rate before and after (in %)."""
        m = self.metrics
        lines = [f"**{self.suite}**, erased `{', '.join(self.targets)}`", ""]
        lines += ["| target | rate before | rate after | γ | max other change (pts) |", "|---|---|---|---|---|"]
        for t in self.targets:
            gamma = m.get(f"{t}_gamma")
            lines.append(
                f"| {t} | {100 * m[f'{t}_rate_before']:.1f}% | {100 * m[f'{t}_rate_after']:.1f}% | "
                f"{'-' if gamma is None else f'{gamma:.3g}'} | {m['max_other_change_points']:.1f} |"
            )
        extra = [(k, m[k]) for k in ("pixel_drift", "feature_drift", "fid_before", "fid_after") if k in m]
        if extra:
            lines += ["", "| " + " | ".join(k for k, _ in extra) + " |", "|" + "---|" * len(extra)]
            lines.append("| " + " | ".join(f"{v:.4g}" for _, v in extra) + " |")
        lines += ["", "| attribute | before | after |", "|---|---|---|"]
        for k, v in m["rates_before"].items():
            name = f"{k} (erased)" if k in self.targets else k
            lines.append(f"| {name} | {100 * v:.1f}% | {100 * m['rates_after'][k]:.1f}% |")
        r, seeds = self.run, self.run["seeds"]
        lines += [
            "",
            f"{len(seeds)} samples (seeds {seeds[0]}..{seeds[-1]}), ψ = {r['truncation_psi']}, {r['device']}.",
        ]
        return "\n".join(lines) + "\n"

    def save_markdown(self, path: str | Path) -> Path:
        return write_text(path, self.to_markdown())

    def save_grid(self, path: str | Path, count: int = 16) -> Path:
        """Two rows per block: samples before (top) and after (bottom) the patch, first ``count`` seeds."""
        from ..images import grid, save_image

        if self.before is None or self.after is None:
            raise ValueError("This report holds no images (it was loaded from JSON); re-run the evaluation.")
        n = min(count, len(self.before))
        images = torch.cat([self.before[:n], self.after[:n]])
        return save_image(grid(images, n, ["before", "after"]), path)


def _generate(handle, seeds: Sequence[int], psi: float, batch_size: int, progress: bool, desc: str) -> torch.Tensor:
    from tqdm.auto import tqdm

    out = []
    for i in tqdm(range(0, len(seeds), batch_size), desc=desc, unit="batch", disable=not progress):
        out.append(handle.generate(seeds[i : i + batch_size], truncation_psi=psi).cpu())
    return torch.cat(out)


def _rate_metrics(suite: GanSuite, targets: list[str], before: dict, after: dict) -> dict[str, Any]:
    rb, ra = attribute_rates(before), attribute_rates(after)
    out: dict[str, Any] = {"rates_before": rb, "rates_after": ra}
    for t in targets:
        out[f"{t}_rate_before"], out[f"{t}_rate_after"] = rb[t], ra[t]
    erased_groups = {suite.groups.get(t, t) for t in targets}
    others = [k for k in rb if k not in targets and suite.groups.get(k, k) not in erased_groups]
    changes = {k: round(100 * (ra[k] - rb[k]), 3) for k in others}
    out["other_changes_points"] = changes
    out["max_other_change_points"] = max((abs(v) for v in changes.values()), default=0.0)
    return out


def _suite_for(handle, suite: str | Path | None) -> GanSuite:
    """A registered suite by name, or the suite of the world the model came from (at ``suite`` if a folder)."""
    from .suite import get_suite, list_suites

    if isinstance(suite, str) and suite in list_suites():
        found = get_suite(suite)
    else:
        name = getattr(handle, "suite_name", None)
        if name is None:
            raise ValueError(
                "This generator did not come from a world with a suite: pass suite=GanSuite(...) or a registered "
                f"suite name ({', '.join(list_suites())})."
            )
        world = suite if suite is not None else getattr(handle, "world", None)
        found = get_suite(name, **({"world_dir": world} if world is not None else {}))
    if not isinstance(found, GanSuite):
        raise ValueError(f"Suite {found.name!r} judges diffusion pipelines, not StyleGAN2 generators.")
    return found


def evaluate_gan(
    model,
    patch,
    target: str | Sequence[str],
    suite: GanSuite | str | Path | None = None,
    seeds: Sequence[int] = range(1000),
    *,
    truncation_psi: float = 1.0,
    batch_size: int = 64,
    fid: bool = True,
    scale: float = 1.0,
    check_fingerprint: bool = True,
    progress: bool = True,
) -> GanReport:
    """Sample ``seeds`` before and after ``patch`` and measure the erasure of ``target`` (see the module docstring).

    Args:
        model: a StyleGAN2 generator, a :class:`~erasekit.models.StyleGANHandle` or a spec (``"minifaces:DIR"``).
        patch: the :class:`~erasekit.ErasurePatch` (applied at ``scale`` while sampling "after", then removed).
        target: the erased attribute(s): ``"glasses"``, ``"glasses, beard"``, a list, or phrases the suite resolves.
        suite: a :class:`GanSuite`, a registered suite name, a world folder (judged by the suite of the model's world),
            or ``None`` for the world the model came from.
        seeds: the fixed seed list (the same for every method).
        fid: also compute FID before and after against the suite's reference images in its CLIP feature space.

    Returns:
        A :class:`GanReport`; ``report.metrics`` is JSON-friendly.
    """
    from .. import __version__
    from ..models import load_model

    handle = load_model(model)
    if handle.kind != "stylegan":
        raise ValueError(f"evaluate_gan needs a StyleGAN2 generator, got a {handle.kind} model.")
    if not isinstance(suite, GanSuite):
        suite = _suite_for(handle, suite)
    targets, seeds = suite.parse_targets(target), [int(s) for s in seeds]
    if len(seeds) < 2:
        raise ValueError("evaluate_gan needs at least 2 seeds.")
    started = time.perf_counter()
    before = _generate(handle, seeds, truncation_psi, batch_size, progress, "before")
    applied = patch.applied(handle, scale, check_fingerprint) if patch is not None else contextlib.nullcontext()
    with applied:
        after = _generate(handle, seeds, truncation_psi, batch_size, progress, "after")
    flags_b, flags_a = suite.classifier.indicators(before), suite.classifier.indicators(after)
    metrics = _rate_metrics(suite, targets, flags_b, flags_a)
    had = torch.stack([flags_b[t].cpu() for t in targets]).any(0)
    clip = suite.clip() if suite.clip is not None else None
    extractor = None
    if clip is not None:
        from .features import CLIPImageFeatures

        extractor = CLIPImageFeatures(*clip)
    metrics.update(drift(before, after, ~had, extractor))
    if clip is not None:
        for t in targets:
            sb, sa = (clip_scores(x, *clip, suite.prompts(t)) for x in (before, after))
            metrics[f"{t}_gamma"] = wasserstein_1(sb, sa)
            metrics[f"{t}_clip_score_before"], metrics[f"{t}_clip_score_after"] = float(sb.mean()), float(sa.mean())
        metrics["gamma"] = float(np.mean([metrics[f"{t}_gamma"] for t in targets]))
    if fid and extractor is not None and suite.reference_images is not None:
        reference = suite.reference_images(len(seeds))
        metrics["fid_before"] = clip_fid(reference, before, extractor)
        metrics["fid_after"] = clip_fid(reference, after, extractor)
        metrics["fid_features"] = extractor.name
    run = {
        "seeds": seeds,
        "num_samples": len(seeds),
        "truncation_psi": truncation_psi,
        "noise_mode": "const",
        "device": str(handle.device),
        "model": getattr(handle, "spec", None),
        "patch": None if patch is None else {k: patch.metadata.get(k) for k in ("method", "concept", "config")},
        "scale": scale,
        "suite": suite.info,
        "seconds": round(time.perf_counter() - started, 2),
        "erasekit": __version__,
        "torch": torch.__version__,
    }
    return GanReport(suite.name, targets, metrics, run, before, after)
