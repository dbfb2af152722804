"""MiniCanvas, every target: SalUn and DoCo with their world presets on every style but Photo and every object.

Each row erases one target (``style:NAME`` / ``object:NAME``) from the shipped MiniCanvas pipeline exactly as
``erasekit erase --model minicanvas --method METHOD --concept "NAME style"`` does with no other option (the world's
preset, which applies the world's plan), and evaluates the patched pipeline on the full grid (every style x object
pair, the world's sampler, the same seeds for every row): UA, held-out-template UA, IRA and CRA. It records the
erasure's time next to the machine's matmul speed measured just before it (machines of one kind differ up to 2.6x).

Bars (checked per row and on the averages, printed and written with the table):

- each style target UA >= 95, IRA >= 90, CRA >= 90; each object target UA >= 90, IRA >= 90, CRA >= 90;
- averages: styles UA >= 99, IRA >= 96, CRA >= 96; objects UA >= 97, IRA >= 96, CRA >= 96;
- held-out-template UA within 3 points of UA (each row and the averages);
- each erasure <= 120 s on 2 CPU cores.

The JSON is rewritten atomically after every row, and rows already in it are skipped, so the script can be stopped
and started again (``--limit N`` runs at most N new rows per invocation). Run it alone on the machine: erasure times
are part of the result.

An option on top of the presets (``--set salun.robust_every=10``) measures a variant; its rows go to another
``--out``, and ``--baseline`` compares each of them with the presets' row of the same method and target (UA, IRA
and CRA within 2 points).

Usage:
    python benchmarks/minicanvas_all_targets.py                        # every row not yet in the JSON
    python benchmarks/minicanvas_all_targets.py --methods salun --limit 1 --out /tmp/r.json --md /tmp/r.md
    python benchmarks/minicanvas_all_targets.py --targets style:Neon object:cup --set salun.robust_every=10 \
        doco.robust_every=10 --baseline benchmarks/results/minicanvas_all_targets.json \
        --out benchmarks/results/minicanvas_all_targets_robust.json --md docs/results/minicanvas_all_targets_robust.md
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from erasekit._env import cpu_matmul_gflops, environment, recorded_path
from erasekit._io import write_json, write_text
from erasekit.cli.common import parse_seeds

logger = logging.getLogger("minicanvas_all_targets")

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("salun", "doco")
ROW_BARS = {"style": {"ua": 0.95, "ira": 0.90, "cra": 0.90}, "object": {"ua": 0.90, "ira": 0.90, "cra": 0.90}}
MEAN_BARS = {"style": {"ua": 0.99, "ira": 0.96, "cra": 0.96}, "object": {"ua": 0.97, "ira": 0.96, "cra": 0.96}}
HELDOUT_GAP = 0.03  # held-out-template UA at most this far below (or above) UA
ERASE_SECONDS = 120.0  # on 2 CPU cores
BASELINE_GAP = 0.02  # with --baseline: UA, IRA and CRA at most this far from the baseline row's
METRICS = ("ua", "ira", "cra")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="methods (default: salun doco)")
    p.add_argument(
        "--targets",
        nargs="+",
        default=None,
        help="only these targets (default: every style but Photo and every object)",
    )
    p.add_argument("--seeds", default="0-1", help="evaluation seeds (default 0-1)")
    p.add_argument("--world", default=None, help="MiniCanvas world folder (default: the shipped weights)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the bars assume 2)")
    p.add_argument("--batch-size", type=int, default=64, help="images per pipeline call in the evaluation")
    p.add_argument("--limit", type=int, default=None, help="run at most this many new rows, then stop")
    p.add_argument("--patch-dir", default=None, help="also save every patch here")
    add_overrides_argument(p, "salun.robust_every=10")
    p.add_argument(
        "--baseline",
        default=None,
        help="an all-target JSON measured with the same seeds and sampler (e.g. the presets' rows): each row is "
        f"compared with its (method, target) row there, and must stay within {round(100 * BASELINE_GAP)} points of it",
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/minicanvas_all_targets.json"), help="result JSON")
    p.add_argument("--md", default=str(ROOT / "docs/results/minicanvas_all_targets.md"), help="Markdown table")
    return p.parse_args(argv)


def all_targets() -> list[str]:
    from erasekit_worlds.minicanvas.data import OBJECTS, PHOTO, STYLES

    return [f"style:{s}" for s in STYLES if s != PHOTO] + [f"object:{o}" for o in OBJECTS]


def in_table_order(rows: list[dict]) -> list[dict]:
    """Rows by method, then styles and objects in the world's order (a row measured again keeps its place)."""
    methods = list(dict.fromkeys([*METHODS, *(r["method"] for r in rows)]))
    targets = all_targets()

    def key(row):
        t = row["target"]
        return methods.index(row["method"]), targets.index(t) if t in targets else len(targets), t

    return sorted(rows, key=key)


def row_checks(row: dict) -> dict[str, bool]:
    """Which per-target bars a row meets (and, with a baseline row, whether it stays within 2 points of it)."""
    kind, m = row["target"].split(":")[0], row["metrics"]
    checks = {f"{k}_ge_{round(100 * v)}": m[k] >= v for k, v in ROW_BARS[kind].items()}
    checks["heldout_within_3"] = abs(m["ua"] - m["ua_heldout"]) <= HELDOUT_GAP
    checks["erase_le_120s"] = row["erase_seconds"] <= ERASE_SECONDS
    gap = round(100 * BASELINE_GAP)
    for k, delta in (row.get("vs_baseline") or {}).items():
        checks[f"{k}_within_{gap}_of_baseline"] = abs(delta) <= BASELINE_GAP + 1e-9
    return checks


def add_overrides_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set METHOD.KEY=VALUE`` (read with :func:`parse_method_overrides`)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help=f"an option added to every erasure of METHOD on top of its preset (e.g. {example}); rows with options "
        "belong in another --out",
    )


def overrides_text(overrides: dict[str, dict]) -> str:
    """``{"salun": {"robust_every": 10}}`` -> ``"salun.robust_every=10"`` (empty when there is none)."""
    return ", ".join(f"{m}.{k}={v}" for m, kv in overrides.items() for k, v in kv.items())


def parse_method_overrides(items: list[str], methods: list[str]) -> dict[str, dict]:
    """``["salun.robust_every=10"]`` -> ``{"salun": {"robust_every": 10}}`` (values read as ``erasekit erase --set``
    reads them); a method that is not run is an error."""
    from erasekit.methods.config import parse_override

    out: dict[str, dict] = {}
    for item in items:
        try:
            key, value = parse_override(item)
        except ValueError as err:
            raise SystemExit(f"--set {item!r}: {err}") from err
        method, dot, name = key.partition(".")
        if not dot or method not in methods:
            raise SystemExit(f"--set takes METHOD.KEY=VALUE with METHOD among {methods}, got {item!r}")
        out.setdefault(method, {})[name] = value
    return out


def load_baseline(path: str | None, settings: dict) -> dict[tuple[str, str], dict]:
    """The baseline file's metrics per ``(method, target)``; a file sampled with other seeds or sampler settings is
    not comparable (exit)."""
    if path is None:
        return {}
    if not Path(path).is_file():
        raise SystemExit(
            f"--baseline {path}: no such file (an all-target JSON, e.g. the presets' rows' default --out)"
        )
    base = json.loads(Path(path).read_text(encoding="utf-8"))
    for key in ("seeds", "steps", "guidance"):
        if base["settings"].get(key) != settings[key]:
            raise SystemExit(
                f"--baseline {path} was measured with {key}={base['settings'].get(key)}, not "
                f"{settings[key]}: rows are comparable only with the same sampling"
            )
    return {(r["method"], r["target"]): r["metrics"] for r in base["rows"]}


def summarise(rows: list[dict]) -> dict:
    """Per method and kind: the averages, the bars on them, and how many rows meet every per-target bar (every
    method in the JSON, whichever ``--methods`` this invocation ran)."""
    out = {}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        for kind in ("style", "object"):
            mine = [r for r in rows if r["method"] == method and r["target"].startswith(kind + ":")]
            if not mine:
                continue
            mean = {k: round(sum(r["metrics"][k] for r in mine) / len(mine), 4) for k in (*METRICS, "ua_heldout")}
            checks = {f"mean_{k}_ge_{round(100 * v)}": mean[k] >= v for k, v in MEAN_BARS[kind].items()}
            checks["mean_heldout_within_3"] = abs(mean["ua"] - mean["ua_heldout"]) <= HELDOUT_GAP
            out[f"{method}/{kind}"] = {
                "rows": len(mine),
                "rows_meeting_every_bar": sum(all(r["meets"].values()) for r in mine),
                "mean": mean,
                "max_erase_seconds": max(r["erase_seconds"] for r in mine),
                "meets": checks,
            }
    return out


def markdown(result: dict) -> str:
    s, env = result["settings"], result["environment"]

    def pct(v):
        return f"{100 * v:.1f}"

    options = overrides_text(s.get("overrides", {}))
    lines = [
        "# MiniCanvas: "
        + ("erasures with options on top of the presets" if options else "SalUn and DoCo on every target"),
        "",
        f"Generated by `python benchmarks/minicanvas_all_targets.py`: each method with its world preset and "
        f"{'the options below' if options else 'no other option'}, seeds {s['seeds']}, {s['steps']} sampler steps, "
        f"CFG {s['guidance']}, every (style, object) pair of the world; {env['device']}, {env['torch_threads']} "
        "threads. CPU GFLOP/s: the machine's fp32 matmul speed just before each erasure.",
        "",
    ]
    if options:
        lines += [f"Every erasure ran with these options on top of its preset: `{options}`.", ""]
    compared = any("vs_baseline" in r for r in result["rows"])
    if compared:
        lines += [
            f"Δ: the row's UA / IRA / CRA minus those of the same (method, target) row in `{s['baseline']}` (same "
            f"seeds and sampler); bar: each within {round(100 * BASELINE_GAP)} points.",
            "",
        ]
    extra = " Δ UA / IRA / CRA |" if compared else ""
    lines += [
        "| method | target | preset | UA | UA held-out | IRA | CRA |" + extra + " erase s | CPU GFLOP/s | bars met |",
        "|---|---|---|---|---|---|---|" + ("---|" if compared else "") + "---|---|---|",
    ]
    for r in result["rows"]:
        m, d = r["metrics"], r.get("vs_baseline")
        missed = [k for k, ok in r["meets"].items() if not ok]
        delta = (" / ".join(f"{100 * d[k]:+.1f}" for k in METRICS) if d else "-") + " |" if compared else ""
        lines.append(
            f"| {r['method']} | {r['target']} | {r['preset']} | {pct(m['ua'])} | {pct(m['ua_heldout'])} "
            f"| {pct(m['ira'])} | {pct(m['cra'])} |{' ' + delta if compared else ''} {r['erase_seconds']:.0f} "
            f"| {r['cpu_matmul_gflops']:.0f} | {'all' if not missed else 'missed ' + ', '.join(missed)} |"
        )
    lines += ["", "Averages (bars: styles UA ≥ 99, IRA ≥ 96, CRA ≥ 96; objects UA ≥ 97, IRA ≥ 96, CRA ≥ 96):", ""]
    lines += [
        "| method / kind | rows | rows meeting every bar | UA | UA held-out | IRA | CRA | max erase s | bars met |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for key, v in result["summary"].items():
        m, missed = v["mean"], [k for k, ok in v["meets"].items() if not ok]
        lines.append(
            f"| {key} | {v['rows']} | {v['rows_meeting_every_bar']} | {pct(m['ua'])} | {pct(m['ua_heldout'])} "
            f"| {pct(m['ira'])} | {pct(m['cra'])} | {v['max_erase_seconds']:.0f} "
            f"| {'all' if not missed else 'missed ' + ', '.join(missed)} |"
        )
    lines += [
        "",
        "Per-target bars: styles UA ≥ 95, IRA ≥ 90, CRA ≥ 90; objects UA ≥ 90, IRA ≥ 90, CRA ≥ 90; held-out-template "
        "UA within 3 points of UA; each erasure ≤ 120 s on 2 CPU cores.",
    ]
    return "\n".join(lines) + "\n"


def load_world(args):
    """``(world folder, world spec, manifest, suite, handle)`` of the MiniCanvas world the rows run on."""
    from erasekit.models import DiffusionHandle, load_pipeline
    from erasekit_worlds.minicanvas import weights_dir
    from erasekit_worlds.minicanvas.suite import minicanvas_suite

    world = Path(args.world) if args.world else weights_dir()
    spec = f"minicanvas:{world}" if args.world else "minicanvas"
    manifest = json.loads((world / "manifest.json").read_text(encoding="utf-8"))
    suite = minicanvas_suite(world)
    handle = DiffusionHandle(load_pipeline(str(world / "pipeline"), device="cpu", dtype=torch.float32))
    return world, spec, manifest, suite, handle


def erase_row(handle, spec: str, method: str, target: str, args, options: dict | None = None) -> tuple[dict, object]:
    """Erase one target as the CLI does with no option but the concept (and ``options``, from ``--set``); returns
    the row's erasure part and patch."""
    import erasekit
    from erasekit_worlds.minicanvas.plans import erasure_plan

    concept = erasure_plan(method, target)[0]
    machine = cpu_matmul_gflops()
    started = time.perf_counter()
    patch = erasekit.erase(handle, method, concept, world=spec, progress=False, **(options or {}))
    seconds = time.perf_counter() - started
    if args.patch_dir:
        patch.save(Path(args.patch_dir) / f"{method}_{target.replace(':', '_')}.safetensors")
    row = {
        "method": method,
        "target": target,
        "concept": concept,
        "anchor": patch.metadata.get("anchor"),
        "preset": patch.metadata["preset"]["name"],
        "preset_record": patch.metadata["preset"],
        "config": patch.metadata["config"],
        "erase_seconds": round(seconds, 1),
        "cpu_matmul_gflops": machine,
        "values_changed": patch.num_changed,
    }
    return row, patch


def evaluate_row(handle, suite, target: str, patch, seeds: list[int], manifest: dict, args) -> dict:
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
        metrics=METRICS,
        progress=False,
    )
    return {k: report.metrics[k] for k in (*METRICS, "ua_heldout")}


def measured_with_current_preset(row: dict, spec: str) -> bool:
    """Whether the row ran as its erasure runs now: the same preset (its settings for the target's kind) and anchor;
    a row measured before the preset or plan changed no longer shows what the defaults give."""
    from erasekit.presets import resolve_erasure

    resolved = resolve_erasure(row["method"], spec, row["concept"])
    return resolved.ran_as(row.get("preset_record", row["preset"]), row["config"], row.get("anchor"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    targets = args.targets or all_targets()
    seeds = parse_seeds(args.seeds)
    world, spec, manifest, suite, handle = load_world(args)
    targets = [str(suite.parse_target(t)) for t in targets]
    out = Path(args.out)
    settings = {
        "world": recorded_path(world, ROOT),
        "seeds": seeds,
        "steps": manifest["sampling"]["steps"],
        "guidance": manifest["sampling"]["guidance"],
        "methods": list(args.methods),
        "targets": targets,
        "overrides": parse_method_overrides(args.overrides, list(args.methods)),
    }
    for method, options in settings["overrides"].items():  # an unknown option fails here, before any erasure
        from erasekit.presets import resolve_erasure
        from erasekit_worlds.minicanvas.plans import erasure_plan

        try:
            resolve_erasure(method, spec, erasure_plan(method, targets[0])[0], overrides=options)
        except (TypeError, ValueError) as err:
            raise SystemExit(f"--set {method}: {err}") from err
    baseline = load_baseline(args.baseline, settings)
    if args.baseline:
        settings["baseline"] = recorded_path(Path(args.baseline), ROOT)
    result = {"benchmark": "minicanvas_all_targets", "settings": settings, "environment": environment("cpu")}
    result.update(
        bars={"row": ROW_BARS, "mean": MEAN_BARS, "heldout_gap": HELDOUT_GAP, "erase_seconds": ERASE_SECONDS}
    )
    result["rows"] = []
    if out.is_file():  # resumable per row: what is in the JSON is kept and not measured again
        earlier = json.loads(out.read_text(encoding="utf-8"))
        if earlier["settings"]["seeds"] != seeds:
            raise SystemExit(f"{out} holds rows measured with seeds {earlier['settings']['seeds']}; use another --out")
        if earlier["settings"].get("overrides", {}) != settings["overrides"]:
            raise SystemExit(
                f"{out} holds rows erased with --set {earlier['settings'].get('overrides', {})}, not "
                f"{settings['overrides']}; use another --out"
            )
        result["rows"] = earlier["rows"]
    stale = [r for r in result["rows"] if not measured_with_current_preset(r, spec)]
    for r in stale:  # measured under an earlier version of the preset: measured again, the new row replaces it
        logger.info("%s on %s was measured with another preset; measuring it again", r["method"], r["target"])
    result["rows"] = [r for r in result["rows"] if r not in stale]
    done = {(r["method"], r["target"]) for r in result["rows"]}
    todo = [(m, t) for t in targets for m in args.methods if (m, t) not in done]
    if args.limit is not None:
        todo = todo[: args.limit]
    for method, target in todo:
        logger.info("%s on %s", method, target)
        row, patch = erase_row(handle, spec, method, target, args, settings["overrides"].get(method))
        row["metrics"] = evaluate_row(handle, suite, target, patch, seeds, manifest, args)
        if (method, target) in baseline:
            row["vs_baseline"] = {k: round(row["metrics"][k] - baseline[method, target][k], 4) for k in METRICS}
        row["measured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        row["meets"] = row_checks(row)
        result["rows"].append(row)
        result["rows"] = in_table_order(result["rows"])
        result["summary"] = summarise(result["rows"])
        write_json(out, result)
        write_text(args.md, markdown(result))
        logger.info("%s %s: %s (%.0f s erase)", method, target, row["metrics"], row["erase_seconds"])
    result["summary"] = summarise(result["rows"])
    write_json(out, result)
    write_text(args.md, markdown(result))
    print(markdown(result))
    left = len(
        [
            1
            for m in args.methods
            for t in targets
            if (m, t) not in {(r["method"], r["target"]) for r in result["rows"]}
        ]
    )
    print(f"{len(result['rows'])} rows measured, {left} left (run again to continue)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
