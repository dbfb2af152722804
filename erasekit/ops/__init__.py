"""Pure math behind the methods, each with known-answer tests."""

from .clip_direction import (
    attribute_probability,
    centred_logits,
    colour_layout_loss,
    directional_loss,
    feature_retention,
    logit_drift,
    pixel_retention,
    prototype,
    removal_loss,
    text_direction,
    weighted_directional_loss,
    weighted_mean,
)
from .diffusion import x0_from_prediction
from .doco import discriminator_loss, generator_loss, surrogate_loss
from .esd import esd_target
from .layer_selection import code_movement, layer_w_index, rank_layers
from .saliency import cfg_combination, global_topk_mask, saliency_loss
from .surgery import SURGERY_MODES, combine_gradients, pcgrad_project, reference_project, surgery
from .uce import uce_closed_form

__all__ = [
    "SURGERY_MODES",
    "attribute_probability",
    "centred_logits",
    "cfg_combination",
    "code_movement",
    "colour_layout_loss",
    "combine_gradients",
    "directional_loss",
    "discriminator_loss",
    "esd_target",
    "feature_retention",
    "generator_loss",
    "global_topk_mask",
    "layer_w_index",
    "logit_drift",
    "pcgrad_project",
    "pixel_retention",
    "prototype",
    "rank_layers",
    "reference_project",
    "removal_loss",
    "saliency_loss",
    "surgery",
    "surrogate_loss",
    "text_direction",
    "uce_closed_form",
    "weighted_directional_loss",
    "weighted_mean",
    "x0_from_prediction",
]
