"""The MiniFaces unlearning benchmark: Text-to-Unlearn on several attributes of the MiniFaces StyleGAN2.

For each target attribute the script erases it from the world's generator with ``text_to_unlearn`` (its default
configuration: the world's preset, ``erasekit_worlds/minifaces/presets/text_to_unlearn.yaml``, plus ``--set``
overrides), from text alone ("glasses"), records the erasure's time, peak memory and
patch size, and evaluates the patched generator with :func:`erasekit.eval.evaluate_gan` on fixed seeds (the same for
every target): the attribute's rate before and after, every other attribute's rate, the pixel and CLIP-feature drift
of the samples that did not have it, γ (Wasserstein-1 between CLIP-score distributions) and FID in the world's CLIP
feature space. Each row is checked against erasekit's bars for the method: rate after ≤ 2 %, every other attribute
within 3 points, erasure ≤ 5 minutes (and, so that a generator that never drew the attribute cannot pass, a rate
before of at least 10 %).

Results go to one JSON file (written atomically after every target; ``--resume`` skips the targets already in it)
and a Markdown table, with the environment (package versions, device, threads, matmul speed), seeds and settings.
Run it alone on the machine: the erasure times are part of the result.

Usage:
    python benchmarks/minifaces_unlearning.py --world worlds/minifaces --targets glasses smile hat beard \
        --seeds 0-999 --out benchmarks/results/minifaces_unlearning.json
    python benchmarks/minifaces_unlearning.py --world worlds/minifaces --targets glasses --set steps=200 --resume
    python benchmarks/minifaces_unlearning.py --targets glasses hat --retain-others   # guard the other attributes
    python benchmarks/minifaces_unlearning.py --targets glasses smile --set steps=450 --set-for smile lr=0.003

``--set`` applies to every target; ``--set-for TARGET KEY=VALUE ...`` (repeatable) to one target only, on top of
``--set``. Each row records the options it ran with, and the Markdown table names each row's own overrides.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from erasekit._env import environment
from erasekit._io import write_json, write_text
from erasekit.cli.common import parse_seeds

logger = logging.getLogger("minifaces_unlearning")

ROOT = Path(__file__).resolve().parents[1]
# the bars of a Text-to-Unlearn erasure; "rate_before" only keeps a generator that never drew the attribute from passing trivially
BARS = {"rate_before": 0.10, "rate_after": 0.02, "other_change_points": 3.0, "erase_seconds": 300.0}
DEFAULT_TARGETS = ("glasses", "smile", "hat", "beard")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default=None, help="MiniFaces world folder (default: the shipped weights)")
    p.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS), help="attributes to erase, one run each")
    p.add_argument("--seeds", default="0-999", help="evaluation seeds, a list or range (default 0-999)")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], help="KEY=VALUE text_to_unlearn overrides")
    p.add_argument(
        "--set-for",
        dest="target_overrides",
        nargs="+",
        action="append",
        default=[],
        metavar="TARGET KEY=VALUE",
        help="overrides for one target on top of --set, e.g. --set-for smile lr=0.003 (repeatable)",
    )
    p.add_argument(
        "--retain-others",
        action="store_true",
        help="set text_to_unlearn's retain to every other attribute of the world, as text ('a smile', 'red hair')",
    )
    p.add_argument("--no-fid", action="store_true", help="skip FID (faster)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--patches", default=None, help="also save each patch in this folder")
    p.add_argument("--grids", default=None, help="also save a before/after grid per target in this folder")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/minifaces_unlearning.json"), help="result JSON")
    p.add_argument("--md", default=None, help="Markdown table (default: --out with .md)")
    p.add_argument("--resume", action="store_true", help="keep the targets already in --out and run the rest")
    return p.parse_args(argv)


def parse_overrides(items: list[str]) -> dict:
    from erasekit.methods.config import parse_override

    out = {}
    for item in items:
        try:
            key, value = parse_override(item)
        except ValueError as e:
            raise SystemExit(f"--set takes KEY=VALUE (e.g. steps=200): {e}") from e
        out[key] = value
    return out


def parse_target_overrides(groups: list[list[str]], suite) -> dict[str, dict]:
    """``--set-for`` groups (``[TARGET, KEY=VALUE, ...]``) as ``{indicator: overrides}``, the target named as
    ``--targets`` names it ("a smiling face" or "smile")."""
    out: dict[str, dict] = {}
    for group in groups:
        if len(group) < 2 or "=" in group[0]:
            raise SystemExit(f"--set-for takes a target then KEY=VALUE items (e.g. --set-for smile lr=0.003): {group}")
        target = suite.parse_targets(group[0])[0]
        out.setdefault(target, {}).update(parse_overrides(group[1:]))
    return out


def other_attributes(target: str) -> list[str]:
    """The world's attributes other than ``target`` (an indicator name), as the phrases its captions use; the hair
    colours as one group (``"black hair | brown hair | ..."``), since "without red hair" is never said."""
    from erasekit_worlds.minifaces.data import HAIR_COLOURS, PHRASES

    binary = [phrase for name, (phrase, _) in PHRASES.items() if name != target]
    if target.startswith("hair_"):  # the erased colour's faces take another colour: keep none of the group
        return binary
    return [*binary, " | ".join(f"{c} hair" for c in HAIR_COLOURS)]  # one group: the colour's distribution


def check(row: dict) -> dict:
    """Which of the bars the row meets."""
    m = row["metrics"]
    return {
        "drawn_before_ge_10pct": m[f"{row['target']}_rate_before"] >= BARS["rate_before"],
        "rate_after_le_2pct": m[f"{row['target']}_rate_after"] <= BARS["rate_after"],
        "others_within_3pts": m["max_other_change_points"] <= BARS["other_change_points"],
        "erase_within_5min": row["erase_seconds"] <= BARS["erase_seconds"],
    }


def run_target(spec: str, suite, target: str, seeds: list[int], overrides: dict, args) -> dict:
    import erasekit
    from erasekit.eval.gan import evaluate_gan

    options = dict(overrides)
    if args.retain_others:
        options["retain"] = other_attributes(suite.parse_targets(target)[0])
    started = time.perf_counter()
    patch = erasekit.erase(spec, "text_to_unlearn", target, **options)
    erase_seconds = time.perf_counter() - started
    stats = patch.metadata.get("stats", {})
    size = None
    if args.patches:
        path = patch.save(Path(args.patches) / f"text_to_unlearn_{target}.safetensors")
        size = path.stat().st_size
    report = evaluate_gan(spec, patch, target, suite=suite, seeds=seeds, fid=not args.no_fid, progress=False)
    if args.grids:
        report.save_grid(Path(args.grids) / f"text_to_unlearn_{target}.png")
    row = {
        "target": report.targets[0],
        "concept": target,
        "overrides": overrides,
        "erase_seconds": round(erase_seconds, 2),
        "steps_run": stats.get("steps_run"),
        "peak_process_rss_bytes": stats.get("peak_process_rss_bytes"),
        "patch_tensors": len(patch.deltas),
        "patch_bytes": size,
        "config": patch.metadata.get("config"),
        "anchor": patch.metadata.get("anchor"),
        "preset": patch.metadata.get("preset"),
        "metrics": report.metrics,
        "eval_seconds": report.run["seconds"],
    }
    row["meets"] = check(row)
    return row


def markdown(result: dict) -> str:
    lines = [
        "| target | rate before | rate after | max other change (pts) | pixel drift | feature drift | γ | FID before → "
        "after | steps | erase (s) | bars met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        m, t = row["metrics"], row["target"]
        fid = f"{m['fid_before']:.3g} → {m['fid_after']:.3g}" if "fid_before" in m else "-"
        gamma = f"{m[f'{t}_gamma']:.3g}" if f"{t}_gamma" in m else "-"
        met = sum(row["meets"].values())
        lines.append(
            f"| {t} | {100 * m[f'{t}_rate_before']:.1f}% | {100 * m[f'{t}_rate_after']:.1f}% | "
            f"{m['max_other_change_points']:.1f} | {m['pixel_drift']:.4f} | {m['feature_drift']:.4f} | {gamma} | "
            f"{fid} | {row['steps_run']} | {row['erase_seconds']:.0f} | {met}/{len(row['meets'])} |"
        )
    run = result["run"]
    seeds = run["seeds"]
    lines += [
        "",
        f"Text-to-Unlearn, {len(seeds)} samples per target (seeds {seeds[0]}..{seeds[-1]}), world {run['world']}, "
        f"overrides {run['overrides'] or 'none'}"
        f"{', retain = every other attribute' if run.get('retain_others') else ''}; {run['environment']['device']}, "
        f"{run['environment']['torch_threads']} threads, {run['environment']['cpu_matmul_gflops']} GFLOP/s. "
        "Bars: rate before ≥ 10 %, rate after ≤ 2 %, other attributes within 3 points, erasure ≤ 5 min.",
    ]
    per_target = run.get("target_overrides") or {}
    if per_target:
        each = "; ".join(f"{t}: {o}" for t, o in per_target.items())
        lines.append(f"Per-target overrides, on top of those (`--set-for`): {each}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import json

    from erasekit_worlds.minifaces import weights_dir
    from erasekit_worlds.minifaces.suite import minifaces_suite

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    world = Path(args.world) if args.world else weights_dir()
    suite = minifaces_suite(world)  # fails early, naming the recipe, when the folder holds no world
    targets = [suite.parse_targets(t)[0] for t in args.targets]
    seeds, overrides = parse_seeds(args.seeds), parse_overrides(args.overrides)
    per_target = parse_target_overrides(args.target_overrides, suite)
    stray = sorted(set(per_target) - set(targets))
    if stray:
        raise SystemExit(f"--set-for names {', '.join(stray)}, which --targets does not erase")
    out, md = Path(args.out), Path(args.md) if args.md else Path(args.out).with_suffix(".md")
    run = {"world": str(world), "seeds": seeds, "overrides": overrides, "environment": environment("cpu")}
    run["target_overrides"], run["retain_others"] = per_target, args.retain_others
    result = {"run": run, "bars": BARS, "rows": []}
    if args.resume and out.exists():
        earlier = json.loads(out.read_text(encoding="utf-8"))
        keys = ("seeds", "overrides", "retain_others")
        same = [earlier["run"].get(k) == run[k] for k in keys]
        # rows already measured must have run with the overrides this call would give them
        same += [
            row.get("overrides", overrides) == {**overrides, **per_target.get(row["target"], {})}
            for row in earlier["rows"]
        ]
        if not all(same):
            raise SystemExit(f"{out} was measured with other seeds or overrides; drop --resume or use another --out")
        result["rows"] = earlier["rows"]
    done = {row["target"] for row in result["rows"]}
    spec = f"minifaces:{world}"
    for target in targets:
        if target in done:
            logger.info("%s: already in %s", target, out)
            continue
        logger.info("erasing %s", target)
        row = run_target(spec, suite, target, seeds, {**overrides, **per_target.get(target, {})}, args)
        result["rows"].append(row)
        logger.info("%s: %s", target, row["meets"])
        write_json(out, result)
        write_text(md, markdown(result))
    write_json(out, result)
    write_text(md, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
