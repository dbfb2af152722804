"""``erasekit quickstart``: the main job end to end: erase, write the patch, a before/after grid and a summary."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .common import add_model_args, add_override_arg, load_handle, subparser

EXAMPLES = """  erasekit quickstart                                   # ESD on tiny-sd, writes outputs/quickstart/
  erasekit quickstart --concept "a dog" --steps 20 --out outputs/dog
"""


def add_parser(sub) -> None:
    p = subparser(
        sub,
        "quickstart",
        "erase a concept end to end and show before/after",
        "Erase a concept with ESD, then write the patch, a before/after image grid and a JSON summary.",
        EXAMPLES,
    )
    add_model_args(p)
    p.add_argument("--method", default="esd", help="method (default esd)")
    p.add_argument("--concept", default="a cat", help="concept to erase (default 'a cat')")
    p.add_argument("--other", default="a dog", help="an unrelated prompt that should be kept (default 'a dog')")
    p.add_argument("--steps", type=int, default=20, help="erasure steps (default 20)")
    add_override_arg(p)
    p.add_argument("--seeds", default="0-3", help="seeds of the grid (default 0-3)")
    p.add_argument("--out", default="outputs/quickstart", help="output folder (default outputs/quickstart)")
    p.set_defaults(run=run)


def _mean_change(before, after, n: int) -> list[float]:
    """Mean absolute pixel change per prompt row (each row has ``n`` seeds)."""
    diff = (after - before).abs().flatten(1).mean(1)
    return [round(float(diff[i : i + n].mean()), 5) for i in range(0, len(diff), n)]


def run(args) -> int:
    import torch

    from .. import erase, resolve_config
    from .._io import write_json
    from ..images import grid, save_image
    from ..sampling import generate_grid
    from .common import parse_seeds

    out = Path(args.out)
    seeds, prompts = parse_seeds(args.seeds), [args.concept, args.other]
    handle = load_handle(args)
    before = generate_grid(handle, prompts, seeds)
    started = time.perf_counter()
    cfg = resolve_config(args.method, None, [f"steps={args.steps}", *args.overrides])
    patch = erase(handle, args.method, args.concept, config=cfg)
    seconds = time.perf_counter() - started
    patch.save(out / "patch.safetensors")
    with patch.applied(handle):
        after = generate_grid(handle, prompts, seeds)
    labels = [f"before: {p}" for p in prompts] + [f"after: {p}" for p in prompts]
    save_image(
        grid(torch.cat([before, after]), len(seeds), labels, [f"seed {s}" for s in seeds]), out / "before_after.png"
    )
    summary = {
        "model": args.model,
        "method": args.method,
        "concept": args.concept,
        "steps": args.steps,
        "seeds": seeds,
        "erase_seconds": round(seconds, 2),
        "patch_bytes": patch.nbytes,
        "patch_tensors": len(patch),
        "mean_abs_pixel_change": dict(zip(prompts, _mean_change(before, after, len(seeds)), strict=True)),
        "files": ["patch.safetensors", "before_after.png", "summary.json"],
    }
    write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return 0
