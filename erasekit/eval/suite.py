"""Evaluation suites: the class lists, prompt templates, classifiers, CLIP and reference images of a benchmark.

A suite is the UnlearnCanvas protocol's world: styles x objects, prompts ``template.format(style, object)``, and two
classifiers that judge every generated image. Suites are registered by name (:func:`register_suite`): erasekit's
own ``unlearncanvas_suite`` wraps the real UnlearnCanvas data and classifier checkpoints, and plugins register
theirs (the shipped worlds' ``"minicanvas"`` and ``"minifaces"``, see :mod:`erasekit.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..plugins import load_plugins

UNLEARNCANVAS_TEMPLATE = "A {object} image in {style} style."


@dataclass
class Target:
    """What was erased: ``kind`` is ``"style"`` or ``"object"``, ``name`` a class of the suite."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass
class Suite:
    """One benchmark world. Classifiers take ``[N, 3, H, W]`` images in ``[0, 1]`` and return logits over
    ``classifier.labels``; ``clip`` is a zero-argument loader returning ``(CLIPModel, CLIPProcessor)``."""

    name: str
    styles: list[str]
    objects: list[str]
    style_classifier: Any
    object_classifier: Any
    template: str = UNLEARNCANVAS_TEMPLATE
    heldout_templates: list[str] = field(default_factory=list)
    caption_fn: Callable[[str, str, str], str] | None = None  # (style, object, template) -> prompt
    clip: Callable[[], tuple[Any, Any]] | None = None
    reference_images: Callable[[int], torch.Tensor] | None = None  # n -> real images [n, 3, H, W] in [0, 1]
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        for kind, names, clf in (
            ("style", self.styles, self.style_classifier),
            ("object", self.objects, self.object_classifier),
        ):
            missing = [n for n in names if n not in list(clf.labels)]
            if missing:
                raise ValueError(
                    f"The {kind} classifier of suite {self.name!r} has no label for {missing[:3]}; "
                    f"its labels are {list(clf.labels)[:5]}..."
                )

    def caption(self, style: str, obj: str, template: str | None = None) -> str:
        template = template or self.template
        if self.caption_fn is not None:
            return self.caption_fn(style, obj, template)
        return template.format(style=style.replace("_", " "), object=obj.replace("_", " "))

    def parse_target(self, text: str | Target | None) -> Target | None:
        """``"style:NAME"`` / ``"object:NAME"`` validated against the suite (case-insensitive)."""
        if text is None or isinstance(text, Target):
            return text
        kind, sep, name = text.partition(":")
        if not sep or kind not in ("style", "object"):
            raise ValueError(f"Target {text!r} must look like style:NAME or object:NAME.")
        names = self.styles if kind == "style" else self.objects
        match = [n for n in names if n.lower() == name.strip().lower()]
        if not match:
            raise ValueError(f"{kind} {name!r} is not in suite {self.name!r}; choose one of {', '.join(names)}.")
        return Target(kind, match[0])

    def grid(
        self, template: str | None = None, styles: Sequence[str] | None = None, objects: Sequence[str] | None = None
    ) -> list[tuple[str, str, str]]:
        """``(style, object, prompt)`` for every pair, style-major."""
        return [
            (s, o, self.caption(s, o, template)) for s in (styles or self.styles) for o in (objects or self.objects)
        ]


_SUITES: dict[str, Callable[..., Suite]] = {}


def register_suite(name: str):
    """Register a zero-config suite factory under ``name`` (used by ``--suite NAME``)."""

    def decorate(fn):
        if name in _SUITES:
            raise ValueError(f"Suite {name!r} is already registered.")
        _SUITES[name] = fn
        return fn

    return decorate


def get_suite(name_or_suite: str | Suite, **kwargs) -> Suite:
    """A suite by name (``"minicanvas"``) or the suite itself; ``kwargs`` go to the suite's factory."""
    if not isinstance(name_or_suite, str):
        return name_or_suite
    if name_or_suite not in _SUITES:
        load_plugins()
    if name_or_suite not in _SUITES:
        raise ValueError(f"Unknown suite {name_or_suite!r}; available: {', '.join(sorted(_SUITES))}.")
    return _SUITES[name_or_suite](**kwargs)


def list_suites() -> list[str]:
    """The registered suite names (plugins included)."""
    load_plugins()
    return sorted(_SUITES)
