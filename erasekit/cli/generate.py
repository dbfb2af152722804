"""``erasekit generate``: prompts x seeds -> one PNG grid, optionally with patches applied."""

from __future__ import annotations

from pathlib import Path

from .common import add_model_args, load_handle, load_patches, parse_seeds, subparser

EXAMPLES = """  erasekit generate --model tiny-sd --prompt "a cat" --prompt "a dog" --seeds 0-3 --out grid.png
  erasekit generate --model tiny-sd --prompt "a cat" --patch p.safetensors --scale 0.5 --out half.png
  erasekit generate --model local:/models/sd15 --prompts-file prompts.txt --steps 30 --guidance 7.5 --out grid.png
"""


def add_parser(sub) -> None:
    p = subparser(
        sub,
        "generate",
        "generate a grid of images (rows: prompts, columns: seeds)",
        "Generate images for prompts x seeds and save them as one PNG grid.",
        EXAMPLES,
    )
    add_model_args(p)
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompts-file", help="a text file with one prompt per line")
    p.add_argument("--seeds", default="0-3", help="seeds: a list '0,1,2' or a range '0-7' (default 0-3)")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    p.add_argument("--patch", action="append", help="patch file to apply (repeat to compose)")
    p.add_argument("--scale", type=float, default=1.0, help="patch strength (default 1)")
    p.add_argument("--force", action="store_true", help="apply patches even if the base-model fingerprint differs")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--out", required=True, help="output PNG")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..images import grid, save_image
    from ..sampling import generate_grid

    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += [line.strip() for line in Path(args.prompts_file).read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError("No prompt given: pass --prompt TEXT (repeatable) or --prompts-file FILE.")
    seeds = parse_seeds(args.seeds)
    handle = load_handle(args)
    patch = load_patches(args.patch)
    if patch is not None:
        patch.apply(handle, scale=args.scale, check_fingerprint=not args.force)
    images = generate_grid(
        handle, prompts, seeds, steps=args.steps, guidance=args.guidance, batch_size=args.batch_size
    )
    from .. import distributed

    if not distributed.is_main():
        return 0
    save_image(grid(images, len(seeds), row_labels=prompts, col_labels=[f"seed {s}" for s in seeds]), args.out)
    print(f"wrote {args.out}: {len(prompts)} prompts x {len(seeds)} seeds")
    return 0
