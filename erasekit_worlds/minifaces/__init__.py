"""MiniFaces: procedural 64×64 cartoon faces with text-describable attributes, a StyleGAN2 trained on them, an
attribute classifier and the world's own CLIP (DESIGN.md §5).

Attributes (:data:`ATTRIBUTES`): glasses, smile, hat, beard, earrings, bangs (yes/no, each drawn independently) and
hair colour (black, brown, blond, red). See :mod:`~erasekit_worlds.minifaces.data` for the conventions,
:mod:`~erasekit_worlds.recipes.minifaces.recipe` for the training recipe and :func:`weights_dir` for the shipped world.

Example:
    >>> from erasekit_worlds.minifaces import render
    >>> image, attrs = render(0)          # (64, 64, 3) uint8, {"glasses": False, ..., "hair": "red"}
"""

from .classifier import AttributeClassifier, AttributeClassifierConfig, load_attribute_classifier
from .data import (
    ATTRIBUTES,
    BINARY_ATTRIBUTES,
    HAIR_COLOURS,
    HELDOUT_OFFSET,
    HELDOUT_TEMPLATES,
    IMAGE_SIZE,
    INDICATORS,
    PROBABILITIES,
    TRAIN_TEMPLATES,
    FaceBank,
    MiniFacesDataset,
    caption,
    decode,
    describe,
    encode,
    indicators,
    preview_grid,
    prompt_phrase,
    render,
    render_bank,
    render_with,
    resolve_indicator,
    sample_attributes,
)
from .manifest import verify_manifest, weights_dir

__all__ = [
    "ATTRIBUTES",
    "BINARY_ATTRIBUTES",
    "HAIR_COLOURS",
    "HELDOUT_OFFSET",
    "HELDOUT_TEMPLATES",
    "IMAGE_SIZE",
    "INDICATORS",
    "PROBABILITIES",
    "TRAIN_TEMPLATES",
    "AttributeClassifier",
    "AttributeClassifierConfig",
    "FaceBank",
    "MiniFacesDataset",
    "caption",
    "decode",
    "describe",
    "encode",
    "indicators",
    "load_attribute_classifier",
    "preview_grid",
    "prompt_phrase",
    "render",
    "render_bank",
    "render_with",
    "resolve_indicator",
    "sample_attributes",
    "verify_manifest",
    "weights_dir",
]
