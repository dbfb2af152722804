"""Evaluation sanity and speed on the MiniCanvas world: can the suite see an erasure, and how long does it take?

1. **Base-model sanity.** Evaluates the *unpatched* pipeline on the full grid (every style x object pair, every
   seed) with the ``classes`` metric, which scores every possible target at once. An unpatched model has erased
   nothing, so for every style and object target UA must be <= 10% and IRA, CRA >= 90%; a failure means the world
   (or the evaluator) cannot tell a working erasure from a broken one.
2. **Speed.** Times one full single-target evaluation (the grid plus the held-out-template prompts, UA/IRA/CRA, CLIP
   score, CLIP accuracy and FID) of the unpatched model, as ``erasekit eval --target`` runs it. Target: <= 180 s on
   2 CPU cores.

Writes one JSON file (settings, seeds, environment, per-target scores, timings, pass/fail) atomically, and prints a
Markdown summary.

Usage:
    python benchmarks/minicanvas_eval.py                              # the shipped world, seeds 0-3
    python benchmarks/minicanvas_eval.py --world worlds/no_ink --out /tmp/eval.json --speed-target style:Ink
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from erasekit._env import environment
from erasekit._io import write_json
from erasekit.cli.common import parse_seeds

logger = logging.getLogger("minicanvas_eval")

LIMITS = {"ua_max": 0.10, "ira_min": 0.90, "cra_min": 0.90, "seconds_max": 180.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default=None, help="world folder (default: the shipped weights)")
    p.add_argument("--seeds", default="0-3", help="sampling seeds, a list or range (default 0-3)")
    p.add_argument("--batch-size", type=int, default=64, help="images per pipeline call")
    p.add_argument("--speed-target", default="style:Watercolor", help="the target of the timed evaluation")
    p.add_argument("--skip-speed", action="store_true", help="only the base-model sanity pass")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    p.add_argument("--out", default="benchmarks/results/minicanvas_eval.json", help="JSON result path")
    return p.parse_args(argv)


def check_targets(per_target: dict) -> tuple[bool, list[str]]:
    """Whether every target meets the base-model limits, and the ones that do not."""
    bad = [
        t
        for t, s in per_target.items()
        if s["ua"] > LIMITS["ua_max"] or s["ira"] < LIMITS["ira_min"] or s["cra"] < LIMITS["cra_min"]
    ]
    return not bad, bad


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    import erasekit
    from erasekit.models import DiffusionHandle, load_pipeline
    from erasekit_worlds.minicanvas import weights_dir
    from erasekit_worlds.minicanvas.suite import minicanvas_suite

    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    world = Path(args.world) if args.world else weights_dir()
    manifest = json.loads((world / "manifest.json").read_text(encoding="utf-8"))
    steps, guidance = manifest["sampling"]["steps"], manifest["sampling"]["guidance"]
    seeds = parse_seeds(args.seeds)
    suite = minicanvas_suite(world)
    handle = DiffusionHandle(load_pipeline(str(world / "pipeline"), device=device, dtype=torch.float32))
    common = dict(seeds=seeds, steps=steps, guidance=guidance, batch_size=args.batch_size, progress=True)

    base = erasekit.evaluate(handle, suite, None, metrics=["classes"], **common)
    per_target = base.metrics["per_target"]
    ok, failing = check_targets(per_target)
    result = {
        "benchmark": "minicanvas_eval",
        "world": str(world),
        "world_manifest": {k: manifest.get(k) for k in ("recipe", "seed", "created")},
        "settings": {"seeds": seeds, "steps": steps, "guidance": guidance, "batch_size": args.batch_size},
        "limits": LIMITS,
        "environment": environment(device),
        "base_sanity": {
            "passes": ok,
            "failing_targets": failing,
            "style_accuracy": base.metrics["style_accuracy"],
            "object_accuracy": base.metrics["object_accuracy"],
            "worst": {
                "ua": max(s["ua"] for s in per_target.values()),
                "ira": min(s["ira"] for s in per_target.values()),
                "cra": min(s["cra"] for s in per_target.values()),
            },
            "per_target": per_target,
            "seconds": base.run["seconds"],
        },
    }
    if not args.skip_speed:
        started = time.perf_counter()
        report = erasekit.evaluate(handle, suite, args.speed_target, **common)
        seconds = time.perf_counter() - started
        result["speed"] = {
            "target": args.speed_target,
            "seconds": round(seconds, 1),
            "images": report.run["num_images"],
            "breakdown": report.run["seconds"],
            "metrics": sorted(report.metrics),
            "passes": seconds <= LIMITS["seconds_max"],
        }
    write_json(args.out, result)
    s = result["base_sanity"]
    print(
        f"base sanity: {'PASS' if ok else 'FAIL'}; worst UA {100 * s['worst']['ua']:.1f}%, worst IRA "
        f"{100 * s['worst']['ira']:.1f}%, worst CRA {100 * s['worst']['cra']:.1f}% over {len(per_target)} targets"
        + (f"; failing: {failing}" if failing else "")
    )
    if "speed" in result:
        sp = result["speed"]
        print(f"speed: {sp['seconds']:.0f} s for {sp['images']} images ({'PASS' if sp['passes'] else 'FAIL'})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
