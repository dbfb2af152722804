"""Generation fidelity of the MiniCanvas world: do the pipeline's samples show the prompted style and object?

Samples every (style, object) pair of a world folder with fixed seeds at the world's default sampler settings, lets
the world's style and object classifiers judge every image, and reports style agreement and object agreement, first
with the UnlearnCanvas template ("A {object} image in {style} style.", every seed) and then with the held-out
paraphrase templates (seed k uses template k mod 4). Writes one JSON result (settings, seeds, environment, per-class
numbers, targets) and a sample grid PNG (rows styles, columns objects, first seed), both atomically.

Usage:
    python benchmarks/minicanvas_fidelity.py                       # the shipped world, seeds 0-3
    python benchmarks/minicanvas_fidelity.py --world worlds/no_ink --out /tmp/no_ink_fidelity.json --grid /tmp/g.png
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
from erasekit.images import grid, save_image
from erasekit.models import DiffusionHandle, load_pipeline
from erasekit_worlds.minicanvas import HELDOUT_TEMPLATES, UNLEARNCANVAS_TEMPLATE, load_classifier, weights_dir
from erasekit_worlds.recipes.minicanvas.fidelity import fidelity

logger = logging.getLogger("minicanvas_fidelity")

TARGETS = {"unlearncanvas_template": 0.90, "heldout_templates": 0.85}  # style and object agreement, each


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default=None, help="world folder (default: the shipped weights)")
    p.add_argument("--seeds", default="0-3", help="sampling seeds, a list or range (default 0-3)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the world's, 25)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the world's, 7.5)")
    p.add_argument("--batch-size", type=int, default=64, help="images per pipeline call")
    p.add_argument("--styles", nargs="+", default=None, help="only these styles (default: all of the world's)")
    p.add_argument("--objects", nargs="+", default=None, help="only these objects (default: all of the world's)")
    p.add_argument("--no-heldout", action="store_true", help="skip the held-out template pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default="benchmarks/results/minicanvas_fidelity.json", help="JSON result path")
    p.add_argument("--grid", default="benchmarks/results/minicanvas_fidelity_grid.png", help="sample grid PNG path")
    p.add_argument("--zoom", type=int, default=2, help="grid cells enlarged this many times (nearest neighbour)")
    return p.parse_args(argv)


def load_world(world: Path, device: torch.device) -> tuple[DiffusionHandle, dict, dict]:
    """The world's pipeline handle (fp32), its two classifiers and its manifest."""
    manifest = json.loads((world / "manifest.json").read_text(encoding="utf-8"))
    handle = DiffusionHandle(load_pipeline(str(world / "pipeline"), device=device, dtype=torch.float32))
    classifiers = {k: load_classifier(world / "classifiers" / f"{k}.safetensors", device) for k in ("style", "object")}
    return handle, classifiers, manifest


def save_grid(images: torch.Tensor, styles: list[str], objects: list[str], n_seeds: int, zoom: int, path) -> None:
    """Rows styles, columns objects, each pair's first-seed image."""
    first = images[::n_seeds]
    if zoom > 1:
        first = torch.nn.functional.interpolate(first, scale_factor=zoom, mode="nearest")
    save_image(grid(first, len(objects), row_labels=styles, col_labels=objects), path)


def run_pass(handle, classifiers, styles, objects, templates, seeds, args) -> tuple[dict, torch.Tensor]:
    started = time.perf_counter()
    result, images = fidelity(
        handle,
        classifiers["style"],
        classifiers["object"],
        styles,
        objects,
        templates,
        seeds,
        args.steps,
        args.guidance,
        args.batch_size,
    )
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["templates"] = list(templates)
    return result, images


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    world = Path(args.world) if args.world else weights_dir()
    handle, classifiers, manifest = load_world(world, device)
    args.steps = args.steps or manifest["sampling"]["steps"]
    args.guidance = args.guidance if args.guidance is not None else manifest["sampling"]["guidance"]
    styles = args.styles or manifest["styles"]
    objects = args.objects or manifest["objects"]
    seeds = parse_seeds(args.seeds)
    results = {}
    results["unlearncanvas_template"], images = run_pass(
        handle, classifiers, styles, objects, [UNLEARNCANVAS_TEMPLATE], seeds, args
    )
    save_grid(images, styles, objects, len(seeds), args.zoom, args.grid)
    if not args.no_heldout:
        results["heldout_templates"], _ = run_pass(
            handle, classifiers, styles, objects, HELDOUT_TEMPLATES, seeds, args
        )
    for name, res in results.items():
        res["target"] = TARGETS[name]
        res["meets_target"] = res["style_agreement"] >= TARGETS[name] and res["object_agreement"] >= TARGETS[name]
        logger.info(
            "%s: style %.3f, object %.3f (target %.2f)",
            name,
            res["style_agreement"],
            res["object_agreement"],
            TARGETS[name],
        )
    report = {
        "benchmark": "minicanvas_fidelity",
        "world": str(world),
        "world_recipe": {k: manifest.get(k) for k in ("recipe", "seed", "exclude", "created")},
        "unet_sha256": manifest["files"]["pipeline/unet/diffusion_pytorch_model.safetensors"]["sha256"],
        "settings": {
            "scheduler": type(handle.pipe.scheduler).__name__,
            "steps": args.steps,
            "guidance": args.guidance,
            "seeds": seeds,
            "batch_size": args.batch_size,
            "styles": styles,
            "objects": objects,
            "dtype": "float32",
        },
        "environment": environment(device),
        "results": results,
        "grid": str(args.grid),
    }
    write_json(args.out, report)
    logger.info("wrote %s and %s", args.out, args.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
