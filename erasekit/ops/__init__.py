"""Pure math behind the methods, each with known-answer tests."""

from .esd import esd_target
from .saliency import cfg_combination, global_topk_mask, saliency_loss
from .surgery import SURGERY_MODES, combine_gradients, pcgrad_project, reference_project, surgery
from .uce import uce_closed_form

__all__ = [
    "SURGERY_MODES",
    "cfg_combination",
    "combine_gradients",
    "esd_target",
    "global_topk_mask",
    "pcgrad_project",
    "reference_project",
    "saliency_loss",
    "surgery",
    "uce_closed_form",
]
