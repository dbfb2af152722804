"""Which parameters an erasure may change: named presets and regular expressions over ``"<component>.<name>"``.

A target spec is a preset name (``"xattn"``), a regex prefixed with ``re:`` (``"re:unet\\..*attn2\\.to_k\\.weight"``),
a list of those, where an item starting with ``-`` removes what it matches (``["unet", "-xattn"]``).
Regexes use ``re.fullmatch``. A spec that selects nothing is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_XATTN = r"unet\..*\.attn2\..*"
PRESETS: dict[str, dict[str, tuple[str, str]]] = {
    # kind -> preset -> (regex over "<component>.<name>", description)
    "diffusion": {
        "xattn": (_XATTN, "UNet cross-attention (attn2: q, k, v, out); ESD-x's set"),
        "xattn_kv": (r"unet\..*\.attn2\.to_[kv]\.weight", "UNet cross-attention key/value projections (UCE's set)"),
        "xattn_out": (r"unet\..*\.attn2\.to_out\..*", "UNet cross-attention output projections"),
        "selfattn": (r"unet\..*\.attn1\..*", "UNet self-attention"),
        "non_xattn": (
            r"unet\.(?!.*\.attn2\.)(?!time_embedding\.)(?!conv_out\.)(?!conv_norm_out\.).*",
            "UNet without cross-attention, time embedding and output layers; ESD-u's set",
        ),
        "unet": (r"unet\..*", "every UNet parameter"),
        "text_encoder": (r"text_encoder\..*", "every text-encoder parameter"),
        "text_encoder_attn": (r"text_encoder\..*\.self_attn\..*", "text-encoder self-attention"),
    },
    "stylegan": {
        "synthesis_conv": (r"generator\.synthesis\.b\d+\.conv[01]\.weight", "synthesis convolution weights"),
        "synthesis": (r"generator\.synthesis\..*", "the whole synthesis network"),
        "torgb": (r"generator\.synthesis\..*torgb.*", "toRGB layers"),
        "mapping": (r"generator\.mapping\..*", "the mapping network"),
        "generator": (r"generator\..*", "every generator parameter"),
    },
}


def describe_presets(kind: str) -> str:
    """One line per preset of a model kind, for help texts and error messages."""
    return "\n".join(f"  {name:18s} {desc}" for name, (_, desc) in PRESETS[kind].items())


def _compile(item: str, kind: str) -> re.Pattern:
    if item.startswith("re:"):
        try:
            return re.compile(item[3:])
        except re.error as err:
            raise ValueError(f"Target regex {item[3:]!r} is invalid: {err}.") from err
    if item in PRESETS[kind]:
        return re.compile(PRESETS[kind][item][0])
    raise ValueError(
        f"Unknown target {item!r} for a {kind} model. Use a preset or 're:<regex>' over "
        f"'<component>.<parameter>' names. Presets:\n{describe_presets(kind)}"
    )


def resolve_targets(spec: str | Sequence[str], names: Iterable[str], kind: str = "diffusion") -> list[str]:
    """The parameter names (in model order) that ``spec`` selects among ``names``.

    Raises:
        ValueError: unknown preset, bad regex, or nothing matched (with examples of valid names).

    Example:
        >>> resolve_targets(["unet", "-xattn"], handle.named_parameters())
    """
    if kind not in PRESETS:
        raise ValueError(f"Unknown model kind {kind!r}; known: {sorted(PRESETS)}.")
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise ValueError("The target list is empty; name a preset such as 'xattn'.")
    names = list(names)
    include = [_compile(i, kind) for i in items if not i.startswith("-")]
    exclude = [_compile(i[1:], kind) for i in items if i.startswith("-")]
    if not include:
        raise ValueError(f"Target {items} only removes parameters; add a preset to start from, e.g. ['unet', ...].")
    chosen = [n for n in names if any(p.fullmatch(n) for p in include) and not any(p.fullmatch(n) for p in exclude)]
    if not chosen:
        examples = ", ".join(names[:3] + names[-2:])
        raise ValueError(f"Target {items} matches no parameter of this model. Parameter names look like: {examples}.")
    return chosen
