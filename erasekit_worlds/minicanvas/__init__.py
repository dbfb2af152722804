"""MiniCanvas: a procedural UnlearnCanvas in miniature (styles × objects at 64×64, captions, dataset, export).

``STYLES[0]`` is ``"Photo"`` (the plain style, UnlearnCanvas' ``Seed_Images``); object names are lowercase words.
See :mod:`erasekit_worlds.minicanvas.data` for the conventions, :mod:`~erasekit_worlds.recipes.minicanvas.recipe` for the
training recipe and :func:`weights_dir` for the shipped world.
"""

from .classifier import ClassifierConfig, ImageClassifier, load_classifier
from .data import (
    HELDOUT_OFFSET,
    HELDOUT_TEMPLATES,
    IMAGE_SIZE,
    OBJECTS,
    PHOTO,
    STYLES,
    TRAIN_TEMPLATES,
    UNLEARNCANVAS_TEMPLATE,
    MiniCanvasDataset,
    caption,
    export_unlearncanvas,
    parse_exclude,
    preview_grid,
    render,
    resolve_object,
    resolve_style,
    stable_seed,
    style_folder,
)
from .manifest import verify_manifest, weights_dir

__all__ = [
    "HELDOUT_OFFSET",
    "HELDOUT_TEMPLATES",
    "IMAGE_SIZE",
    "OBJECTS",
    "PHOTO",
    "STYLES",
    "TRAIN_TEMPLATES",
    "UNLEARNCANVAS_TEMPLATE",
    "ClassifierConfig",
    "ImageClassifier",
    "MiniCanvasDataset",
    "caption",
    "export_unlearncanvas",
    "load_classifier",
    "parse_exclude",
    "preview_grid",
    "render",
    "resolve_object",
    "resolve_style",
    "stable_seed",
    "style_folder",
    "verify_manifest",
    "weights_dir",
]
