"""Which parameters an erasure may change: named presets and regular expressions over ``"<component>.<name>"``.

A target spec is a preset name (``"xattn"``), a regex prefixed with ``re:`` (``"re:unet\\..*attn2\\.to_k\\.weight"``),
a list of those, where an item starting with ``-`` removes what it matches (``["unet", "-xattn"]``).
Regexes use ``re.fullmatch``. A spec that selects nothing is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_XATTN = r"unet\..*\.attn2\..*"
_JOINT = r"transformer\.transformer_blocks\.\d+\.attn\."  # SD3's joint attention (attn2 there is image-only)
PRESETS: dict[str, dict[str, tuple[str, str]]] = {
    # kind -> preset -> (regex over "<component>.<name>", description). The diffusion presets name roles: "xattn"
    # is the attention that reads the prompt (UNet cross-attention; SD3's joint attention), "unet" the denoiser.
    "diffusion": {
        "xattn": (
            f"{_XATTN}|{_JOINT}.*",
            "cross-attention (attn2: q, k, v, out) of the UNet; on SD3 the joint attention, both streams; ESD-x's set",
        ),
        "xattn_kv": (
            r"unet\..*\.attn2\.to_[kv]\.weight",
            "UNet cross-attention key/value projections (UCE's set; SD3's MMDiT has no cross-attention)",
        ),
        "xattn_out": (r"unet\..*\.attn2\.to_out\..*", "UNet cross-attention output projections"),
        "selfattn": (r"unet\..*\.attn1\..*", "UNet self-attention"),
        "non_xattn": (
            r"unet\.(?!.*\.attn2\.)(?!time_embedding\.)(?!conv_out\.)(?!conv_norm_out\.).*"
            r"|transformer\.(?!transformer_blocks\.\d+\.attn\.)(?!time_text_embed\.)(?!norm_out\.)(?!proj_out\.).*",
            "the UNet without cross-attention, time embedding and output layers (SD3: the transformer without joint "
            "attention, time/pooled-text embedding and output layers); ESD-u's set",
        ),
        "unet": (r"unet\..*|transformer\..*", "every parameter of the denoiser (the UNet; SD3's transformer)"),
        "text_encoder": (r"text_encoder\..*", "every parameter of the (first) text encoder"),
        "text_encoder_2": (r"text_encoder_2\..*", "every parameter of SDXL's / SD3's second text encoder"),
        "text_encoders": (r"text_encoder(_\d)?\..*", "every text encoder (SD3: both CLIPs and T5)"),
        "text_encoder_attn": (r"text_encoder(_2)?\..*\.self_attn\..*", "the CLIP text encoders' self-attention"),
        "added_cond": (r"unet\.add_embedding\..*", "SDXL's added embedding of the pooled text and the time ids"),
        "transformer": (r"transformer\..*", "every parameter of SD3's transformer"),
        "joint_attn": (f"{_JOINT}.*", "SD3 joint attention, both streams (the authors' ESD-x set on SD3)"),
        "joint_attn_text": (
            rf"{_JOINT}(add_[qkv]_proj|to_add_out|norm_added_[qk])\..*",
            "SD3 joint attention's text-stream projections (add_q/k/v_proj, to_add_out)",
        ),
        "joint_attn_text_kv": (rf"{_JOINT}add_[kv]_proj\.weight", "SD3 joint attention's text key/value projections"),
        "joint_attn_image": (
            rf"{_JOINT}(to_[qkv]|to_out\.0|norm_[qk])\..*",
            "SD3 joint attention's image-stream projections (to_q/k/v, to_out)",
        ),
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
        raise ValueError(
            f"Target {items} matches no parameter of this model. Parameter names look like: {examples}."
            + _preset_hint(items, names, kind)
        )
    return chosen


def _preset_hint(items: list[str], names: list[str], kind: str) -> str:
    """What the named presets are and which presets do select parameters of this model (another architecture's
    preset is the usual cause: SD3 has no UNet cross-attention)."""
    presets = PRESETS[kind]
    named = [f"{i!r} is {presets[i][1]}" for i in items if i in presets]
    fitting = [p for p, (regex, _) in presets.items() if any(re.fullmatch(regex, n) for n in names)]
    hint = f" ({'; '.join(named)})" if named else ""
    return hint + (f" Presets that select parameters of this model: {', '.join(fitting)}." if fitting else "")
