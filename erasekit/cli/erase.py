"""``erasekit erase``: run a method and write its patch."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .common import add_model_args, add_override_arg, add_preset_arg, check_output, load_handle, subparser

logger = logging.getLogger(__name__)

EXAMPLES = """  erasekit erase --model tiny-sd --method esd --concept "a cat" --set steps=2 --out p.safetensors
  erasekit erase --model local:/models/sd15 --method esd --concept "Van Gogh style" --set variant=x --out vg.safetensors
  erasekit erase --method esd --concept "a cat" --config configs/methods/esd.yaml --set lr=2e-5 --out p.safetensors
  erasekit erase --model sd15.safetensors --model-config /models/sd15 --method esd --concept "a cat" --out p.safetensors
  erasekit erase --model minicanvas --method salun --concept "Mosaic style" --out p.safetensors   # world preset
  erasekit erase --model minicanvas --method salun --concept "Ink style" --preset none --out p.safetensors
  erasekit erase --model minicanvas --method uce --concept "Ink style" --concept "Pixel style" --out two.safetensors
  erasekit erase --model minicanvas --method salun --concept "Ink style" --on two.safetensors --out three.safetensors
  erasekit erase ... --set checkpoint_every=100 --out p.safetensors   # then rerun with --resume after a crash
  accelerate launch --multi_gpu --num_processes 4 -m erasekit.cli.main erase ... --set batch_size=8 --out p.safetensors
  torchrun --nproc_per_node 2 -m erasekit.cli.main erase ... --out p.safetensors          # data parallel on CPUs
"""


def add_parser(sub) -> None:
    p = subparser(
        sub,
        "erase",
        "erase a concept and write a patch",
        "Erase a concept from a model with a method; writes one .safetensors patch.",
        EXAMPLES,
    )
    add_model_args(p)
    p.add_argument("--method", required=True, help="method name (see `erasekit list`)")
    p.add_argument(
        "--concept",
        action="append",
        default=[],
        help="the words to erase, e.g. 'Van Gogh style'; repeat to erase several concepts in one run (or give "
        "'concept: [A, B]' in the --config file)",
    )
    p.add_argument("--anchor", default=None, help="what the concept should become (methods that use one)")
    p.add_argument(
        "--config",
        default=None,
        help="YAML file of method options; a folder here is taken as --model-config (the architecture of a "
        "single-file checkpoint)",
    )
    add_override_arg(p)
    add_preset_arg(p)
    p.add_argument(
        "--on",
        default=None,
        metavar="PATCH",
        help="erase from the model with this earlier patch applied (a patch on a patch); the output holds both "
        "erasures, relative to the original model",
    )
    p.add_argument("--out", required=True, help="output patch file (.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.set_defaults(run=run)


def run(args) -> int:
    from .. import distributed
    from ..api import erase_resolved, read_config_source
    from ..methods import NonFiniteError
    from ..presets import resolve_erasure

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {out.name!r}.")
    check_output(args.out)
    if args.config and Path(args.config).is_dir():  # `--model x.safetensors --config DIR`: the architecture
        if args.model_config:
            raise ValueError("--config names a folder and --model-config is given too; give the folder once.")
        args.model_config, args.config = args.config, None
    options = read_config_source(args.method, args.config) if args.config else {}
    concepts = args.concept or options.pop("concept", None)
    if not concepts:
        raise ValueError(
            "Name the concept to erase: --concept 'Van Gogh style' (repeatable), or concept: in --config."
        )
    if args.on and not Path(args.on).is_file():
        raise ValueError(f"--on {args.on}: no such patch file.")
    resolved = resolve_erasure(args.method, args.model, concepts, args.anchor, options, args.overrides, args.preset)
    ckpt_dir = resolved.run.checkpoint_dir or str(out.with_suffix(".ckpt"))
    resolved.run = resolved.run.with_overrides(
        {"checkpoint_dir": ckpt_dir, "resume": args.resume or resolved.run.resume}
    )
    if resolved.preset is not None:
        print(f"preset {resolved.preset.name}" + (f" ({resolved.kind})" if resolved.kind else ""), file=sys.stderr)
    handle = load_handle(args)
    try:
        patch = erase_resolved(handle, resolved, on=args.on)
    except NonFiniteError as err:
        if err.patch is not None and distributed.is_main():
            partial = out.with_name(out.stem + ".partial.safetensors")
            err.patch.save(partial)
            print(f"{err}\nThe last good state is in {partial}.", file=sys.stderr)
        else:
            print(str(err), file=sys.stderr)
        return 1
    if not distributed.is_main():  # data parallel: every process holds the same patch; one writes it
        return 0
    patch.save(out)
    _remove_checkpoint(Path(ckpt_dir))
    stats = patch.metadata.get("stats", {})
    print(
        f"wrote {out}: {len(patch)} tensors, {patch.num_changed:,} values changed, "
        f"{patch.nbytes / 1e6:.2f} MB, {stats.get('erase_seconds', 0):.1f} s"
    )
    return 0


def _remove_checkpoint(directory: Path) -> None:
    """A finished run no longer needs its resume checkpoint (nor what killed runs left half-written beside it)."""
    from .._io import remove_stale_temps
    from ..methods.checkpoint import FILENAME

    (directory / FILENAME).unlink(missing_ok=True)
    remove_stale_temps(directory / FILENAME)
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
