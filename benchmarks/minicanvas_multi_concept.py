"""MiniCanvas, several targets: three styles erased at once, and the same three one after another (patch on patch).

For each method, two rows on the shipped MiniCanvas pipeline, each with the method's world preset:

- ``at_once``: one run erasing the three targets (``erasekit erase --concept A --concept B --concept C``; the preset
  applies the world's plan for all three: their forget prompts in turn, the other classes as retain prompts);
- ``sequence``: A, then B on the model with A's patch applied, then C on A+B (``--on``); the result is one patch
  relative to the original model.

Each final patch is evaluated once on the full grid (every style x object pair, the same seeds): every erased
target's UA, and the joint IRA (the accuracy of the styles not erased) and CRA (the object classifier over the grid).
Bar for the at-once run: every erased target UA >= 95, IRA and CRA >= 88. Erase seconds (summed over the sequence) and
the machine's matmul speed are recorded. Rows already in the JSON are skipped (``--limit N``: at most N new rows).
``--set doco.num_anchor=48`` adds an option to every erasure of a method on top of its preset; it is recorded, and
such rows go to another ``--out`` (a file refuses rows erased with other options).

Usage:
    python benchmarks/minicanvas_multi_concept.py
    python benchmarks/minicanvas_multi_concept.py --methods salun --modes at_once --limit 1 --out /tmp/r.json
    python benchmarks/minicanvas_multi_concept.py --methods doco --modes at_once --set doco.num_anchor=48 \
        --out /tmp/doco48.json --md /tmp/doco48.md
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import torch

from erasekit._env import cpu_matmul_gflops, environment, recorded_path
from erasekit._io import write_json, write_text
from erasekit.cli.common import parse_seeds

logger = logging.getLogger("minicanvas_multi_concept")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TARGETS = ("style:Watercolor", "style:Ink", "style:Pixel")
MODES = ("at_once", "sequence")
BARS = {"ua": 0.95, "ira": 0.88, "cra": 0.88}  # for the at-once run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["salun", "doco"], help="methods (default: salun doco)")
    p.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS), help="targets of one kind (default: 3)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="at_once and/or sequence")
    p.add_argument("--seeds", default="0-1", help="evaluation seeds (default 0-1)")
    p.add_argument("--world", default=None, help="MiniCanvas world folder (default: the shipped weights)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--batch-size", type=int, default=64, help="images per pipeline call in the evaluation")
    p.add_argument("--limit", type=int, default=None, help="run at most this many new rows, then stop")
    _all_targets_module().add_overrides_argument(p, "doco.num_anchor=48")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/minicanvas_multi_concept.json"), help="JSON")
    p.add_argument("--md", default=str(ROOT / "docs/results/minicanvas_multi_concept.md"), help="Markdown table")
    return p.parse_args(argv)


@functools.cache
def _all_targets_module():
    """minicanvas_all_targets.py, loaded once (its world loading, ``--set`` parsing and rendering are shared)."""
    path = Path(__file__).with_name("minicanvas_all_targets.py")
    spec = importlib.util.spec_from_file_location("minicanvas_all_targets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def erase(handle, spec: str, method: str, targets: list[str], mode: str, options: dict | None = None):
    """The final patch of a row and its erase seconds (summed over the runs of a sequence); ``options`` on top of
    the preset."""
    import erasekit
    from erasekit_worlds.minicanvas.plans import erasure_plan

    concepts = [erasure_plan(method, t)[0] for t in targets]
    started = time.perf_counter()
    if mode == "at_once":
        patch = erasekit.erase(handle, method, concepts, world=spec, progress=False, **(options or {}))
    else:
        patch = None
        for concept in concepts:
            patch = erasekit.erase(handle, method, concept, world=spec, on=patch, progress=False, **(options or {}))
    return patch, time.perf_counter() - started


def joint_scores(metrics: dict, targets: list[str]) -> dict:
    """Each erased target's UA and the joint IRA over the classes not erased, from one grid's per-class accuracies."""
    kind = targets[0].split(":")[0]
    acc = metrics[f"{kind}_accuracy_by_class"]
    erased = [t.split(":", 1)[1] for t in targets]
    kept = [v for c, v in acc.items() if c not in erased]
    return {
        "ua": {t: round(1.0 - acc[t.split(":", 1)[1]], 4) for t in targets},
        "ira": round(sum(kept) / len(kept), 4),
        "cra": round(metrics["cra"], 4),
    }


def markdown(result: dict) -> str:
    s = result["settings"]
    options = _all_targets_module().overrides_text(s.get("overrides", {}))
    lines = [
        "# MiniCanvas: several styles erased at once and in sequence",
        "",
        f"Generated by `python benchmarks/minicanvas_multi_concept.py`: targets {', '.join(s['targets'])}, each "
        f"method with its world preset, seeds {s['seeds']}; IRA over the classes not erased. Bar (at once): every "
        "erased target UA ≥ 95, IRA and CRA ≥ 88.",
        "",
        *([f"Every erasure ran with these options on top of its preset: `{options}`.", ""] if options else []),
        "| method | mode | "
        + " | ".join(f"UA {t.split(':', 1)[1]}" for t in s["targets"])
        + " | IRA | CRA | erase s | CPU GFLOP/s | bar met |",
        "|---|---|" + "---|" * len(s["targets"]) + "---|---|---|---|---|",
    ]
    for r in result["rows"]:
        m = r["metrics"]
        uas = " | ".join(f"{100 * m['ua'][t]:.1f}" for t in s["targets"])
        met = "–" if r["meets"] is None else ("yes" if r["meets"] else "no")
        lines.append(
            f"| {r['method']} | {r['mode']} | {uas} | {100 * m['ira']:.1f} | {100 * m['cra']:.1f} "
            f"| {r['erase_seconds']:.0f} | {r['cpu_matmul_gflops']:.0f} | {met} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    shared = _all_targets_module()
    seeds = parse_seeds(args.seeds)
    world, spec, manifest, suite, handle = shared.load_world(args)
    targets = [str(suite.parse_target(t)) for t in args.targets]
    if len({t.split(":")[0] for t in targets}) != 1:
        raise SystemExit(f"--targets must be of one kind (styles or objects), got {targets}")
    out = Path(args.out)
    settings = {
        "world": recorded_path(world, ROOT),
        "seeds": seeds,
        "targets": targets,
        "methods": list(args.methods),
        "overrides": shared.parse_method_overrides(args.overrides, list(args.methods)),
    }
    result = {"benchmark": "minicanvas_multi_concept", "settings": settings, "environment": environment("cpu")}
    result.update(bars=BARS, rows=[])
    if out.is_file():
        earlier = json.loads(out.read_text(encoding="utf-8"))
        if earlier["settings"]["seeds"] != seeds or earlier["settings"]["targets"] != targets:
            raise SystemExit(f"{out} holds rows of other seeds or targets; use another --out")
        if earlier["settings"].get("overrides", {}) != settings["overrides"]:
            raise SystemExit(
                f"{out} holds rows erased with --set {earlier['settings'].get('overrides', {})}, not "
                f"{settings['overrides']}; use another --out"
            )
        result["rows"] = earlier["rows"]
    done = {(r["method"], r["mode"]) for r in result["rows"]}
    todo = [(m, mode) for m in args.methods for mode in args.modes if (m, mode) not in done]
    for method, mode in todo[: args.limit]:
        logger.info("%s %s: %s", method, mode, targets)
        machine = cpu_matmul_gflops()
        patch, seconds = erase(handle, spec, method, targets, mode, settings["overrides"].get(method))
        metrics = _evaluate(handle, suite, targets[0], patch, seeds, manifest, args)  # per-class accuracies too
        scores = joint_scores(metrics, targets)
        meets = None
        if mode == "at_once":
            meets = (
                all(v >= BARS["ua"] for v in scores["ua"].values())
                and min(scores["ira"], scores["cra"]) >= BARS["ira"]
            )
        row = {"method": method, "mode": mode, "metrics": scores, "erase_seconds": round(seconds, 1)}
        steps = patch.metadata.get("sequence") or [patch.metadata]
        row.update(cpu_matmul_gflops=machine, meets=meets, configs=[m.get("config") for m in steps])
        row["preset"] = (steps[-1].get("preset") or {}).get("name")
        row["measured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        result["rows"].append(row)
        write_json(out, result)
        write_text(args.md, markdown(result))
    write_json(out, result)
    write_text(args.md, markdown(result))
    print(markdown(result))
    return 0


def _evaluate(handle, suite, target, patch, seeds, manifest, args) -> dict:
    import erasekit

    report = erasekit.evaluate(
        handle,
        suite,
        target,
        patch=patch,
        seeds=seeds,
        steps=manifest["sampling"]["steps"],
        guidance=manifest["sampling"]["guidance"],
        batch_size=args.batch_size,
        metrics=("ua", "ira", "cra"),
        progress=False,
    )
    return report.metrics


if __name__ == "__main__":
    sys.exit(main())
