"""Probe: which attributes does a MiniFaces generator actually draw from its latent, and does a short continuation
of its training change that?

For each binary attribute, ``--pairs`` latents (seeds of their own) are paired with the same latent with only that
attribute flipped (:func:`erasekit_worlds.recipes.minifaces.train_gan.flipped_latents`), and the generator's difference
image of each pair is compared with the renderer's over the region the flip changes:

- ``response``: the projection of the generator's difference onto the renderer's (1: it draws the change; 0: the
  attribute's latent dimension does nothing);
- ``error``: the mean absolute gap between the two differences over that region (what the L1 pair loss sees);
- ``agreement``: over those ``2 * pairs`` latents, how often the judge reads the attribute on the generator's sample
  as it reads it on the renderer's face (1: the sample draws what its latent says; an attribute drawn as a ramp
  along its latent rather than a step has the right differences but reads at random near the threshold and beyond).

It also reports the norm of the mapping network's first-layer weights per latent dimension (a dimension the network
has learnt to ignore sinks to the norm of the dimensions the renderer never reads), and the judge's attribute rates
on ``--samples`` seeds against the data's (the world's own classifier, as the recipe's check measures them).

With ``--steps N`` it first continues the generator for N render-objective steps from its weights (a warm start, as
``erasekit world train minifaces --gan-from`` does; ``--set NAME=VALUE`` changes its ``GanTrainConfig``), and
measures before and after. Run it alone on the machine: the JSON records the step time.

Usage:
    python benchmarks/minifaces_pair_probe.py --samples 1000 --out benchmarks/results/minifaces_pair_probe.json
    python benchmarks/minifaces_pair_probe.py --checkpoint worlds/faces.work/gan.checkpoint.safetensors --samples 500
    python benchmarks/minifaces_pair_probe.py --steps 400 --set lr=0.003 --set pair_distance=mse \\
        --set "flip_weights={earrings: 4}" --out outputs/pair_probe_mse.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from erasekit._env import environment
from erasekit._io import write_json
from erasekit.eval.gan import attribute_rates
from erasekit.methods.config import _check_types, parse_override
from erasekit.models.gan import StyleGANHandle
from erasekit.models.stylegan import _normalize_2nd_moment, load_generator, save_generator
from erasekit_worlds.minifaces import weights_dir
from erasekit_worlds.minifaces.classifier import load_attribute_classifier
from erasekit_worlds.minifaces.data import ATTRIBUTE_UNIFORMS, BINARY_ATTRIBUTES, LATENT_UNIFORMS
from erasekit_worlds.minifaces.manifest import CLASSIFIER, GENERATOR
from erasekit_worlds.recipes.minifaces.train_gan import (
    GanTrainConfig,
    checkpoint_generator,
    flip_region,
    flipped_latents,
    render_latents,
    train_gan,
)

# look uniforms (faces.look_from_uniforms) that only show with an attribute: their latent dimension is
# ATTRIBUTE_UNIFORMS + the look slot
SHOWN_WITH = {"frame colour": 21, "sunglasses": 22, "earring colour": 23, "hat style": 24, "hat colour": 25}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default=None, help="a MiniFaces world folder (default: the shipped one)")
    p.add_argument(
        "--checkpoint",
        help="measure the EMA generator of a recipe training checkpoint (<work>/gan.checkpoint.safetensors) instead "
        "of the world's generator (the world still gives the judge and the data's rates)",
    )
    p.add_argument("--pairs", type=int, default=128, help="flipped pairs per attribute")
    p.add_argument("--samples", type=int, default=1000, help="seeds 0..N-1 classified for the attribute rates")
    p.add_argument("--steps", type=int, default=0, help="continue the generator this many steps first (0: measure)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a GanTrainConfig setting")
    p.add_argument("--seed", type=int, default=0, help="seed of the continuation")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--save-generator", help="save the continued generator (fp16 safetensors) here")
    p.add_argument("--out", help="write the result as JSON here")
    return p.parse_args(argv)


@torch.no_grad()
def pair_response(G, pairs: int, classifier) -> dict:
    """Per binary attribute: the generator's response to flipping it (see the module docstring)."""
    out = {}
    for i, name in enumerate(BINARY_ATTRIBUTES):
        gen = torch.Generator().manual_seed(10_000 + i)
        z = _normalize_2nd_moment(torch.randn(pairs, G.z_dim, generator=gen))
        z = torch.cat([z, flipped_latents(z, gen, [a for a in BINARY_ATTRIBUTES if a != name])])
        real, _ = render_latents(z)
        fake = torch.cat([G(z[j : j + 128], noise_mode="const") for j in range(0, len(z), 128)]).clamp(-1, 1)
        d_real, d_fake = real[:pairs] - real[pairs:], fake[:pairs] - fake[pairs:]
        region = flip_region(d_real)
        area = region.flatten(1).sum(dim=1).clamp_min(1.0)
        response = (d_fake * d_real * region).flatten(1).sum(1) / (d_real.square() * region).flatten(1).sum(1)
        error = ((d_fake - d_real).abs().mean(dim=1, keepdim=True) * region).flatten(1).sum(1) / area
        drawn, meant = classifier.indicators((fake + 1) / 2)[name], classifier.indicators((real + 1) / 2)[name]
        out[name] = {
            "response": round(float(response.mean()), 4),
            "error": round(float(error.mean()), 4),
            "agreement": round(float((drawn == meant).float().mean()), 4),
        }
    return out


def mapping_norms(G) -> dict:
    """First-layer weight norms of the mapping network per latent dimension the renderer reads, and the mean over
    the ones it ignores (the level of a dimension the network does not use)."""
    weight = next(p for p in G.mapping.parameters() if p.ndim == 2)
    norms = weight.detach().float().norm(dim=0)
    return {
        "attributes": {a: round(float(norms[i]), 2) for i, a in enumerate(BINARY_ATTRIBUTES)},
        "shown_with_an_attribute": {k: round(float(norms[ATTRIBUTE_UNIFORMS + s]), 2) for k, s in SHOWN_WITH.items()},
        "unread_mean": round(float(norms[LATENT_UNIFORMS:].mean()), 2),
        "read_mean": round(float(norms[:LATENT_UNIFORMS].mean()), 2),
    }


@torch.no_grad()
def rates(G, classifier, n: int) -> dict:
    handle = StyleGANHandle(G)
    seeds = list(range(n))
    samples = torch.cat([handle.generate(seeds[i : i + 256]).cpu() for i in range(0, n, 256)])
    return {k: round(v, 4) for k, v in attribute_rates(classifier.indicators(samples)).items()}


def measure(G, classifier, args, data: dict) -> dict:
    G.eval()
    sample = rates(G, classifier, args.samples)
    gaps = {k: round(100 * abs(sample[k] - data[k]), 2) for k in data}
    return {
        "pair_response": pair_response(G, args.pairs, classifier),
        "mapping_norms": mapping_norms(G),
        "sample_frequencies": sample,
        "frequency_difference_points": gaps,
        "max_frequency_difference_points": max(gaps.values()),
    }


def print_row(label: str, m: dict) -> None:
    resp = " ".join(f"{a} {v['response']:.2f}/{v['agreement']:.2f}" for a, v in m["pair_response"].items())
    print(f"{label}: response/agreement {resp} | max gap {m['max_frequency_difference_points']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    world = Path(args.world) if args.world else weights_dir()
    manifest = json.loads((world / "manifest.json").read_text())
    data = manifest["metrics"]["generator"]["data_frequencies"]
    record = None
    if args.checkpoint:
        G, record = checkpoint_generator(args.checkpoint)
        result_checkpoint = {k: record[k] for k in ("steps_done", "seconds", "config") if k in record}
    else:
        G, result_checkpoint = load_generator(world / GENERATOR).float(), None
    classifier = load_attribute_classifier(world / CLASSIFIER, torch.device("cpu"))
    result: dict = {"settings": vars(args), "world": str(world)}
    if result_checkpoint:
        result["checkpoint"] = result_checkpoint
    result["before"] = measure(G, classifier, args, data)
    print_row("before", result["before"])
    if args.steps:
        overrides = dict(parse_override(s) for s in args.set)
        base = GanTrainConfig(**(record["config"] if args.checkpoint else manifest["config"]["gan"]))
        cfg = replace(base, steps=args.steps, **overrides)
        _check_types(cfg)
        result["config"] = asdict(cfg)
        clock = time.perf_counter()
        G, stats = train_gan(None, cfg, args.seed, torch.device("cpu"), init=G)
        result["train_seconds"] = round(time.perf_counter() - clock, 1)
        result["seconds_per_step"] = round(result["train_seconds"] / args.steps, 3)
        result["after"] = measure(G, classifier, args, data)
        print_row(f"after {args.steps} steps", result["after"])
        if args.save_generator:
            save_generator(G, args.save_generator, torch.float16)
    result["environment"] = environment()
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
