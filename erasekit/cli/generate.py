"""``erasekit generate``: prompts x seeds -> one PNG grid, optionally with patches applied."""

from __future__ import annotations

from pathlib import Path

from .common import add_model_args, check_output, load_handle, load_patches, parse_seeds, subparser

EXAMPLES = """  erasekit generate --model tiny-sd --prompt "a cat" --prompt "a dog" --seeds 0-3 --out grid.png
  erasekit generate --model tiny-sd --prompt "a cat" --patch p.safetensors --scale 0.5 --out half.png
  erasekit generate --model local:/models/sd15 --prompts-file prompts.txt --steps 30 --guidance 7.5 --out grid.png
  erasekit generate --model minifaces --seeds 0-15 --patch no_glasses.safetensors --out faces.png   # StyleGAN2: no prompts
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
    p.add_argument("--truncation", type=float, default=1.0, help="StyleGAN2 truncation psi (default 1: none)")
    p.add_argument("--out", required=True, help="output PNG")
    p.set_defaults(run=run)


def _run_gan(args, handle, seeds: list[int]) -> int:
    """A StyleGAN2 generator: one image per seed, 8 per row."""
    import torch

    from ..images import grid, save_image

    if args.prompt or args.prompts_file:
        raise ValueError("A StyleGAN2 generator takes no prompts: drop --prompt/--prompts-file and give --seeds.")
    if not 0.0 <= args.truncation <= 1.0:
        raise ValueError(f"--truncation must be in [0, 1], got {args.truncation}.")
    with torch.no_grad():
        images = torch.cat(
            [
                handle.generate(seeds[i : i + args.batch_size], truncation_psi=args.truncation).cpu()
                for i in range(0, len(seeds), args.batch_size)
            ]
        )
    ncol = min(8, len(seeds))
    labels = [f"seeds {seeds[i]}-{seeds[min(i + ncol, len(seeds)) - 1]}" for i in range(0, len(seeds), ncol)]
    save_image(grid(images, ncol, row_labels=labels), args.out)
    print(f"wrote {args.out}: {len(seeds)} samples")
    return 0


def run(args) -> int:
    from ..images import grid, save_image
    from ..sampling import generate_grid

    seeds = parse_seeds(args.seeds)
    check_output(args.out)
    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += [line.strip() for line in Path(args.prompts_file).read_text().splitlines() if line.strip()]
    from ..plugins import world_of_spec

    found = world_of_spec(str(args.model))
    gan = (found is not None and found[0].kind == "stylegan") or str(args.model).endswith(".safetensors")
    if not prompts and not gan:
        raise ValueError("No prompt given: pass --prompt TEXT (repeatable) or --prompts-file FILE.")
    handle = load_handle(args)
    patch = load_patches(args.patch)
    if patch is not None:
        patch.apply(handle, scale=args.scale, check_fingerprint=not args.force)
    if handle.kind == "stylegan":
        return _run_gan(args, handle, seeds)
    images = generate_grid(
        handle, prompts, seeds, steps=args.steps, guidance=args.guidance, batch_size=args.batch_size
    )
    from .. import distributed

    if not distributed.is_main():
        return 0
    save_image(grid(images, len(seeds), row_labels=prompts, col_labels=[f"seed {s}" for s in seeds]), args.out)
    print(f"wrote {args.out}: {len(prompts)} prompts x {len(seeds)} seeds")
    return 0
