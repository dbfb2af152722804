"""How to phrase a MiniCanvas target for each erasure method: the concept, the anchor and the world's prompt lists.

The benchmark, the quickstart and the demo erase ``style:NAME`` / ``object:NAME`` targets the same way:

- a style is erased as ``"NAME style"`` towards the world's plain ``"Photo style"``; an object as ``"NAME"``
  towards ``"an image"``;
- methods that take prompt lists get the target in every context of the world (the UnlearnCanvas template over
  every object, or every style), so the erasure covers the whole class: SalUn's forget prompts, each paired with
  the anchor prompt of the same object (or style) as its misaligned prompt, and the rest of the world as its retain
  prompts; DoCo's concept prompts paired with anchor prompts of the same object (or style), and for a style
  the rest of the world as its retain prompts (the prior loss then keeps the other styles; on objects they held
  the erasure back, docs/methods.md); UCE's preserved classes; ESD takes its variant from the kind (``x`` for
  styles, ``u`` for objects).

Only prompts and the concept kind are set; every hyperparameter stays at the method's default.

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


def erasure_plan(method: str, target: str, phrases: dict | None = None) -> tuple[str, str | None, dict]:
    """``(concept, anchor, config overrides)`` for erasing ``target`` with ``method`` on a MiniCanvas world.

    ``phrases`` overrides entries of :data:`PHRASES` (format fields ``{name}`` and ``{style}``).
    """
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
        "doco": {"concept_kind": kind, "concept_prompts": forget, "anchor_prompts": anchors}
        | ({"retain_prompts": retain} if kind == "style" else {}),  # objects: the paper's prior (docs/methods.md)
        "esd": {"variant": "x" if kind == "style" else "u"},
        "uce": {"preserve": preserve},
    }
    return concept, anchor, dict(plans.get(method, {}))
