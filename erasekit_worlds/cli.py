"""``erasekit world``: train a world's models from scratch (optionally without a concept), or verify a world folder."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from erasekit.cli.common import subparser

logger = logging.getLogger(__name__)

NAME = "world"  # the subcommand this module adds (erasekit.plugins.register_command)
WORLDS = ("minicanvas", "minifaces")

EXAMPLES = """  erasekit world train minicanvas --out worlds/minicanvas --seed 0 --work worlds/minicanvas.work   # resumable
  erasekit world train minicanvas --exclude style:Ink --out worlds/no_ink      # the retrained-without gold standard
  erasekit world train minicanvas --quick --out /tmp/smoke                     # seconds; untrained smoke run
  erasekit world train minicanvas --out worlds/v2 --reuse worlds/minicanvas    # retrain only what changed
  erasekit world train minicanvas --exclude style:Ink --exclude-from unet --reuse erasekit_worlds/minicanvas/weights \
      --out worlds/no_ink_unet           # UnlearnCanvas's gold standard: only the UNet retrained without the style
  erasekit world verify minicanvas                                             # shipped weights vs their manifest
  erasekit world verify minicanvas worlds/no_ink
  erasekit world train minifaces --out worlds/minifaces --seed 0 --work worlds/minifaces.work   # resumable
  erasekit world train minifaces --out worlds/faces_v2 --gan-steps 30000 --reuse erasekit_worlds/minifaces/weights \
      --work worlds/faces_v2.work        # keep the classifier and CLIP, retrain only the generator, longer
  erasekit world train minifaces --out worlds/faces_v3 --reuse erasekit_worlds/minifaces/weights \
      --gan-from erasekit_worlds/minifaces/weights --gan-steps 10000 --set gan.lr=0.003 \
      --work worlds/faces_v3.work        # continue the shipped generator for 10,000 more steps
  erasekit world train minifaces --out worlds/faces_v4 --reuse erasekit_worlds/minifaces/weights \
      --gan-from erasekit_worlds/minifaces/weights --gan-steps 8000 --set gan.pair_distance=mse \
      --set 'gan.flip_weights={earrings: 4, glasses: 2, hat: 2}'   # teach the attributes it draws least
  erasekit world train minifaces --exclude glasses --out worlds/faces_no_glasses   # gold standard for faces
  erasekit world train minifaces --quick --out /tmp/faces_smoke
  erasekit world verify minifaces worlds/minifaces
"""


def add_parser(sub) -> None:
    p = subparser(
        sub,
        "world",
        "train a world's models from scratch, or verify a world folder",
        "MiniCanvas: train CLIP, the Stable Diffusion pipeline and the evaluator classifiers with one seeded recipe "
        "(optionally without some styles/objects: the retrained-without-the-concept gold standard). MiniFaces: "
        "train the StyleGAN2, the attribute classifier and the world's CLIP (optionally without an attribute). Or "
        "check a world folder's files against its manifest.",
        EXAMPLES,
    )
    actions = p.add_subparsers(dest="world_action", metavar="ACTION")
    train = actions.add_parser(
        "train",
        help="retrain every model of a world from scratch",
        description="Retrain every model of a world from scratch, deterministic from --seed; writes DIR atomically.",
        epilog="examples:\n" + "\n".join(line for line in EXAMPLES.splitlines() if " train " in line) + "\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("world", choices=WORLDS, help="which world (minicanvas or minifaces)")
    train.add_argument("--out", required=True, help="output world folder (models, clip/, classifiers, manifest)")
    train.add_argument(
        "--exclude",
        action="extend",
        nargs="+",
        default=[],
        metavar="CONCEPT",
        help="leave a concept out of training (repeatable): minicanvas style:Ink or object:apple (CLIP/VAE/UNet); "
        "minifaces an attribute such as glasses or hair:red (CLIP and StyleGAN2)",
    )
    train.add_argument("--seed", type=int, default=0, help="the recipe's seed (default 0, the shipped world)")
    train.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ... (default auto)"
    )
    train.add_argument("--quick", action="store_true", help="tiny step counts: a seconds-long smoke run")
    train.add_argument("--overwrite", action="store_true", help="replace --out if it exists and is not empty")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    train.add_argument(
        "--reuse",
        default=None,
        metavar="DIR",
        help="copy the stages of an earlier world folder where their settings match this run's (same seed, "
        "exclusions, data and stage config) instead of retraining them: minicanvas classifiers, CLIP, VAE, UNet; "
        "minifaces classifier, CLIP, generator",
    )
    train.add_argument(
        "--gan-steps",
        type=int,
        default=None,
        metavar="N",
        help="minifaces: the generator's optimiser steps (default 30000: about 3.3 h on 2 CPU cores)",
    )
    train.add_argument(
        "--gan-from",
        default=None,
        metavar="DIR",
        help="minifaces: start the generator from this world folder's generator instead of from scratch and train "
        "--gan-steps more steps on a fresh schedule (same architecture and exclusions required); the manifest "
        "records it and the steps behind it",
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="minifaces: change one recipe setting (repeatable; values read as YAML), e.g. gan.lr=0.003, "
        "gan.pair_weight=1.0, 'gan.flip_weights={earrings: 4}', check_samples=500; see RecipeConfig and its "
        "sections classifier, clip, clip_tune, gan",
    )
    train.add_argument(
        "--work",
        default=None,
        metavar="DIR",
        help="keep finished stages here, with the checkpoints (every 500 steps) of the long one (the minicanvas "
        "UNet, the minifaces generator); the same command run again after an interruption resumes where it "
        "stopped, with the same result",
    )
    train.add_argument(
        "--exclude-from",
        nargs="+",
        choices=("clip", "vae", "unet"),
        default=None,
        metavar="STAGE",
        help="minicanvas: the stages --exclude applies to, among clip, vae, unet (default all three; unet required). "
        "'--exclude-from unet' is UnlearnCanvas's gold standard: CLIP and VAE saw everything (with --reuse they are "
        "copied from the full world), the UNet is retrained without the concept",
    )
    verify = actions.add_parser(
        "verify",
        help="check a world folder's files against its manifest",
        description="Check every file of a world folder against the sha256 and size in its manifest.json.",
        epilog="examples:\n" + "\n".join(line for line in EXAMPLES.splitlines() if " verify " in line) + "\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("world", choices=WORLDS, help="which world (minicanvas or minifaces)")
    verify.add_argument("dir", nargs="?", default=None, help="world folder (default: the shipped weights)")
    p.set_defaults(run=run, world_parser=p)


def run(args) -> int:
    """Dispatch ``world train`` / ``world verify``; returns the exit code."""
    if getattr(args, "world_action", None) == "train":
        return _train(args)
    if getattr(args, "world_action", None) == "verify":
        return _verify(args)
    args.world_parser.print_help()
    return 2


def _train(args) -> int:
    import torch

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.world == "minifaces":
        from .recipes.minifaces.recipe import check_exclude as check_faces

        check_faces(args.exclude)  # typos fail here, before anything is rendered
        if args.exclude_from:
            raise ValueError("--exclude-from is for minicanvas worlds; minifaces excludes from the CLIP and the GAN")
        if args.gan_steps is not None and args.gan_steps < 1:
            raise ValueError(f"--gan-steps must be >= 1, got {args.gan_steps}")
        if args.threads:
            torch.set_num_threads(args.threads)
        return _train_faces(args)
    from .recipes.minicanvas.recipe import check_exclude, check_exclude_from, train_world

    if args.gan_steps is not None or args.gan_from is not None:
        raise ValueError("--gan-steps and --gan-from are for minifaces worlds (minicanvas has no GAN)")
    if args.overrides:
        raise ValueError("--set is for minifaces worlds; minicanvas's recipe settings are changed from Python")
    check_exclude(args.exclude)  # typos fail here, before anything is rendered
    check_exclude_from(args.exclude_from)
    if args.exclude_from and not args.exclude:
        raise ValueError("--exclude-from says which stages --exclude applies to; give --exclude too")
    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = train_world(
        args.out,
        exclude=args.exclude,
        seed=args.seed,
        device=args.device,
        quick=args.quick,
        overwrite=args.overwrite,
        reuse=args.reuse,
        exclude_from=args.exclude_from,
        work=args.work,
    )
    m = _print_written(args, manifest)
    print(
        f"classifiers {m['classifiers']['style_accuracy']:.3f} / {m['classifiers']['object_accuracy']:.3f}, "
        f"CLIP zero-shot {m['clip']['style_accuracy_heldout_templates']:.3f} / "
        f"{m['clip']['object_accuracy_heldout_templates']:.3f}, "
        f"fidelity {m['fidelity']['style_agreement']:.3f} / {m['fidelity']['object_agreement']:.3f} (style / object)"
    )
    if manifest["quick"]:
        print("(--quick: the models are barely trained; the numbers above are meaningless)")
    return 0


def _print_written(args, manifest: dict) -> dict:
    """Say what was written and what was reused; returns the manifest's metrics."""
    print(f"wrote {args.out}: {manifest['total_bytes'] / 1e6:.1f} MB in {manifest['total_seconds'] / 60:.1f} min")
    if manifest["reused"]:
        print(
            f"copied from {args.reuse}: {', '.join(manifest['reused'])}; the whole recipe from scratch: "
            f"{manifest['full_recipe_seconds'] / 60:.1f} min"
        )
    return manifest["metrics"]


def _train_faces(args) -> int:
    from dataclasses import replace

    from .recipes.framework import apply_overrides
    from .recipes.minifaces.recipe import RecipeConfig, quick_config, train_world

    cfg = apply_overrides(quick_config() if args.quick else RecipeConfig(), args.overrides)
    if args.gan_steps is not None:
        cfg.gan = replace(cfg.gan, steps=args.gan_steps)
    manifest = train_world(
        args.out,
        seed=args.seed,
        device=args.device,
        overwrite=args.overwrite,
        config=cfg,
        exclude=args.exclude,
        work=args.work,
        reuse=args.reuse,
        gan_from=args.gan_from,
    )
    m = _print_written(args, manifest)
    continued = manifest["stages"]["gan"].get("continued_from")
    if continued:
        print(
            f"generator continued from {continued['world']} ({continued['steps']} steps): "
            f"{manifest['stages']['gan']['total_steps']} steps in all"
        )
    print(
        f"classifier min accuracy {m['classifier']['min_accuracy']:.3f}, CLIP zero-shot min "
        f"{m['clip']['min_binary_accuracy']:.3f}, generator: max attribute frequency gap "
        f"{m['generator']['max_frequency_difference_points']:.1f} points, "
        f"CLIP-space FID {m['generator']['fid_clip']:.3g}"
    )
    if manifest["quick"]:
        print("(--quick: the models are barely trained; the numbers above are meaningless)")
    return 0


def _verify(args) -> int:
    if args.world == "minifaces":
        from .minifaces.manifest import verify_manifest, weights_dir
    else:
        from .minicanvas.manifest import verify_manifest, weights_dir

    directory = Path(args.dir) if args.dir else weights_dir()
    problems = verify_manifest(directory)
    for line in problems:
        print(line)
    print(f"{directory}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 0 if not problems else 1
