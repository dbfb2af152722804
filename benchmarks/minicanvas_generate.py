"""Generation speed of the shipped MiniCanvas pipeline through the CLI: 64 images with ``erasekit generate``.

Runs ``erasekit generate --model minicanvas`` in this process (16 prompts x 4 seeds at the world's defaults: 25
DPM-Solver++ steps, CFG 7.5) after one untimed warm-up call, and records the wall time of the whole command (model
loading, sampling, decoding and writing the grid), the environment and the settings in a JSON file. Target: <= 60 s
on 2 CPU cores.

Usage:
    python benchmarks/minicanvas_generate.py
    python benchmarks/minicanvas_generate.py --model minicanvas:worlds/no_ink --repeats 3 --out /tmp/gen.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from erasekit._env import environment
from erasekit._io import write_json

TARGET_SECONDS = 60.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minicanvas", help="model spec (default: the shipped MiniCanvas pipeline)")
    p.add_argument("--seeds", default="0-3", help="seeds per prompt (default 0-3: 16 prompts x 4 = 64 images)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the CLI's, 25; smoke tests use 1)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs (the best and all are recorded)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default="benchmarks/results/minicanvas_generate.json", help="JSON result path")
    return p.parse_args(argv)


def prompts() -> list[str]:
    """16 prompts over 8 styles and 8 objects (the UnlearnCanvas template)."""
    from erasekit_worlds.minicanvas import OBJECTS, STYLES, UNLEARNCANVAS_TEMPLATE, caption

    return [caption(STYLES[i % 8], OBJECTS[(3 * i) % 8], UNLEARNCANVAS_TEMPLATE) for i in range(16)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    from erasekit.cli.common import parse_seeds
    from erasekit.cli.main import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompts.txt"
        prompt_file.write_text("\n".join(prompts()) + "\n", encoding="utf-8")
        command = ["generate", "--model", args.model, "--prompts-file", str(prompt_file), "--seeds", args.seeds]
        command += ["--batch-size", str(args.batch_size), "--device", "cpu", "--out", str(Path(tmp) / "g.png")]
        if args.steps is not None:
            command += ["--steps", str(args.steps)]
        cli(command)  # warm-up: first-call allocations and kernel selection
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            cli(command)
            times.append(round(time.perf_counter() - started, 2))
    n_images = len(prompts()) * len(parse_seeds(args.seeds))
    result = {
        "benchmark": "minicanvas_generate",
        "command": "erasekit " + " ".join(c if "/" not in c else "<tmp>" for c in command),
        "images": n_images,
        "seconds": times,
        "best_seconds": min(times),
        "target_seconds": TARGET_SECONDS,
        "passes": min(times) <= TARGET_SECONDS,
        "environment": environment("cpu"),
    }
    write_json(args.out, result)
    print(f"{n_images} images: best {min(times):.1f} s of {times} (target {TARGET_SECONDS:.0f} s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
