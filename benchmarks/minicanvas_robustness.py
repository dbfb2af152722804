"""The robustness benchmark: every method's erasures under every attack, with the base and gold models as references.

For each method (salun, doco, esd, uce) and each MiniCanvas target (styles and objects), the script erases the target
from the shipped pipeline with the world's plan for that method (the phrasing the quickstart and the unlearning
benchmark use), then runs ``erasekit.attack`` with every attack (relearn, prompt, inversion, quantize, probe) on
the same seeds. Every attack is measured on the erased model, the base model and, for the targets with a gold
world (``--gold style:Ink=DIR``, trained with ``erasekit world train minicanvas --exclude style:Ink --out DIR``),
the model retrained without the target. MiniFaces rows erase attributes with ``text_to_unlearn`` and attack them
with the generator attacks (relearn, quantize). With ``--robust``, salun and doco also erase every target with robust
training (``robust_every``, AdvUnlearn-style; ``--robust-set`` picks its options) and those erasures are attacked
the same way, as rows of their own beside the plain ones.

Results go to one JSON file (written atomically after every row; ``--resume`` skips the rows already in it) with
the environment, the seeds and every attack budget, and to a Markdown table.

Usage:
    python benchmarks/minicanvas_robustness.py                                     # the full table (hours on a CPU)
    python benchmarks/minicanvas_robustness.py --methods uce --targets style:Watercolor --faces \\
        --out /tmp/r.json --md /tmp/r.md                                           # the smallest slice
    python benchmarks/minicanvas_robustness.py --gold style:Ink=worlds/no_ink object:apple=worlds/no_apple --resume
    python benchmarks/minicanvas_robustness.py --set prompt.steps=40 relearn.schedule=[0,50]
    python benchmarks/minicanvas_robustness.py --methods salun doco --robust --resume   # robust rows beside plain ones
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
from erasekit._io import write_json, write_text
from erasekit.cli.common import parse_seeds

logger = logging.getLogger("minicanvas_robustness")

METHODS = ("salun", "doco", "esd", "uce")
TARGETS = ("style:Watercolor", "style:Ink", "style:Neon", "object:apple", "object:cup", "object:fish")
FACES = ("glasses", "beard")
ATTACKS = ("relearn", "prompt", "inversion", "quantize", "probe")
MIDWAY = 50  # relearning steps at which the robust option is held to the gold model's rate + 10 points
ROBUST_METHODS = ("salun", "doco")  # the methods with robust training (erasekit.methods.adversarial)
ROBUST_SET = ("robust_every=10", "robust_attack_steps=10")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="erasure methods (default: all four)")
    p.add_argument("--targets", nargs="+", default=list(TARGETS), help="MiniCanvas targets (style:X object:Y)")
    p.add_argument("--faces", nargs="*", default=None, help="MiniFaces attributes (default glasses beard; none: skip)")
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS), help="attacks run on every MiniCanvas erasure")
    p.add_argument("--gold", nargs="+", default=[], help="TARGET=WORLD_DIR gold worlds (retrained without TARGET)")
    p.add_argument("--seeds", default="0", help="sampling seeds of every concept rate (default 0)")
    p.add_argument("--face-seeds", default="0-63", help="MiniFaces sampling seeds (default 0-63)")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], help="ATTACK.KEY=VALUE budget overrides")
    p.add_argument("--robust", action="store_true", help="also attack robust erasures (salun, doco)")
    p.add_argument(
        "--robust-set",
        nargs="+",
        default=list(ROBUST_SET),
        metavar="KEY=VALUE",
        help=f"options of the robust erasures (default: {' '.join(ROBUST_SET)})",
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda ...")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --out and skip them")
    p.add_argument("--out", default="benchmarks/results/minicanvas_robustness.json", help="JSON result path")
    p.add_argument("--md", default="docs/results/minicanvas_robustness.md", help="Markdown table path")
    return p.parse_args(argv)


def parse_gold(items: list[str]) -> dict[str, str]:
    """``["style:Ink=DIR"]`` -> ``{"style:Ink": "DIR"}``; each folder must be a world that excludes its target."""
    out = {}
    for item in items:
        target, sep, world = item.partition("=")
        if not sep:
            raise SystemExit(f"--gold takes TARGET=WORLD_DIR, got {item!r}")
        manifest = Path(world) / "manifest.json"
        if not manifest.is_file():
            raise SystemExit(f"Gold world for {target} not found at {world} (no manifest.json)")
        excluded = [e.lower() for e in json.loads(manifest.read_text(encoding="utf-8")).get("exclude") or []]
        if target.lower() not in excluded:
            raise SystemExit(f"{world} is no gold standard for {target}: it excludes {excluded or 'nothing'}.")
        out[target] = world
    return out


def summary(name: str, result: dict) -> dict:
    """The headline number of one attack per model variant (see :func:`erasekit.attacks.report.headline`)."""
    from erasekit.attacks.report import headline

    measure, values = headline(name, result)
    return {"measure": measure, **values}


def parse_robust(items: list[str]) -> dict:
    """``["robust_every=10", ...]`` -> erase options; robust training must be on (``robust_every`` >= 1)."""
    from erasekit.methods.config import parse_override

    try:
        options = dict(parse_override(item) for item in items)
    except ValueError as err:
        raise SystemExit(f"--robust-set: {err}") from err
    if not isinstance(options.get("robust_every"), int) or options["robust_every"] < 1:
        raise SystemExit(f"--robust-set must turn robust training on (robust_every=K, K >= 1), got {items}")
    unknown = [k for k in options if not k.startswith("robust_")]
    if unknown:
        raise SystemExit(f"--robust-set takes robust_* options only, got {unknown}")
    return options


def jobs_of(args) -> list[tuple[str, str, str]]:
    """``(method, variant, target)`` of every row the arguments ask for: plain erasures, MiniFaces, robust ones."""
    faces = list(FACES if args.faces is None else args.faces)
    jobs = [(m, "plain", t) for m in args.methods for t in args.targets]
    jobs += [("text_to_unlearn", "plain", f) for f in faces]
    if args.robust:
        jobs += [(m, "robust", t) for m in args.methods if m in ROBUST_METHODS for t in args.targets]
    return jobs


def attack_row(
    method: str, target: str, args, configs: dict, gold: dict, seeds: list[int], options: dict | None = None
) -> dict:
    """Erase ``target`` with ``method`` (the world's plan, plus ``options``) and attack the patch."""
    import erasekit
    from erasekit.plugins import get_world

    world = get_world("minicanvas" if ":" in target else "minifaces")
    handle = erasekit.load_model(world.name, device=args.device)
    started = time.perf_counter()
    if world.kind == "diffusion":
        concept, anchor, extra = world.plan(method, target)
        patch = erasekit.erase(handle, method, concept, anchor=anchor, progress=False, **{**extra, **(options or {})})
        attacks = list(args.attacks)
    else:
        patch = erasekit.erase(handle, method, target, progress=False)
        attacks = [a for a in args.attacks if a in ("relearn", "quantize")]
    erase_seconds = time.perf_counter() - started
    report = erasekit.attack(
        handle,
        patch,
        world.suite,
        target,
        attacks,
        seeds,
        gold=gold.get(target),
        configs={k: v for k, v in configs.items() if k in attacks},
        progress=False,
    )
    return {
        "method": method,
        "variant": "robust" if options else "plain",
        "options": options or {},
        "target": report.target,
        "world": world.name,
        "gold": gold.get(target),
        "erase_seconds": round(erase_seconds, 1),
        "summary": {n: summary(n, r) for n, r in report.results.items()},
        "report": compact(report.to_dict()),
    }


def compact(report: dict) -> dict:
    """The report without the quantization diagnosis per tensor (up to 50 tensors per format and row): the table
    keeps its summary per format; ``erasekit attack --json`` writes the full one."""
    quantize = report.get("attacks", {}).get("quantize")
    for stats in (quantize or {}).get("results", {}).get("delta_vs_bin", {}).values():
        stats.pop("per_tensor", None)
    return report


def midway(row: dict) -> dict | None:
    """Per model variant, the concept rate after ``MIDWAY`` relearning steps (``None`` when not on the schedule)."""
    relearn = row["report"].get("attacks", {}).get("relearn")
    rates = relearn["results"]["rates"] if relearn else {}
    if not rates or any(str(MIDWAY) not in curve for curve in rates.values()):
        return None
    return {variant: curve[str(MIDWAY)] for variant, curve in rates.items()}


def markdown(result: dict) -> str:
    """One table: per (method, target), every attack's headline as erased (base / gold)."""
    attacks = list(dict.fromkeys(a for row in result["rows"] for a in row["summary"]))
    env = result["environment"]
    lines = [
        "# Robustness of MiniCanvas and MiniFaces erasures",
        "",
        f"Generated by `python benchmarks/minicanvas_robustness.py` on {env['device']} ({env['torch_threads']} "
        f"threads). Seeds {result['settings']['seeds']} (MiniFaces {result['settings']['face_seeds'][0]}.."
        f"{result['settings']['face_seeds'][-1]}); every attack's budget is in the JSON file. Each cell: the erased "
        "model, then (base / gold) where measured. Concept rates and attack success rates in %: lower is a more "
        "robust erasure; the base must be high for the attack to mean anything, the gold is the honest floor.",
        "",
    ]
    robust = result["settings"].get("robust") or {}
    if robust:
        options = ", ".join(f"{k}={v}" for k, v in robust.items())
        lines += [f"Robust rows: salun and doco erased with `{options}` on top of the world's presets.", ""]
    measures = {a: next(r["summary"][a]["measure"] for r in result["rows"] if a in r["summary"]) for a in attacks}
    lines += ["- **no attack**: concept rate of the attack prompts and seeds as they are"]
    lines += [f"- **relearn @{MIDWAY}**: concept rate after {MIDWAY} relearning steps (the robustness bar's point)"]
    lines += [f"- **{a}**: {m}" for a, m in measures.items()]
    lines += [
        "- **erase s / attack s**: wall seconds of the erasure and of the whole attack set (every variant)",
        "",
        f"| method | target | no attack | relearn @{MIDWAY} | " + " | ".join(attacks) + " | erase s | attack s |",
        "|---|---|---|---|" + "---|" * (len(attacks) + 2),
    ]

    def cell(s: dict | None) -> str:
        if not s:
            return "-"
        refs = [f"{100 * s[v]:.0f}" for v in ("base", "gold") if v in s]
        return f"{100 * s['patched']:.0f}" + (f" ({' / '.join(refs)})" if refs else "")

    for row in result["rows"]:
        name = row["method"] + (" (robust)" if row.get("variant") == "robust" else "")
        lines.append(
            f"| {name} | {row['target']} | {cell(row['report']['run']['plain_rates'])} | {cell(midway(row))} | "
            + " | ".join(cell(row["summary"].get(a)) for a in attacks)
            + f" | {row['erase_seconds']:.0f} | {row['report']['run']['wall_seconds']['total']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def merged_settings(previous: dict, current: dict, out: Path) -> dict:
    """The settings of a resumed table. Rows sampled with other seeds or attacked with other budgets are not
    comparable (exit); methods, targets, faces and gold worlds are the union of every invocation's."""
    if not previous:
        return current
    for key in ("seeds", "face_seeds", "attacks", "overrides"):
        if previous.get(key) != current[key]:
            raise SystemExit(
                f"{out} holds rows measured with {key}={previous.get(key)}, not {current[key]}: resume with the same "
                f"{key}, or write the new rows to another --out."
            )
    if previous.get("robust") and current["robust"] and previous["robust"] != current["robust"]:
        raise SystemExit(
            f"{out} holds robust rows erased with {previous['robust']}, not {current['robust']}: resume with the same "
            "--robust-set, or write the new rows to another --out."
        )
    merged = dict(current)
    for key in ("methods", "targets", "faces"):
        merged[key] = list(dict.fromkeys([*previous.get(key, []), *current[key]]))
    merged["gold"] = {**previous.get("gold", {}), **current["gold"]}
    merged["robust"] = current["robust"] or previous.get("robust", {})
    return merged


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    from erasekit.attacks import get_attack
    from erasekit.cli.attack import parse_attack_overrides
    from erasekit.methods import list_methods

    unknown = [m for m in args.methods if m not in list_methods()]
    if unknown:
        raise SystemExit(f"Unknown methods {unknown}; known: {list_methods()}")
    for name in args.attacks:
        get_attack(name)
    try:
        configs = parse_attack_overrides(args.overrides, list(args.attacks))
    except ValueError as err:
        raise SystemExit(str(err)) from err
    gold = parse_gold(args.gold)
    robust = parse_robust(args.robust_set) if args.robust else {}
    faces = list(FACES if args.faces is None else args.faces)
    seeds, face_seeds = parse_seeds(args.seeds), parse_seeds(args.face_seeds)
    jobs = jobs_of(args)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if args.resume and out.is_file() else {}
    rows = previous.get("rows", [])
    done = {(r["method"], r.get("variant", "plain"), r["target"]) for r in rows}
    command = " ".join(["python benchmarks/minicanvas_robustness.py", *(sys.argv[1:] if argv is None else argv)])
    settings = {
        "methods": args.methods,
        "targets": args.targets,
        "faces": faces,
        "attacks": args.attacks,
        "seeds": seeds,
        "face_seeds": face_seeds,
        "overrides": configs,
        "gold": gold,
        "robust": robust,
        "command": command,
    }
    settings = merged_settings(previous.get("settings", {}), settings, out)
    env = environment(args.device)
    result = {
        "environment": env,
        "runs": [*previous.get("runs", []), {"command": command, "environment": env}],
        "settings": settings,
        "rows": rows,
    }
    for method, variant, target in jobs:
        if (method, variant, target) in done:
            logger.info("skip %s (%s) on %s (already in %s)", method, variant, target, out)
            continue
        logger.info("%s (%s) on %s", method, variant, target)
        options = robust if variant == "robust" else None
        row = attack_row(method, target, args, configs, gold, seeds if ":" in target else face_seeds, options)
        result["rows"].append(row)
        write_json(out, result)
        write_text(args.md, markdown(result))
    write_json(out, result)
    write_text(args.md, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
