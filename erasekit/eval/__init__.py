"""Evaluation: the UnlearnCanvas protocol (UA / IRA / CRA), CLIP metrics, FID and reports; GAN metrics (attribute
rates, drift, CLIP-space FID, γ) for StyleGAN2 erasures."""

from .evaluate import classify, evaluate
from .gan import GanReport, GanSuite, evaluate_gan, wasserstein_1
from .metrics import EvalContext, get_metric, list_metrics, register_metric, unlearncanvas_scores
from .report import EvalReport
from .suite import UNLEARNCANVAS_TEMPLATE, Suite, Target, get_suite, list_suites, register_suite
from .unlearncanvas import load_timm_classifier, unlearncanvas_suite

__all__ = [
    "UNLEARNCANVAS_TEMPLATE",
    "EvalContext",
    "EvalReport",
    "GanReport",
    "GanSuite",
    "Suite",
    "Target",
    "classify",
    "evaluate",
    "evaluate_gan",
    "get_metric",
    "get_suite",
    "list_metrics",
    "list_suites",
    "load_timm_classifier",
    "unlearncanvas_suite",
    "register_metric",
    "register_suite",
    "unlearncanvas_scores",
    "wasserstein_1",
]
