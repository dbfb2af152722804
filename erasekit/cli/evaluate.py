"""``erasekit eval``: score a (patched) model the UnlearnCanvas way and write the report."""

from __future__ import annotations

from .common import add_model_args, check_output, load_handle, load_patches, parse_seeds, subparser

EXAMPLES = """  erasekit eval --model minicanvas --patch p.safetensors --suite minicanvas --target style:Watercolor --json r.json --grid g.png
  erasekit eval --model minicanvas --json base.json             # no target: every class of the unpatched model
  erasekit eval --model local:/models/sd15 --patch vg.safetensors --suite unlearncanvas --data /data/UnlearnCanvas \\
      --classifiers /data/uc_classifiers --clip /models/clip-vit-large --target style:Van_Gogh --json r.json
  erasekit eval --model minifaces --suite minifaces --patch no_glasses.safetensors --target glasses --seeds 0-999 \
      --json faces.json --grid faces.png                     # StyleGAN2: attribute rates, drift, FID, gamma
"""


def add_parser(sub) -> None:
    p = subparser(
        sub,
        "eval",
        "evaluate removal and retainability (UA/IRA/CRA, CLIP, FID)",
        "Generate a suite's full prompt grid with fixed seeds, classify every image and score it.",
        EXAMPLES,
    )
    add_model_args(p)
    p.add_argument("--patch", action="append", help="patch file to evaluate (repeat to compose)")
    p.add_argument("--scale", type=float, default=1.0, help="patch strength (default 1)")
    p.add_argument("--force", action="store_true", help="apply patches even if the base-model fingerprint differs")
    p.add_argument("--suite", default="minicanvas", help="minicanvas (default), unlearncanvas or minifaces")
    p.add_argument(
        "--target",
        help="style:NAME or object:NAME (omit to score the model on every class); minifaces: attribute(s), "
        "e.g. glasses or 'glasses, beard'",
    )
    p.add_argument("--seeds", default="0-3", help="seed list or range (default 0-3)")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance (default 7.5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--metrics", help="comma-separated metric names (default: all that apply)")
    p.add_argument("--no-heldout", action="store_true", help="skip UA on held-out caption templates")
    p.add_argument("--fid-features", choices=("clip", "inception"), help="FID feature space (default clip if any)")
    p.add_argument("--json", required=True, help="output report (JSON)")
    p.add_argument("--markdown", help="also write the Markdown table here")
    p.add_argument("--grid", help="also write the image grid (PNG) here")
    g = p.add_argument_group("suite data")
    g.add_argument(
        "--world", help="minicanvas/minifaces: a world folder from `erasekit world train` (default: the model's)"
    )
    g.add_argument("--no-fid", action="store_true", help="minifaces: skip FID (faster)")
    g.add_argument("--data", help="unlearncanvas: the dataset folder (<Style>/<object>/<idx>.jpg)")
    g.add_argument("--classifiers", help="unlearncanvas: folder with style/object classifier checkpoints")
    g.add_argument(
        "--clip",
        help="unlearncanvas: a local transformers CLIP folder, or open_clip:ARCH@CHECKPOINT "
        "(for CLIP metrics and FID)",
    )
    g.add_argument("--classifier-arch", default="vit_large_patch16_224", help="timm architecture of the classifiers")
    p.set_defaults(run=run)


def _suite_kwargs(args) -> dict:
    if args.suite == "unlearncanvas":
        if not (args.data and args.classifiers):
            raise ValueError("--suite unlearncanvas needs --data DIR and --classifiers DIR.")
        return {
            "data_dir": args.data,
            "classifiers_dir": args.classifiers,
            "clip_dir": args.clip,
            "arch": args.classifier_arch,
            "trust_pickle": args.trust_pickle,
        }
    if args.world:
        return {"world_dir": args.world}
    from ..plugins import world_of_spec

    found = world_of_spec(str(args.model))  # default: the folder of the world the model came from
    return {"world_dir": found[1]} if found is not None and found[0].suite == args.suite else {}


def _run_gan(args, suite) -> int:
    """A StyleGAN2 suite: attribute rates before/after, drift, CLIP-space FID and γ (:func:`erasekit.eval.evaluate_gan`)."""
    from ..eval.gan import evaluate_gan

    if not args.target:
        raise ValueError(f"--suite {args.suite} needs --target: the erased attribute(s), e.g. --target glasses.")
    suite.parse_targets(args.target)  # validated before the model loads
    handle = load_handle(args)
    report = evaluate_gan(
        handle,
        load_patches(args.patch),
        args.target,
        suite=suite,
        seeds=parse_seeds(args.seeds),
        batch_size=args.batch_size,
        fid=not args.no_fid,
        scale=args.scale,
        check_fingerprint=not args.force,
    )
    report.save_json(args.json)
    if args.markdown:
        report.save_markdown(args.markdown)
    if args.grid:
        report.save_grid(args.grid)
    print(report.to_markdown())
    return 0


def run(args) -> int:
    from ..eval import GanSuite, evaluate, get_suite

    for option in ("json", "markdown", "grid"):
        check_output(getattr(args, option), "--" + option)
    suite = get_suite(args.suite, **_suite_kwargs(args))
    if isinstance(suite, GanSuite):
        return _run_gan(args, suite)
    target = suite.parse_target(args.target)  # validated before the model loads
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    handle = load_handle(args)
    report = evaluate(
        handle,
        suite,
        target,
        patch=load_patches(args.patch),
        seeds=parse_seeds(args.seeds),
        steps=args.steps,
        guidance=args.guidance,
        batch_size=args.batch_size,
        metrics=metrics,
        heldout=not args.no_heldout,
        fid_features=args.fid_features,
        scale=args.scale,
        check_fingerprint=not args.force,
    )
    from .. import distributed

    if not distributed.is_main():  # data parallel: sampling was sharded; one process writes the report
        return 0
    report.save_json(args.json)
    if args.markdown:
        report.save_markdown(args.markdown)
    if args.grid:
        report.save_grid(args.grid)
    print(report.to_markdown())
    return 0
