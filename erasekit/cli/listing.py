"""``erasekit list``: methods, their options, target presets and built-in models."""

from __future__ import annotations

from .common import subparser

EXAMPLES = """  erasekit list
  erasekit list salun        # the options of one method: paper defaults, and each world's preset
  erasekit list salun --all  # also the advanced (experimental) options
  erasekit list esd --yaml > my_esd.yaml   # a config file to edit, for erase --config
"""


def add_parser(sub) -> None:
    p = subparser(
        sub,
        "list",
        "list methods, target presets and models",
        "List registered methods, parameter target presets and built-in model specs.",
        EXAMPLES,
    )
    p.add_argument("method", nargs="?", help="show this method's options")
    p.add_argument("--yaml", action="store_true", help="print the method's defaults as a commented YAML config")
    p.add_argument("--all", action="store_true", help="also show the advanced (experimental) options")
    p.set_defaults(run=run)


def _method(cls, show_all: bool) -> str:
    """A method's options (paper defaults, the preset values beside them) and the presets of every world."""
    from ..plugins import list_worlds
    from ..presets import world_presets

    cfg = cls.config_class
    lines = [f"{cls.name}: {cls.summary}"]
    presets = [p for w in list_worlds() for m, p in world_presets(w).items() if m == cls.name]
    values = {}
    for preset in presets:
        for kind, section in [(None, preset.options), *preset.by_kind.items()]:
            for key, value in section.items():
                label = preset.name.split("/")[0] + (f" {kind}" if kind else "")
                values.setdefault(key, []).append(f"{label}: {value!r}")
    lines.append("options (--set KEY=VALUE); defaults are the paper's settings for full-size models:")
    lines.append(cfg.help_text(advanced=show_all, preset={k: "; ".join(v) for k, v in values.items()}))
    hidden = len(cfg.fields_of(True)) - len(cfg.fields_of(False))
    if hidden and not show_all:
        lines.append(f"  ... and {hidden} advanced options (erasekit list {cls.name} --all)")
    if cls.name in ("salun", "doco", "esd", "text_to_unlearn"):
        lines.append(
            "training options are shared by the loop-based methods; run options (--set, never saved in the "
            "patch): " + ", ".join(_run_fields())
        )
    lines.append("presets (selected automatically on their world's model; --preset NAME|PATH|none):")
    if not presets:
        lines.append("  none")
    for preset in presets:
        lines.append(f"  {preset.name}: {preset.description}")
        shared = ", ".join(f"{k}={v!r}" for k, v in preset.options.items()) or "-"
        lines.append(f"      {shared}")
        for kind, extra in preset.by_kind.items():
            lines.append(f"      {kind}: " + (", ".join(f"{k}={v!r}" for k, v in extra.items()) or "-"))
        if preset.plan:
            lines.append("      plus the world's prompt lists for its targets (plan)")
    return "\n".join(lines)


def _run_fields() -> list[str]:
    from ..methods.config import RUN_FIELDS

    return list(RUN_FIELDS)


def run(args) -> int:
    from ..methods import get_method, list_methods
    from ..models.specs import builtin_specs
    from ..patch.targets import PRESETS, describe_presets

    if args.method:
        cls = get_method(args.method)
        if args.yaml:
            print(cls.config_class.commented_yaml(cls.name, advanced=args.all), end="")
            return 0
        print(_method(cls, args.all))
        return 0
    print("methods:")
    for name in list_methods():
        print(f"  {name:18s} {get_method(name).summary}")
    for kind in PRESETS:
        print(f"target presets ({kind}):\n{describe_presets(kind)}")
    print("models:")
    for name, desc in builtin_specs().items():
        print(f"  {name:18s} {desc}")
    print("  local:/path        a diffusers pipeline folder")
    return 0
