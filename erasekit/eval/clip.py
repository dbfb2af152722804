"""CLIP models for evaluation: a local transformers folder, or an open_clip architecture with a local checkpoint.

Metrics use the transformers interface (``get_image_features`` / ``get_text_features`` and a processor), so an
open_clip model is wrapped to look like one. Spec strings: ``/path/to/hf_clip_folder`` or
``open_clip:ViT-L-14@/path/to/checkpoint.safetensors`` (checkpoints load with ``weights_only=True``).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

OPEN_CLIP_PREFIX = "open_clip:"


class OpenCLIPProcessor:
    """The two calls erasekit's metrics make of a CLIP processor, implemented with open_clip's own transforms."""

    def __init__(self, preprocess, tokenizer):
        self.preprocess, self.open_clip_tokenizer = preprocess, tokenizer
        self.tokenizer = self._tokenize

    def _tokenize(self, texts, **kwargs) -> _Batch:
        return _Batch(self.open_clip_tokenizer([texts] if isinstance(texts, str) else list(texts)))

    def __call__(self, images=None, text=None, return_tensors="pt", **kwargs) -> dict:
        from PIL import Image

        if text is not None:
            return self._tokenize(text)
        pil = [Image.fromarray(t.permute(1, 2, 0).numpy()) for t in images]
        return {"pixel_values": torch.stack([self.preprocess(p) for p in pil])}


class _Batch(dict):
    """A dict that also allows attribute access (like transformers' BatchEncoding)."""

    def __init__(self, ids: torch.Tensor):
        super().__init__(input_ids=ids, attention_mask=(ids != 0).long())

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class OpenCLIPAdapter(nn.Module):
    """An open_clip model behind the transformers ``CLIPModel`` feature interface."""

    def __init__(self, model, embed_dim: int, width: int):
        super().__init__()
        self.model = model.eval()
        self.config = SimpleNamespace(
            projection_dim=embed_dim,
            vision_config=SimpleNamespace(hidden_size=width),
            text_config=SimpleNamespace(max_position_embeddings=77),
        )

    def get_image_features(self, pixel_values=None, **kwargs) -> torch.Tensor:
        return self.model.encode_image(pixel_values)

    def get_text_features(self, input_ids=None, attention_mask=None, **kwargs) -> torch.Tensor:
        return self.model.encode_text(input_ids)


def load_open_clip(name: str, checkpoint: str | Path):
    """``(OpenCLIPAdapter, OpenCLIPProcessor)`` for architecture ``name`` with weights from ``checkpoint``."""
    import open_clip

    if name not in open_clip.list_models():
        raise ValueError(f"Unknown open_clip architecture {name!r}; see open_clip.list_models().")
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(checkpoint))
    cfg = open_clip.get_model_config(name)
    width = cfg["vision_cfg"].get("width", cfg["embed_dim"])
    return OpenCLIPAdapter(model, cfg["embed_dim"], width), OpenCLIPProcessor(
        preprocess, open_clip.get_tokenizer(name)
    )


def clip_loader(spec: str | Path):
    """A cached zero-argument loader for a CLIP spec (a transformers folder or ``open_clip:NAME@CHECKPOINT``)."""
    spec = str(spec)
    if spec.startswith(OPEN_CLIP_PREFIX):
        name, sep, checkpoint = spec[len(OPEN_CLIP_PREFIX) :].partition("@")
        if not sep:
            raise ValueError(f"{spec!r}: write open_clip:ARCH@/path/to/checkpoint.")
        if not Path(checkpoint).is_file():
            raise ValueError(f"No open_clip checkpoint at {checkpoint}.")

        def load():
            return load_open_clip(name, checkpoint)
    else:
        path = Path(spec)
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{path} is not a transformers CLIP folder (no config.json); for open_clip use "
                "open_clip:ARCH@CHECKPOINT."
            )

        def load():
            from transformers import CLIPModel, CLIPProcessor

            return (
                CLIPModel.from_pretrained(path, local_files_only=True).eval(),
                CLIPProcessor.from_pretrained(path, local_files_only=True),
            )

    cache: dict = {}

    def cached():
        if not cache:
            cache["v"] = load()
        return cache["v"]

    return cached
