"""One MiniCanvas erasure, evaluated and explained: the tuning probe behind docs/methods.md's tuning tables.

Erases one target with the world's plan (``erasekit_worlds/minicanvas/plans.py``) plus ``--set`` overrides, evaluates
the patched pipeline the way ``benchmarks/minicanvas_unlearning.py`` does (UA, held-out UA, IRA, CRA on every pair,
the world's sampler, the given seeds), and prints what the headline numbers hide: per-class accuracies, the most
frequent confusions (what the erased class became, and what the retained classes turned into) and the cells where the
target survived. No base-model or gold evaluation: use the benchmark for tables.

Usage:
    python benchmarks/minicanvas_probe.py salun style:Ink --set lr=1e-4 null_weight=0
    python benchmarks/minicanvas_probe.py doco style:Ink --set fake_from=both null_weight=1 --retain-prompts-from-plan
    python benchmarks/minicanvas_probe.py salun object:car --out /tmp/car.json --save-patch /tmp/car.safetensors
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import torch

from erasekit._env import environment
from erasekit._io import write_json
from erasekit.cli.common import parse_seeds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("method", help="a registered method, e.g. salun")
    p.add_argument("target", help="style:NAME or object:NAME")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], help="KEY=VALUE method config overrides")
    p.add_argument(
        "--retain-prompts-from-plan",
        action="store_true",
        help="set retain_prompts to the world's retain prompts (every other class, as SalUn's plan has them)",
    )
    p.add_argument("--seeds", default="0-1", help="evaluation seeds (default 0-1)")
    p.add_argument("--world", help="MiniCanvas world folder (default: the shipped weights)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", help="also write the result as JSON here")
    p.add_argument("--save-patch", help="also save the patch here")
    return p.parse_args(argv)


def explain(records: list[dict], kind: str, name: str) -> dict:
    """Confusions of the target kind's classifier over every image, and the grid cells the target survived in."""
    other = "object" if kind == "style" else "style"
    confusions = collections.Counter(
        f"{r[kind]} -> {r[f'{kind}_pred']}" for r in records if r[kind] != r[f"{kind}_pred"]
    )
    survived = [
        f"{r[other]}/{r['seed']}" for r in records if "template" not in r and r[kind] == r[f"{kind}_pred"] == name
    ]
    return {"confusions": dict(confusions.most_common(12)), "target_survived_in": survived}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import erasekit
    from erasekit.methods.config import parse_override
    from erasekit.models import DiffusionHandle, load_pipeline
    from erasekit_worlds.minicanvas import weights_dir
    from erasekit_worlds.minicanvas.plans import erasure_plan, parse_target
    from erasekit_worlds.minicanvas.suite import minicanvas_suite

    kind, name = parse_target(args.target)
    world = Path(args.world) if args.world else weights_dir()
    concept, anchor, config = erasure_plan(args.method, args.target)
    if args.retain_prompts_from_plan:
        config["retain_prompts"] = erasure_plan("salun", args.target)[2]["retain_prompts"]
    overrides = dict(parse_override(item) for item in args.overrides)
    erasekit.api.resolve_config(args.method, None, {**config, **overrides})  # a bad override fails before any work
    handle = DiffusionHandle(load_pipeline(str(world / "pipeline"), device="cpu", dtype=torch.float32))
    suite, seeds = minicanvas_suite(world), parse_seeds(args.seeds)
    started = time.perf_counter()
    patch = erasekit.erase(handle, args.method, concept, anchor=anchor, **{**config, "progress": False, **overrides})
    seconds = time.perf_counter() - started
    if args.save_patch:
        patch.save(args.save_patch)
    report = erasekit.evaluate(handle, suite, args.target, patch=patch, seeds=seeds, metrics=("ua", "ira", "cra"))
    m = report.metrics
    result = {
        "method": args.method,
        "target": args.target,
        "overrides": overrides,
        "retain_prompts_from_plan": args.retain_prompts_from_plan,
        "seeds": seeds,
        "erase_seconds": round(seconds, 1),
        "metrics": {k: m.get(k) for k in ("ua", "ua_heldout", "ira", "cra")},
        "style_accuracy_by_class": m.get("style_accuracy_by_class"),
        "object_accuracy_by_class": m.get("object_accuracy_by_class"),
        **explain(report.records, kind, name),
        "environment": environment("cpu"),
    }
    pct = {k: "–" if v is None else f"{100 * v:.1f}" for k, v in result["metrics"].items()}
    print(
        f"{args.method} {args.target} {args.overrides}: UA {pct['ua']} / held-out {pct['ua_heldout']} / IRA "
        f"{pct['ira']} / CRA {pct['cra']}, erase {seconds:.0f} s"
    )
    print(json.dumps({k: result[k] for k in ("confusions", "target_survived_in")}))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
