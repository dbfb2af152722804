"""``erasekit attack``: how sure is the erasure? Run robustness attacks on a patch and write the report."""

from __future__ import annotations

from .common import add_model_args, check_output, load_handle, load_patches, parse_seeds, subparser

EXAMPLES = """  erasekit attack --model minicanvas --patch p.safetensors --suite minicanvas --target style:Watercolor --json r.json
  erasekit attack --model minicanvas --patch p.safetensors --target style:Ink --attacks relearn,prompt,quantize \\
      --gold worlds/no_ink --json r.json --markdown r.md --grid r.png
  erasekit attack ... --set relearn.schedule=[0,50] --set prompt.steps=40     # budgets of each attack
  erasekit attack --model minifaces --suite minifaces --patch no_glasses.safetensors --target glasses --json g.json
"""


def add_parser(sub) -> None:
    p = subparser(
        sub,
        "attack",
        "attack an erasure: relearning, adversarial prompts, inversion, quantization, probes",
        "Run robustness attacks on a patch; every attack is measured on the erased model, the unpatched base model "
        "and (with --gold) a model retrained without the concept.",
        EXAMPLES,
    )
    add_model_args(p)
    p.add_argument("--patch", action="append", required=True, help="patch file under attack (repeat to compose)")
    p.add_argument("--force", action="store_true", help="apply patches even if the base-model fingerprint differs")
    p.add_argument("--suite", default="minicanvas", help="the suite that judges the concept (default minicanvas)")
    p.add_argument("--target", required=True, help="style:NAME or object:NAME; minifaces: the attribute")
    p.add_argument("--attacks", help="comma-separated attack names (default: all that apply; see erasekit list)")
    p.add_argument("--gold", help="a model retrained without the concept (world folder or diffusers folder)")
    p.add_argument("--seeds", help="sampling seeds of every concept rate (default 0; minifaces 0-63)")
    p.add_argument("--steps", type=int, default=10, help="sampler steps of every generation (default 10)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance (default 7.5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--judge", choices=("classifier", "clip"), default="classifier", help="what decides the concept")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="ATTACK.KEY=VALUE",
        help="an attack's budget (repeatable), e.g. --set relearn.k=4 --set prompt.tokens=5",
    )
    p.add_argument("--world", help="minicanvas/minifaces: the world folder of the suite (default: the model's)")
    p.add_argument("--json", required=True, help="output report (JSON)")
    p.add_argument("--markdown", help="also write the Markdown summary here")
    p.add_argument("--grid", help="also write the grid of attacked generations (PNG) here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def parse_attack_overrides(items: list[str], names: list[str]) -> dict[str, dict]:
    """``["relearn.k=4", ...]`` -> ``{"relearn": {"k": 4}}`` (values read as YAML scalars); checked against the
    attacks' configs before any work."""
    from ..attacks import get_attack
    from ..methods.config import parse_override

    out: dict[str, dict] = {}
    for item in items:
        key, value = parse_override(item) if "=" in item else ("", None)
        name, dot, option = key.partition(".")
        if not dot or not option:
            raise ValueError(f"--set takes ATTACK.KEY=VALUE (e.g. relearn.k=4), got {item!r}.")
        if name not in names:
            raise ValueError(f"--set {item}: {name!r} is not among the attacks run ({', '.join(names)}).")
        out.setdefault(name, {})[option] = value
    for name, options in out.items():
        get_attack(name).config_class.from_dict(options)  # unknown keys and bad values fail here
    return out


def run(args) -> int:
    from ..attacks import attack, get_attack
    from ..attacks.api import DEFAULT_ATTACKS, GAN_ATTACKS
    from ..eval import GanSuite, get_suite
    from .evaluate import _suite_kwargs

    for option in ("json", "markdown", "grid"):
        check_output(getattr(args, option), "--" + option)
    suite = get_suite(args.suite, **_suite_kwargs(args))
    gan = isinstance(suite, GanSuite)
    if gan:
        suite.parse_targets(args.target)
    else:
        suite.parse_target(args.target)
    names = (
        [a.strip() for a in args.attacks.split(",") if a.strip()]
        if args.attacks
        else list(GAN_ATTACKS if gan else DEFAULT_ATTACKS)
    )
    for name in names:
        get_attack(name)
    configs = parse_attack_overrides(args.overrides, names)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    patch = load_patches(args.patch)
    handle = load_handle(args)
    report = attack(
        handle,
        patch,
        suite,
        args.target,
        names,
        seeds,
        gold=args.gold,
        configs=configs,
        steps=args.steps,
        guidance=args.guidance,
        batch_size=args.batch_size,
        judge=args.judge,
        check_fingerprint=not args.force,
        progress=not args.quiet,
    )
    report.save_json(args.json)
    if args.markdown:
        report.save_markdown(args.markdown)
    if args.grid:
        report.save_grid(args.grid)
    print(report.to_markdown())
    return 0
