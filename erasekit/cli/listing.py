"""``erasekit list``: methods, their options, target presets and built-in models."""

from __future__ import annotations

from .common import subparser

EXAMPLES = """  erasekit list
  erasekit list esd        # the options of one method
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
    p.set_defaults(run=run)


def run(args) -> int:
    from ..methods import get_method, list_methods
    from ..models.specs import builtin_specs
    from ..patch.targets import PRESETS, describe_presets

    if args.method:
        cls = get_method(args.method)
        if args.yaml:
            print(cls.config_class.commented_yaml(cls.name), end="")
            return 0
        print(f"{cls.name}: {cls.summary}\noptions (--set KEY=VALUE):\n{cls.config_class.help_text()}")
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
