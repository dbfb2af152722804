"""Generation fidelity of a MiniCanvas pipeline: do its samples show the style and object their prompt asks for?

Each (style, object) prompt is sampled with fixed seeds and both classifiers judge every image; agreement is the
share of images whose predicted class is the prompted one (the UnlearnCanvas protocol's accuracies on an unerased
model). With several templates, seed ``k`` of a pair uses template ``k mod len(templates)``, so every template is
used equally often without multiplying the number of images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...minicanvas.data import caption


def fidelity(
    handle,
    style_classifier,
    object_classifier,
    styles: Sequence[str],
    objects: Sequence[str],
    templates: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    guidance: float,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[dict, torch.Tensor]:
    """Sample every (style, object) pair with every seed and score style and object agreement.

    Args:
        handle: a :class:`erasekit.models.DiffusionHandle`.
        style_classifier, object_classifier: :class:`ImageClassifier` judges (labels cover ``styles``/``objects``).
        templates: caption templates; seed ``k`` uses ``templates[k % len(templates)]``.
        seeds: sampling seeds (each image's noise depends only on its seed).
        steps, guidance: sampler settings.

    Returns:
        ``(result, images)``: overall and per-class agreement, and the images ``[pairs * seeds, 3, H, W]`` in
        ``[0, 1]``, ordered pair-major (style, then object, then seed).

    Example:
        >>> result, images = fidelity(handle, s_clf, o_clf, STYLES, OBJECTS, [UNLEARNCANVAS_TEMPLATE], [0, 1], 25, 7.5)
        >>> result["style_agreement"], result["object_agreement"]
    """
    from erasekit.sampling import generate_grid

    pairs = [(s, o) for s in styles for o in objects]
    per_seed = []
    for k, seed in enumerate(seeds):
        prompts = [caption(s, o, templates[k % len(templates)]) for s, o in pairs]
        per_seed.append(generate_grid(handle, prompts, [seed], steps, guidance, batch_size, progress=progress))
    images = torch.stack(per_seed, dim=1).flatten(0, 1)  # pair-major
    style_pred = style_classifier.predict(images)
    object_pred = object_classifier.predict(images)
    truth = [p for p in pairs for _ in seeds]
    style_hit = [pred == s for pred, (s, _) in zip(style_pred, truth, strict=True)]
    object_hit = [pred == o for pred, (_, o) in zip(object_pred, truth, strict=True)]
    result = {
        "images": len(images),
        "style_agreement": _mean(style_hit),
        "object_agreement": _mean(object_hit),
        "per_style": {s: _mean([h for h, (ts, _) in zip(style_hit, truth, strict=True) if ts == s]) for s in styles},
        "per_object": {
            o: _mean([h for h, (_, to) in zip(object_hit, truth, strict=True) if to == o]) for o in objects
        },
        "per_seed": {  # one starting noise per seed, shared by every prompt: how much the luck of the draw matters
            str(seed): {
                "style": _mean(style_hit[k :: len(seeds)]),
                "object": _mean(object_hit[k :: len(seeds)]),
            }
            for k, seed in enumerate(seeds)
        },
        "confusions": _confusions(style_pred, object_pred, truth),
    }
    return result, images


def _mean(hits: Sequence[bool]) -> float:
    return round(sum(hits) / len(hits), 4) if hits else float("nan")


def _confusions(style_pred, object_pred, truth, top: int = 10) -> list[str]:
    """The most frequent mistakes, as ``"style Sketch -> Ink: 3"`` lines."""
    counts: dict[str, int] = {}
    for sp, op, (s, o) in zip(style_pred, object_pred, truth, strict=True):
        if sp != s:
            counts[f"style {s} -> {sp}"] = counts.get(f"style {s} -> {sp}", 0) + 1
        if op != o:
            counts[f"object {o} -> {op}"] = counts.get(f"object {o} -> {op}", 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [f"{k}: {v}" for k, v in ranked]
