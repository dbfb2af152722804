"""How to phrase a MiniCanvas target for each erasure method: the concept, the anchor and the world's prompt lists.

The benchmark, the quickstart and the demo erase ``style:NAME`` / ``object:NAME`` targets the same way:

- a style is erased as ``"NAME style"`` towards the world's plain ``"Photo style"``; an object as ``"NAME"``
  towards ``"an image"``;
- methods that take prompt lists get the target in every context of the world (the UnlearnCanvas template over
  every object, or every style), so the erasure covers the whole class: SalUn's forget prompts, each paired with
  the anchor prompt of the same object (or style) as its misaligned prompt, and the rest of the world as its retain
  prompts; DoCo's concept prompts paired with anchor prompts of the same object (or style), and the rest of the
  world as its retain prompts (the DoCo preset drops them for objects, where they held the erasure back,
  docs/methods.md); UCE's preserved classes.

Only prompts, the anchor and the concept kind are set here; hyperparameters, per-kind ones included (ESD's variant,
DoCo's style settings), live in the world's presets (``erasekit_worlds/minicanvas/presets/``), which apply this plan
(``plan: true``). Several targets of one kind erased together get the forget and concept prompts of all of them,
paired as for one, and only the classes none of them names as retain prompts and preserved concepts.

Example:
    >>> concept, anchor, overrides = erasure_plan("salun", "style:Ink")
    >>> patch = erasekit.erase("minicanvas", "salun", concept, anchor=anchor, **overrides)
"""

from __future__ import annotations

from .data import OBJECTS, PHOTO, STYLES, UNLEARNCANVAS_TEMPLATE, caption, resolve_object, resolve_style

PHRASES = {
    "style_concept": "{name} style",
    "style_anchor": f"{PHOTO} style",
    "object_concept": "{name}",
    "object_anchor": "an image",
    "object_anchor_prompt": "An image in {style} style.",
}


def parse_target(target: str) -> tuple[str, str]:
    """``"style:ink"`` -> ``("style", "Ink")`` (names resolved case-insensitively; unknown names list the valid)."""
    kind, sep, name = str(target).partition(":")
    if not sep or kind not in ("style", "object"):
        raise ValueError(f"A MiniCanvas target is 'style:NAME' or 'object:NAME', got {target!r}.")
    return kind, resolve_style(name) if kind == "style" else resolve_object(name)


def target_of(concept: str, phrases: dict | None = None) -> str | None:
    """The target a concept phrased as :func:`erasure_plan` phrases it names: ``"Ink style"`` -> ``"style:Ink"``,
    ``"apple"`` -> ``"object:apple"`` (case-insensitive); ``None`` for anything else.

    Example:
        >>> target_of("mosaic style"), target_of("apple"), target_of("a red car")
        ('style:Mosaic', 'object:apple', None)
    """
    phr = {**PHRASES, **(phrases or {})}
    text = " ".join(str(concept).split()).lower()
    for style in STYLES:
        if text == phr["style_concept"].format(name=style).lower():
            return f"style:{style}"
    for obj in OBJECTS:
        if text == phr["object_concept"].format(name=obj).lower():
            return f"object:{obj}"
    return None


def erasure_plan(
    method: str, target: str | list[str], phrases: dict | None = None
) -> tuple[str | list[str], str | None, dict]:
    """``(concept, anchor, config overrides)`` for erasing ``target`` with ``method`` on a MiniCanvas world; for a
    list of targets of one kind, erased together, the concept is the list of their concepts.

    ``phrases`` overrides entries of :data:`PHRASES` (format fields ``{name}`` and ``{style}``).
    """
    if not isinstance(target, str):
        return _joint_plan(method, list(target), phrases)
    return _plan(method, target, phrases)


def _joint_plan(method: str, targets: list[str], phrases: dict | None) -> tuple[list[str], str | None, dict]:
    """Several targets of one kind: forget-side lists interleaved (target 1's first prompt, target 2's first, ...;
    pairs kept), so samples drawn in turn cover every target; retain-side lists narrowed to the classes none of the
    targets names."""
    parsed = [parse_target(t) for t in targets]
    if len({kind for kind, _ in parsed}) != 1:
        raise ValueError(f"Targets erased together must be of one kind (styles or objects), got {targets}.")
    plans = [_plan(method, f"{kind}:{name}", phrases) for kind, name in parsed]
    names = {name for _, name in parsed}
    concepts = [concept for concept, _, _ in plans]
    anchor = plans[0][1]
    merged: dict = {}
    for key in plans[0][2]:
        values = [extra[key] for _, _, extra in plans]
        if key in ("forget_prompts", "misaligned_prompts", "concept_prompts", "anchor_prompts"):
            merged[key] = [v for group in zip(*values, strict=True) for v in group]  # interleaved: samples in turn
        elif key in ("retain_prompts", "preserve"):
            merged[key] = [v for v in values[0] if not any(_names(v, n) for n in names)]
        else:
            merged[key] = values[0]
    return concepts, anchor, merged


def _names(prompt: str, name: str) -> bool:
    """Whether ``prompt`` names the class ``name`` as a whole word (so "Ink" does not match "Pink")."""
    import re

    return re.search(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z])", prompt, re.IGNORECASE) is not None


def _plan(method: str, target: str, phrases: dict | None = None) -> tuple[str, str | None, dict]:
    """One target's plan (see :func:`erasure_plan`)."""
    kind, name = parse_target(target)
    phr = {**PHRASES, **(phrases or {})}
    if kind == "style":
        concept = phr["style_concept"].format(name=name)
        forget = [caption(name, o, UNLEARNCANVAS_TEMPLATE) for o in OBJECTS]
        if name != PHOTO:  # towards the plain style, the same object
            anchor = phr["style_anchor"]
            anchors = [caption(PHOTO, o, UNLEARNCANVAS_TEMPLATE) for o in OBJECTS]
        else:  # erasing the plain style itself: towards the object without a style
            anchor, anchors = "an image", [f"A {o} image." for o in OBJECTS]
        retain = [caption(s, o, UNLEARNCANVAS_TEMPLATE) for s in STYLES if s != name for o in OBJECTS]
        preserve = [phr["style_concept"].format(name=s) for s in STYLES if s != name]
    else:
        concept, anchor = phr["object_concept"].format(name=name), phr["object_anchor"]
        forget = [caption(s, name, UNLEARNCANVAS_TEMPLATE) for s in STYLES]
        anchors = [phr["object_anchor_prompt"].format(style=s) for s in STYLES]
        retain = [caption(s, o, UNLEARNCANVAS_TEMPLATE) for s in STYLES for o in OBJECTS if o != name]
        preserve = [phr["object_concept"].format(name=o) for o in OBJECTS if o != name]
    plans = {
        "salun": {
            "forget_prompts": forget,
            "retain_prompts": retain,
            "misaligned_prompts": anchors,  # c' of each forget prompt: its own anchor context, not a random one
            "pair_misaligned": True,
        },
        "doco": {"concept_kind": kind, "concept_prompts": forget, "anchor_prompts": anchors, "retain_prompts": retain},
        "uce": {"preserve": preserve},
    }
    return concept, anchor, dict(plans.get(method, {}))
