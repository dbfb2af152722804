"""A frozen CLIP (Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", arXiv
2103.00020) as a differentiable feature extractor: what CLIP-guided methods such as Text-to-Unlearn train against.

It accepts a transformers ``CLIPModel`` with its ``CLIPProcessor``, or erasekit's open_clip adapter with its
processor (``erasekit.eval.clip.clip_loader`` loads either).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_tensor(out) -> torch.Tensor:
    """The projected features of a ``get_image_features`` / ``get_text_features`` call as a tensor (transformers 5
    may wrap them in an output object)."""
    if torch.is_tensor(out):
        return out
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        if getattr(out, name, None) is not None:
            return getattr(out, name)
    raise TypeError(f"Unexpected CLIP output {type(out).__name__}.")


@torch.no_grad()
def text_features(model, processor, texts: list[str]) -> torch.Tensor:
    """L2-normalised CLIP text embeddings ``[N, D]`` (fp32, on the model's device)."""
    tok = processor.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
    device = next(model.parameters()).device
    ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
    return F.normalize(feature_tensor(model.get_text_features(input_ids=ids, attention_mask=mask)).float(), dim=-1)


def _field(obj, name: str):
    if obj is None or isinstance(obj, int):
        return obj
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def pixel_spec(processor) -> tuple[int, list[float], list[float]]:
    """(input side, mean, std) of a transformers CLIPProcessor or erasekit's open_clip processor."""
    ip = getattr(processor, "image_processor", None)
    if ip is not None:  # crop_size / size are dicts in transformers 4, SizeDicts in 5
        size = _field(getattr(ip, "crop_size", None), "height") or _field(ip.size, "shortest_edge")
        if not size:
            raise ValueError(f"Cannot read the input size of {type(ip).__name__} (crop_size / size).")
        return int(size), list(ip.image_mean), list(ip.image_std)
    transforms = getattr(getattr(processor, "preprocess", None), "transforms", [])
    norm = next((t for t in transforms if hasattr(t, "mean") and hasattr(t, "std")), None)
    sized = [t for t in transforms if hasattr(t, "size")]
    if norm is None or not sized:
        raise ValueError(f"Cannot read the image size and normalisation of {type(processor).__name__}.")
    size = sized[-1].size
    return int(size[0] if isinstance(size, list | tuple) else size), list(norm.mean), list(norm.std)


class ClipEncoder:
    """A frozen CLIP with differentiable image encoding of ``[N, 3, H, W]`` images in ``[0, 1]`` (resized and
    normalised in torch the way its processor does on uint8 images) and text encoding.

    Example:
        >>> encoder = ClipEncoder(*clip_loader("path/to/clip")(), torch.device("cpu"))
        >>> feats = encoder.images(images)  # [N, D], unit norm, differentiable w.r.t. images
    """

    def __init__(self, model, processor, device: torch.device):
        self.model = model.to(device).eval().requires_grad_(False)
        self.processor, self.device = processor, device
        self.size, mean, std = pixel_spec(processor)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = float(scale.exp()) if torch.is_tensor(scale) else 100.0

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``[N, D]``; gradients flow back to ``images``."""
        x = images.float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False)
        feats = feature_tensor(self.model.get_image_features(pixel_values=(x - self.mean) / self.std))
        return F.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, D]`` on this encoder's device."""
        return text_features(self.model, self.processor, texts).to(self.device)
