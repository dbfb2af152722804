"""``erasekit quickstart``: the main job end to end on a world: evaluate, erase, evaluate again, report.

With a diffusion world that has a suite and an erasure plan (registered by a plugin; ``minicanvas``, the shipped
MiniCanvas world, is the default, ``minicanvas:DIR`` a trained one) the quickstart erases a target
(default: SalUn on ``style:Watercolor``), evaluates the model before and after on the world's grid with the same
seeds, prints the UA/IRA/CRA table, and writes ``patch.safetensors``, ``before_after.png``, ``report.json`` and
``report.md`` under ``--out``. With any other model (``tiny-sd``, a diffusers folder) it erases ``--concept`` and
writes the patch, a before/after grid of the concept and another prompt, and a JSON summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .common import add_model_args, add_override_arg, add_preset_arg, load_handle, parse_seeds, subparser

EXAMPLES = """  erasekit quickstart                                   # SalUn erases Watercolor from the shipped MiniCanvas world
  erasekit quickstart --method doco --target object:apple --seeds 0-3
  erasekit quickstart --model minicanvas:worlds/mine --target style:Ink --set steps=100
  erasekit quickstart --model tiny-sd --method esd --concept "a cat" --set steps=20
"""

HEADLINE = ("ua", "ua_heldout", "ira", "cra", "clip_score", "fid")


def add_parser(sub) -> None:
    p = subparser(
        sub,
        "quickstart",
        "erase a concept end to end and show before/after",
        "Erase a target from a MiniCanvas world, evaluate before and after (UA/IRA/CRA), write the patch, a "
        "before/after grid and the reports. With another model, erase --concept and show before/after images.",
        EXAMPLES,
    )
    add_model_args(p)
    p.set_defaults(model="minicanvas")
    p.add_argument("--method", default="salun", help="method (default salun)")
    p.add_argument("--target", default="style:Watercolor", help="the world's target, style:NAME or object:NAME")
    p.add_argument("--concept", default=None, help="concept to erase, for models that are not a world with a suite")
    p.add_argument(
        "--other", default="a dog", help="a prompt to keep, shown beside --concept (models without a suite)"
    )
    add_override_arg(p)
    add_preset_arg(p)
    p.add_argument("--seeds", default="0-1", help="seeds of the evaluation grid (default 0-1)")
    p.add_argument("--fid", action="store_true", help="also compute FID (slower)")
    p.add_argument("--out", default="outputs/quickstart", help="output folder (default outputs/quickstart)")
    p.set_defaults(run=run)


def world_of(model: str):
    """``(world, folder)`` of a diffusion world spec that can run the quickstart (a suite and a plan), else ``None``."""
    from ..plugins import world_of_spec

    found = world_of_spec(model)
    if found is None or found[0].kind != "diffusion" or found[0].suite is None or found[0].plan is None:
        return None
    return found


def run(args) -> int:
    found = world_of(args.model)
    if found is None or args.concept:
        if not args.concept:
            raise SystemExit(f"--model {args.model} is not a world with a suite: give the --concept to erase.")
        return _run_concept(args)
    return _run_world(args, *found)


def _table(before: dict, after: dict) -> str:
    def fmt(k, v):
        if v is None:
            return "–"
        return f"{v:.2f}" if k in ("clip_score", "fid") else f"{100 * v:.1f}%"

    lines = ["| metric | before | after |", "|---|---|---|"]
    for k in HEADLINE:
        if k in after:
            lines.append(f"| {k} | {fmt(k, before.get(k))} | {fmt(k, after.get(k))} |")
    return "\n".join(lines)


def _comparison_grid(before, after, suite, target, n_seeds: int):
    """Rows: the target class and one retained class, before and after; columns: the other axis (first seed)."""
    import torch

    from ..images import grid

    kind, name = target.split(":", 1)
    rows_of = suite.styles if kind == "style" else suite.objects
    cols_of = suite.objects if kind == "style" else suite.styles
    kept = next(c for c in rows_of if c != name)

    def row(report, cls):
        idx = []
        for col in cols_of:
            style, obj = (cls, col) if kind == "style" else (col, cls)
            pair = suite.styles.index(style) * len(suite.objects) + suite.objects.index(obj)
            idx.append(pair * n_seeds)
        return report.images[idx]

    images = torch.cat([row(before, name), row(after, name), row(before, kept), row(after, kept)])
    labels = [f"before: {name}", f"after: {name}", f"before: {kept}", f"after: {kept}"]
    return grid(images, len(cols_of), labels, list(cols_of), mark_rows=(0, 1))


def _run_world(args, world, folder: Path) -> int:
    from .. import evaluate
    from .._io import write_json, write_text
    from ..api import erase_resolved
    from ..eval import get_suite
    from ..images import save_image
    from ..presets import resolve_erasure

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8")) if folder.is_dir() else {}
    suite = get_suite(world.suite, world_dir=folder)  # a clear error when the world is missing
    target = str(suite.parse_target(args.target))
    sampling = manifest.get("sampling", {})
    seeds, out = parse_seeds(args.seeds), Path(args.out)
    concept = world.plan(args.method, target)[0]  # the world's phrasing; the preset applies the rest of the plan
    resolved = resolve_erasure(args.method, args.model, concept, overrides=args.overrides, preset=args.preset)
    concept, anchor, cfg = resolved.concept, resolved.anchor, resolved.config
    handle = load_handle(args)
    metrics = ["ua", "ira", "cra", "retainability", "clip_score", "efficiency"] + (["fid"] if args.fid else [])
    common = dict(
        seeds=seeds,
        steps=sampling.get("steps", 25),
        guidance=sampling.get("guidance", 7.5),
        metrics=metrics,
        batch_size=64,
    )
    print(f"[1/3] evaluating the model before the erasure ({target}, seeds {seeds})")
    before = evaluate(handle, suite, target, **common)
    print(f"[2/3] erasing {concept!r} with {args.method}")
    started = time.perf_counter()
    patch = erase_resolved(handle, resolved)
    seconds = time.perf_counter() - started
    patch.save(out / "patch.safetensors")
    print(f"[3/3] evaluating the patched model ({seconds:.0f} s erasure)")
    after = evaluate(handle, suite, target, patch=patch, **common)
    save_image(_comparison_grid(before, after, suite, target, len(seeds)), out / "before_after.png")
    table = _table(before.metrics, after.metrics)
    report = {
        "model": args.model,
        "world": str(folder),
        "method": args.method,
        "target": target,
        "concept": concept,
        "anchor": anchor,
        "preset": resolved.record()["name"],
        "config": cfg.to_dict(),
        "erase_seconds": round(seconds, 1),
        "patch_bytes": patch.nbytes,
        "values_changed": patch.num_changed,
        "before": before.to_dict(),
        "after": after.to_dict(),
        "files": ["patch.safetensors", "before_after.png", "report.json", "report.md"],
    }
    write_json(out / "report.json", report)
    md = f"# erasekit quickstart: {args.method} on {target}\n\n{table}\n\nErasure: {seconds:.0f} s, "
    md += f"{patch.num_changed} values changed, patch {patch.nbytes / 1e6:.2f} MB.\n"
    write_text(out / "report.md", md)
    print(
        f"\n{args.method} erased {target} ({seconds:.0f} s):\n\n{table}\n\nwrote {out}/" + ", ".join(report["files"])
    )
    return 0


def _mean_change(before, after, n: int) -> list[float]:
    """Mean absolute pixel change per prompt row (each row has ``n`` seeds)."""
    diff = (after - before).abs().flatten(1).mean(1)
    return [round(float(diff[i : i + n].mean()), 5) for i in range(0, len(diff), n)]


def _run_concept(args) -> int:
    import torch

    from .._io import write_json
    from ..api import erase_resolved
    from ..images import grid, save_image
    from ..presets import resolve_erasure
    from ..sampling import generate_grid

    out = Path(args.out)
    seeds, prompts = parse_seeds(args.seeds), [args.concept, args.other]
    handle = load_handle(args)
    before = generate_grid(handle, prompts, seeds)
    started = time.perf_counter()
    resolved = resolve_erasure(args.method, args.model, args.concept, overrides=args.overrides, preset=args.preset)
    cfg = resolved.config
    patch = erase_resolved(handle, resolved)
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
        "config": cfg.to_dict(),
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
