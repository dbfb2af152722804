"""Tiny stand-ins for an evaluation suite: random classifiers, a tiny CLIP, fabricated reference images."""

from __future__ import annotations

import torch
from torch import nn

from erasekit.eval import Suite

STYLES = ["Photo", "Ink"]
OBJECTS = ["apple", "cup"]


class TinyClassifier(nn.Module):
    """A random linear classifier over pooled pixels, with ``labels``."""

    def __init__(self, labels: list[str], seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.labels = list(labels)
        self.head = nn.Linear(3 * 4 * 4, len(labels))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.adaptive_avg_pool2d(images, 4).flatten(1))


def tiny_clip():
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from erasekit.models.tiny import _cached_tokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 8,
            "intermediate_size": 16,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "vocab_size": 49408,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": 8,
            "intermediate_size": 16,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPModel(config).eval(), CLIPProcessor(image_processor=image_processor, tokenizer=_cached_tokenizer())


def tiny_suite(with_clip: bool = True) -> Suite:
    clip = tiny_clip() if with_clip else None
    return Suite(
        name="tiny",
        styles=STYLES,
        objects=OBJECTS,
        style_classifier=TinyClassifier(STYLES + ["Other"], seed=1),
        object_classifier=TinyClassifier(OBJECTS, seed=2),
        heldout_templates=["{style} artwork showing a {object}."],
        clip=(lambda: clip) if clip else None,
        reference_images=lambda n: torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(5)),
        info={"kind": "test"},
    )
