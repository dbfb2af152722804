"""The MiniCanvas unlearning benchmark: every method on style and object targets, against the retrained gold standard.

For each target (``style:NAME`` / ``object:NAME``) and each method, the script erases the target from the MiniCanvas
pipeline with the method's MiniCanvas preset (``erasekit_worlds/minicanvas/presets/``, which also applies the world's
plan: prompt lists and anchor; ``presets:`` in the benchmark config names another one per method, ``none`` the
paper defaults) plus the optional overrides of the benchmark config, measures the
erasure's time, peak memory and patch size, and evaluates the patched pipeline with ``erasekit.evaluate`` on the full
grid (every style x object pair, the same seeds for every method): UA (also on the held-out templates), IRA, CRA, FID
and CLIP score. Where a gold-standard world (retrained without the target, ``erasekit world train minicanvas
--exclude style:NAME``, or only its UNet as UnlearnCanvas does, ``--exclude-from unet``) is given, the gold pipeline
is evaluated the same way, and each method's distance to it is the KL divergence between the classifiers' output distributions over the grid (per prompt, averaged over seeds, then
averaged over prompts; style and object classifiers separately). The unpatched model's distance is reported too.

Results go to one JSON file (written atomically after every run; ``--resume`` skips the runs already in it) and a
Markdown table. The environment (package versions, device, threads), the seeds and every setting are recorded.

Usage:
    python benchmarks/minicanvas_unlearning.py                                   # benchmarks/configs/... defaults
    python benchmarks/minicanvas_unlearning.py --methods salun --targets style:Ink --seeds 0-1 --out /tmp/r.json
    python benchmarks/minicanvas_unlearning.py --gold style:Ink=worlds/no_ink --resume
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import torch
import yaml

from erasekit._env import cpu_matmul_gflops, environment
from erasekit._io import write_json, write_text
from erasekit.cli.common import parse_seeds

logger = logging.getLogger("minicanvas_unlearning")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "benchmarks" / "configs" / "minicanvas_unlearning.yaml"
TARGETS = {  # the bars salun and doco must meet, averaged over the targets of a kind
    "style": {"ua": 0.95, "ira": 0.90, "cra": 0.90},
    "object": {"ua": 0.90, "ira": 0.90, "cra": 0.90},
}
TARGET_METHODS = ("salun", "doco")
SAMPLING_SETTINGS = ("seeds", "steps", "guidance")  # what every row of one results file shares
EVAL_METRICS = ("ua", "ira", "cra", "retainability", "clip_score", "fid", "efficiency")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="benchmark YAML (targets, methods, seeds, gold)")
    p.add_argument("--world", default=None, help="MiniCanvas world folder (default: the shipped weights)")
    p.add_argument("--methods", nargs="+", default=None, help="override the config's method list")
    p.add_argument("--targets", nargs="+", default=None, help="override the config's targets (style:X object:Y)")
    p.add_argument("--gold", nargs="+", default=[], help="TARGET=WORLD_DIR gold-standard worlds (added to config's)")
    p.add_argument("--seeds", default=None, help="override the config's seeds (a list or range, e.g. 0-3)")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], help="METHOD.KEY=VALUE config overrides")
    p.add_argument("--batch-size", type=int, default=64, help="images per pipeline call in the evaluation")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    p.add_argument("--resume", action="store_true", help="keep the runs already in --out and skip them")
    p.add_argument("--patch-dir", default=None, help="also save every patch here (METHOD_TARGET.safetensors)")
    p.add_argument("--out", default="benchmarks/results/minicanvas_unlearning.json", help="JSON result path")
    p.add_argument("--md", default="docs/results/minicanvas_unlearning.md", help="Markdown table path")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> dict:
    """The benchmark config with the command line's overrides applied (validated before any work)."""
    cfg = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
    cfg.setdefault("overrides", {})
    cfg.setdefault("gold", {})
    cfg.setdefault("prompts", {})
    cfg["presets"] = dict(cfg.get("presets") or {})
    cfg["world_spec"] = f"minicanvas:{args.world}" if args.world else "minicanvas"
    cfg["methods"] = list(args.methods or cfg.get("methods") or ["esd", "uce", "salun", "doco"])
    cfg["targets"] = list(args.targets or cfg.get("targets") or [])
    cfg["seeds"] = parse_seeds(str(args.seeds if args.seeds is not None else cfg.get("seeds", "0-3")))
    for item in args.gold:
        target, sep, world = item.partition("=")
        if not sep:
            raise SystemExit(f"--gold takes TARGET=WORLD_DIR, got {item!r}")
        cfg["gold"][target] = world
    from erasekit.methods import list_methods
    from erasekit.methods.config import parse_override

    for item in args.overrides:
        key, value = parse_override(item) if "=" in item else ("", None)  # "1e-5" is a float here, as in --set
        method, dot, option = key.partition(".")
        if not dot:
            raise SystemExit(f"--set takes METHOD.KEY=VALUE, got {item!r}")
        cfg["overrides"].setdefault(method, {})[option] = value
    if not cfg["targets"]:
        raise SystemExit("No targets: give them in the config or with --targets style:NAME object:NAME")
    unknown = [m for m in cfg["methods"] if m not in list_methods()]
    if unknown:
        raise SystemExit(f"Unknown methods {unknown}; known: {list_methods()}")
    check_overrides(cfg)
    for target, world in cfg["gold"].items():
        if not (Path(world) / "manifest.json").is_file():
            raise SystemExit(f"Gold world for {target} not found at {world} (no manifest.json)")
        excluded = gold_manifest(world)["exclude"] or []
        if target.lower() not in [e.lower() for e in excluded]:
            raise SystemExit(
                f"{world} is no gold standard for {target}: it excludes {excluded or 'nothing'}. Train one with "
                f"`erasekit world train minicanvas --exclude {target} --out DIR`."
            )
    return cfg


def check_overrides(cfg: dict) -> None:
    """Resolve every method's config for every target as the run will, so a bad override fails before any work."""
    from erasekit.presets import resolve_erasure

    for method in cfg["methods"]:
        for target in cfg["targets"]:
            kind, _, name = target.partition(":")
            concept, _, _ = method_inputs(method, kind, name, cfg)
            try:
                resolve_erasure(
                    method,
                    None,
                    concept,
                    overrides=cfg["overrides"].get(method, {}),
                    preset=cfg["presets"].get(method, "auto"),
                    world=cfg["world_spec"],
                )
            except (TypeError, ValueError) as err:
                raise SystemExit(f"--set / config overrides for {method} on {target}: {err}") from err


def merge_settings(settings: dict, earlier: dict) -> None:
    """On resume, keep what the earlier invocations recorded for the rows they measured: their gold worlds (the
    rows' KL was taken against them) and their methods and targets, after this invocation's own. Rows sampled with
    other seeds or sampler settings would not be comparable, so those must match."""
    differ = [k for k in SAMPLING_SETTINGS if k in earlier and earlier[k] != settings[k]]
    if differ:
        was = ", ".join(f"{k}={earlier[k]}" for k in differ)
        raise SystemExit(
            f"--resume: the earlier rows were measured with {was}; pass the same values "
            f"(e.g. --seeds {','.join(map(str, earlier.get('seeds', [])))}) or start a new --out."
        )
    for key in ("gold", "gold_worlds"):
        settings[key] = {**earlier.get(key, {}), **settings[key]}
    for key in ("methods", "targets"):
        settings[key] = list(dict.fromkeys([*settings[key], *earlier.get(key, [])]))


def gold_manifest(world: str) -> dict:
    """What a gold world is: its recipe, seed, exclusions and the stages they applied to."""
    from erasekit_worlds.recipes.minicanvas.recipe import EXCLUDABLE

    manifest = json.loads((Path(world) / "manifest.json").read_text(encoding="utf-8"))
    keys = ("recipe", "seed", "created", "exclude", "reused")
    return {**{k: manifest.get(k) for k in keys}, "exclude_from": manifest.get("exclude_from", list(EXCLUDABLE))}


def method_inputs(method: str, kind: str, name: str, cfg: dict) -> tuple[str, str | None, dict]:
    """``(concept, anchor, extra config)`` for a target: the concept as
    :func:`erasekit_worlds.minicanvas.plans.erasure_plan` phrases it (the config's ``prompts`` section overriding its
    phrases); the anchor and the prompt lists come from the world's plan through the preset, so both are left out."""
    from erasekit_worlds.minicanvas.plans import erasure_plan

    return erasure_plan(method, f"{kind}:{name}", cfg.get("prompts"))[0], None, {}


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms from /proc)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm", encoding="ascii") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        self.start = self.rss()
        self.peak = self.start
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def output_distributions(suite, images: torch.Tensor, n_seeds: int) -> dict[str, torch.Tensor]:
    """Per prompt, the style and object classifiers' softmax averaged over the seeds: ``[n_prompts, n_classes]``."""
    out = {}
    for kind, clf in (("style", suite.style_classifier), ("object", suite.object_classifier)):
        device = next(clf.parameters()).device
        probs = []
        with torch.no_grad():
            for i in range(0, len(images), 128):
                probs.append(clf(images[i : i + 128].to(device)).float().softmax(-1).cpu())
        out[kind] = torch.cat(probs).reshape(-1, n_seeds, probs[0].shape[-1]).mean(1)
    return out


def kl_to_gold(gold: dict[str, torch.Tensor], other: dict[str, torch.Tensor], eps: float = 1e-4) -> dict:
    """Mean over prompts of KL(gold || other) for each classifier, in nats (distributions smoothed by ``eps``)."""
    out = {}
    for kind in ("style", "object"):
        p = (gold[kind] + eps) / (1 + eps * gold[kind].shape[-1])
        q = (other[kind] + eps) / (1 + eps * other[kind].shape[-1])
        out[kind] = round(float((p * (p / q).log()).sum(-1).mean()), 4)
    out["mean"] = round((out["style"] + out["object"]) / 2, 4)
    return out


def headline(metrics: dict) -> dict:
    keys = ("ua", "ua_heldout", "ira", "cra", "fid", "clip_score", "erase_seconds", "patch_bytes", "values_changed")
    return {k: metrics.get(k) for k in keys}


def evaluate_run(handle, suite, target, patch, seeds, args, n_seeds) -> tuple[dict, dict[str, torch.Tensor]]:
    import erasekit

    report = erasekit.evaluate(
        handle,
        suite,
        target,
        patch=patch,
        seeds=seeds,
        steps=args.steps,
        guidance=args.guidance,
        batch_size=args.batch_size,
        metrics=EVAL_METRICS,
        progress=False,
    )
    n_grid = len(suite.styles) * len(suite.objects) * n_seeds
    dists = output_distributions(suite, report.images[:n_grid], n_seeds)
    return {"metrics": headline(report.metrics), "sampling_seconds": report.run["seconds"]}, dists


def summarise(runs: list[dict], methods: list[str]) -> dict:
    """Per method and target kind, the mean UA/IRA/CRA (and, for salun and doco, whether the bars are met)."""
    out = {}
    for method in methods:
        for kind in ("style", "object"):
            rows = [r for r in runs if r["method"] == method and r["target"].startswith(kind + ":")]
            if not rows:
                continue
            mean = {k: round(sum(r["metrics"][k] for r in rows) / len(rows), 4) for k in ("ua", "ira", "cra")}
            mean["ua_heldout"] = round(sum(r["metrics"].get("ua_heldout") or 0 for r in rows) / len(rows), 4)
            mean["erase_seconds_max"] = max(r["metrics"]["erase_seconds"] or 0 for r in rows)
            mean["targets"] = len(rows)
            if method in TARGET_METHODS:
                mean["meets_target"] = all(mean[k] >= v for k, v in TARGETS[kind].items()) and (
                    mean["erase_seconds_max"] <= 180
                )
            out[f"{method}/{kind}"] = mean
    return out


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# MiniCanvas unlearning benchmark",
        "",
        f"Generated by `python benchmarks/minicanvas_unlearning.py` on {result['environment']['device']} "
        f"({result['environment']['torch_threads']} threads). Seeds {s['seeds']}, {s['steps']} sampler steps, "
        f"CFG {s['guidance']}, every (style, object) pair of the world. Each method's MiniCanvas preset"
        + (f" with overrides {s['overrides']}" if any(s["overrides"].values()) else "")
        + ". KL: mean KL(gold ‖ model) of the classifiers' output distributions (style / object), in nats. "
        "CPU GFLOP/s: the machine's fp32 matmul speed just before the erasure (erase times from machines of one kind "
        "differ by up to 2.6x).",
        "",
        "| method | target | UA | UA held-out | IRA | CRA | FID | CLIP score | KL to gold | erase s | CPU GFLOP/s "
        "| peak RSS MB | patch MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    def num(v, fmt="{:.2f}"):
        return "–" if v is None else fmt.format(v)

    for r in result["reference"] + result["runs"]:
        m, kl = r["metrics"], r.get("kl_to_gold")
        kl_s = f"{kl['style']:.3f} / {kl['object']:.3f}" if kl else "–"
        lines.append(
            f"| {r['method']} | {r['target']} | {pct(m['ua'])} | {pct(m.get('ua_heldout'))} | {pct(m['ira'])} "
            f"| {pct(m['cra'])} | {num(m.get('fid'))} | {num(m.get('clip_score'))} | {kl_s} "
            f"| {num(m.get('erase_seconds'), '{:.0f}')} | {num(r.get('cpu_matmul_gflops'), '{:.0f}')} "
            f"| {num(r.get('peak_rss_mb'), '{:.0f}')} "
            f"| {num((m.get('patch_bytes') or 0) / 1e6 if m.get('patch_bytes') else None)} |"
        )
    lines += ["", "Averages over targets (the bars apply to salun and doco):", ""]
    lines += ["| method / kind | targets | UA | UA held-out | IRA | CRA | max erase s | meets target |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for key, m in result["summary"].items():
        lines.append(
            f"| {key} | {m['targets']} | {pct(m['ua'])} | {pct(m['ua_heldout'])} | {pct(m['ira'])} | {pct(m['cra'])} "
            f"| {m['erase_seconds_max']:.0f} | {m.get('meets_target', '–')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_config(args)
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
    args.steps, args.guidance = manifest["sampling"]["steps"], manifest["sampling"]["guidance"]
    suite = minicanvas_suite(world)
    handle = DiffusionHandle(load_pipeline(str(world / "pipeline"), device=device, dtype=torch.float32))
    seeds, n_seeds = cfg["seeds"], len(cfg["seeds"])
    out = Path(args.out)
    result = {
        "benchmark": "minicanvas_unlearning",
        "world": str(world),
        "world_manifest": {k: manifest.get(k) for k in ("recipe", "seed", "created")},
        "settings": {
            "seeds": seeds,
            "steps": args.steps,
            "guidance": args.guidance,
            "batch_size": args.batch_size,
            "methods": cfg["methods"],
            "targets": cfg["targets"],
            "gold": cfg["gold"],
            "gold_worlds": {t: gold_manifest(w) for t, w in cfg["gold"].items()},
            "overrides": cfg["overrides"],
            "presets": cfg["presets"],
            "prompts": cfg["prompts"],
            "metrics": list(EVAL_METRICS),
        },
        "targets_required": TARGETS,
        "environment": environment(device),
        "reference": [],
        "runs": [],
    }
    if args.resume and out.is_file():
        old = json.loads(out.read_text(encoding="utf-8"))
        result["runs"], result["reference"] = old.get("runs", []), old.get("reference", [])
        merge_settings(result["settings"], old.get("settings", {}))
    done = {(r["method"], r["target"]) for r in result["runs"] + result["reference"]}

    def save():
        result["summary"] = summarise(result["runs"], result["settings"]["methods"])  # earlier invocations' too
        write_json(out, result)
        write_text(args.md, markdown(result))

    for target in cfg["targets"]:
        kind, _, name = target.partition(":")
        pending = [m for m in cfg["methods"] if (m, target) not in done]
        need_gold = target in cfg["gold"] and (pending or ("gold", target) not in done)
        if not pending and not need_gold and ("base", target) in done:
            continue  # resumed: nothing left to measure for this target
        gold_d = None
        if need_gold:
            gold_handle = DiffusionHandle(
                load_pipeline(str(Path(cfg["gold"][target]) / "pipeline"), device=device, dtype=torch.float32)
            )
            gold, gold_d = evaluate_run(gold_handle, suite, target, None, seeds, args, n_seeds)
            del gold_handle
            gold_created = gold_manifest(cfg["gold"][target]).get("created")
            if ("gold", target) not in done:
                result["reference"].append({"method": "gold", "target": target, "created": gold_created, **gold})
            else:  # a resumed run may bring a retrained gold world: keep what it measured next to the first one
                row = next(r for r in result["reference"] if (r["method"], r["target"]) == ("gold", target))
                if row.get("created") != gold_created:
                    row.setdefault("remeasured", []).append({"created": gold_created, "metrics": gold["metrics"]})
        if ("base", target) not in done:
            base, base_d = evaluate_run(handle, suite, target, None, seeds, args, n_seeds)
            entry = {"method": "base", "target": target, **base}
            if gold_d is not None:
                entry["kl_to_gold"] = {**kl_to_gold(gold_d, base_d), "gold_created": gold_created}
            result["reference"].append(entry)
        save()
        for method in pending:
            concept, anchor, extra = method_inputs(method, kind, name, cfg)
            overrides = {**extra, **cfg["overrides"].get(method, {}), "progress": False}
            overrides.update(preset=cfg["presets"].get(method, "auto"), world=cfg["world_spec"])
            logger.info("%s on %s (concept %r, anchor %r)", method, target, concept, anchor)
            machine = cpu_matmul_gflops()  # per run: a resumed table mixes machines, and they differ up to 2.6x
            with PeakRSS() as mem:
                started = time.perf_counter()
                patch = erasekit.erase(handle, method, concept, anchor=anchor, **overrides)
                seconds = time.perf_counter() - started
            if args.patch_dir:
                patch.save(Path(args.patch_dir) / f"{method}_{target.replace(':', '_')}.safetensors")
            run, dists = evaluate_run(handle, suite, target, patch, seeds, args, n_seeds)
            run["metrics"]["erase_seconds"] = round(seconds, 1)
            anchor = patch.metadata.get("anchor", anchor)
            entry = {"method": method, "target": target, "concept": concept, "anchor": anchor, **run}
            entry["config"], entry["preset"] = (
                patch.metadata.get("config"),
                (patch.metadata.get("preset") or {}).get("name"),
            )
            entry["peak_rss_mb"] = round(mem.peak / 2**20, 1)
            entry["cpu_matmul_gflops"], entry["measured"] = machine, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            entry["rss_increase_mb"] = round((mem.peak - mem.start) / 2**20, 1)
            if gold_d is not None:
                entry["kl_to_gold"] = {**kl_to_gold(gold_d, dists), "gold_created": gold_created}
            result["runs"].append(entry)
            save()
            m = run["metrics"]
            logger.info(
                "%s %s: UA %.3f IRA %.3f CRA %.3f (%.0f s erase)", method, target, m["ua"], m["ira"], m["cra"], seconds
            )
    save()
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
