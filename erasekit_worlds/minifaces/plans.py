"""How an erasure names a MiniFaces attribute: the world's targets, their kinds, and what each one becomes.

A binary attribute (``attribute:glasses``) is erased towards its absence, as the captions say it ("a face without
glasses"). A hair colour (``hair:black``) is a value of the hair, never absent: the world's captions never say
"without black hair", so its CLIP has no such text to aim at. It is erased towards the other colours instead, as a
group anchor (``"a face with brown hair | a face with blond hair | a face with red hair"``) that Text-to-Unlearn
reads as the options together.
"""

from __future__ import annotations

from collections.abc import Sequence

from .data import BINARY_ATTRIBUTES, HAIR_COLOURS, prompt_phrase, resolve_indicator


def target_of(concept: str) -> str | None:
    """The world's target a concept names, ``"attribute:NAME"`` or ``"hair:COLOUR"``, else ``None``.

    Example:
        >>> target_of("a smiling face"), target_of("blond hair"), target_of("a tree")
        ('attribute:smile', 'hair:blond', None)
    """
    try:
        name = resolve_indicator(concept)
    except ValueError:
        return None
    return f"hair:{name[len('hair_') :]}" if name.startswith("hair_") else f"attribute:{name}"


def erasure_plan(method: str, target: str | Sequence[str]) -> tuple[str, str | None, dict]:
    """``(concept, anchor, config overrides)`` erasing ``target`` (or several binary attributes at once).

    Example:
        >>> erasure_plan("text_to_unlearn", "hair:red")
        ('red hair', 'a face with black hair | a face with brown hair | a face with blond hair', {})
        >>> erasure_plan("text_to_unlearn", ["attribute:glasses", "attribute:beard"])
        ('glasses, beard', None, {})
    """
    targets = [target] if isinstance(target, str) else list(target)
    kinds = {t.partition(":")[0] for t in targets}
    names = [t.partition(":")[2] for t in targets]
    if "hair" in kinds:
        if len(targets) > 1:
            raise ValueError(
                "A hair colour is erased on its own (it becomes the other colours); erase it in its own run and the "
                "other attributes in another (a patch on a patch: --on PATCH)."
            )
        colour = names[0]
        if colour not in HAIR_COLOURS:
            raise ValueError(f"Unknown MiniFaces hair colour {colour!r}; use one of {', '.join(HAIR_COLOURS)}.")
        others = " | ".join(prompt_phrase(f"hair_{c}") for c in HAIR_COLOURS if c != colour)
        return f"{colour} hair", others, {}
    unknown = [n for n in names if n not in BINARY_ATTRIBUTES] + sorted(kinds - {"attribute"})
    if unknown:
        raise ValueError(f"Unknown MiniFaces target {unknown[0]!r}; use attribute:NAME or hair:COLOUR.")
    return ", ".join(names), None, {}
