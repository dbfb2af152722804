"""Probe: how well does a StyleGAN2 regressed onto the MiniFaces renderer draw faces, for a given size and budget?

Trains a generator with the recipe's render objective (:mod:`erasekit_worlds.recipes.minifaces.train_gan`) and measures it
against the renderer on latents it never trained on (seeds of their own):

- ``l1``: the mean absolute pixel error (images in ``[-1, 1]``) against the renderer's faces of the same latents;
- ``agreement``: per indicator, how often the attribute classifier reads the same answer on the generator's sample
  as on the renderer's face of the same latent (the sample draws what its latent says);
- ``sample_frequencies`` against ``data_frequencies`` (the renderer's faces of the same latents) and their largest
  difference in points (the issue's bar is 5).

The attribute classifier is the recipe's (trained here on ``--train-images`` rendered faces, or read from
``--classifier``). A PNG puts the renderer's faces (odd rows) over the generator's (even rows). Run it alone on the
machine: the JSON records the step time.

Usage (``--checkpoint <work>/gan.checkpoint.safetensors`` measures a recipe run as it trains instead):
    python benchmarks/minifaces_render_probe.py --steps 2000 --batch-size 16 --channel-base 2048 --channel-max 128 \
        --out benchmarks/results/minifaces_render_probe.json --grid benchmarks/results/minifaces_render_probe.png
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from erasekit._env import environment
from erasekit._io import write_json
from erasekit.images import grid, save_image
from erasekit_worlds.minifaces.classifier import (
    ClassifierTrainConfig,
    evaluate_classifier,
    load_attribute_classifier,
    train_attribute_classifier,
)
from erasekit_worlds.minifaces.data import indicators, render_bank
from erasekit_worlds.recipes.minifaces.train_gan import GanTrainConfig, checkpoint_generator, render_latents, train_gan


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="generator optimiser steps")
    p.add_argument("--batch-size", type=int, default=16, help="faces per step")
    p.add_argument("--channel-base", type=int, default=2048, help="G channels at r px: min(base // r, max)")
    p.add_argument("--channel-max", type=int, default=128, help="G channel cap")
    p.add_argument("--z-dim", type=int, default=64, help="latent size (>= 39)")
    p.add_argument("--w-dim", type=int, default=256, help="intermediate latent size")
    p.add_argument("--lr", type=float, default=None, help="Adam lr (default: the render objective's)")
    p.add_argument("--edge-weight", type=float, default=None, help="L1 weight of pixel differences")
    p.add_argument("--pixel-loss", default="l1", help="l1 or mse")
    p.add_argument("--attribute-weight", type=float, default=None, help="weight of the teacher classifier's loss")
    p.add_argument("--pair-weight", type=float, default=None, help="weight of the flipped-attribute pair loss")
    p.add_argument("--precision", default="float32", help="float32, or bfloat16 (autocast of the generator passes)")
    p.add_argument("--seed", type=int, default=0, help="the recipe seed")
    p.add_argument("--eval-samples", type=int, default=1000, help="held-out latents measured")
    p.add_argument("--eval-every", type=int, default=0, help="also measure L1 and agreement every N steps")
    p.add_argument("--classifier", help="an attribute classifier .safetensors to use instead of training one")
    p.add_argument("--train-images", type=int, default=20000, help="rendered faces for the classifier")
    p.add_argument("--save-classifier", help="save the classifier trained here to this path")
    p.add_argument("--save-generator", help="save the generator (fp16 safetensors) to this path")
    p.add_argument(
        "--checkpoint",
        help="measure the EMA generator of a recipe training checkpoint (<work>/gan.checkpoint.safetensors) "
        "instead of training one; the recipe's GAN settings apply and --steps etc. are ignored",
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", help="write the result as JSON here")
    p.add_argument("--grid", help="write renderer-over-generator samples as PNG here")
    return p.parse_args(argv)


def to01(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2


@torch.no_grad()
def samples(G, z: torch.Tensor) -> torch.Tensor:
    return torch.cat([G(z[i : i + 100], noise_mode="const").clamp(-1, 1) for i in range(0, len(z), 100)])


def read_real_of(flags: dict, n: int) -> dict:
    return {k: v[:n] for k, v in flags.items()}


def measure(G, z, real, read_real, classifier) -> tuple[dict, torch.Tensor, dict]:
    """L1 against the renderer, and per indicator the share of latents whose sample the classifier reads as it
    reads the renderer's face (the sample draws what its latent says); also the samples and what it read on them."""
    was_training = G.training
    G.eval()
    fake = samples(G, z)
    G.train(was_training)
    drawn = classifier.indicators(to01(fake))
    agreement = {k: round(float((drawn[k] == read_real[k]).float().mean()), 4) for k in drawn}
    return {"l1": round(float((fake - real).abs().mean()), 4), "agreement": agreement}, fake, drawn


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    result: dict = {"settings": vars(args)}
    clock = time.perf_counter()
    train = render_bank(args.train_images, args.seed, "train", "rendering train faces")
    if args.classifier:
        classifier = load_attribute_classifier(args.classifier, device)
    else:
        classifier, result["classifier_stage"] = train_attribute_classifier(
            train, ClassifierTrainConfig(), args.seed, device
        )
        if args.save_classifier:
            classifier.save(args.save_classifier)
    heldout = render_bank(2000, args.seed, "heldout", "rendering held-out faces")
    result["classifier"] = evaluate_classifier(classifier, heldout, device)
    result["classifier_seconds"] = round(time.perf_counter() - clock, 1)
    print("classifier", result["classifier"], flush=True)

    cfg = GanTrainConfig(
        objective="render",
        z_dim=args.z_dim,
        w_dim=args.w_dim,
        channel_base=args.channel_base,
        channel_max=args.channel_max,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        pixel_loss=args.pixel_loss,
        precision=args.precision,
    )
    if args.edge_weight is not None:
        cfg = replace(cfg, edge_weight=args.edge_weight)
    if args.attribute_weight is not None:
        cfg = replace(cfg, attribute_weight=args.attribute_weight)
    if args.pair_weight is not None:
        cfg = replace(cfg, pair_weight=args.pair_weight)
    if args.checkpoint:
        G, stats = checkpoint_generator(args.checkpoint, device)
        cfg = GanTrainConfig(**stats.pop("config"))
    gen = torch.Generator().manual_seed(10_000 + args.seed)  # latents of their own, never trained on
    z = torch.randn(args.eval_samples, cfg.z_dim, generator=gen)
    real, labels = render_latents(z)
    read_real = classifier.indicators(to01(real))
    curve = result["curve"] = []

    def on_step(done: int, G) -> None:
        if args.eval_every and done % args.eval_every == 0 and done < args.steps:
            row = {"steps": done, **measure(G, z[:200], real[:200], read_real_of(read_real, 200), classifier)[0]}
            curve.append(row)
            print(row, flush=True)

    if args.checkpoint:
        result["seconds_per_step"] = round(stats["seconds"] / max(1, stats["steps_done"]), 3)
    else:
        bank = train if cfg.attribute_weight > 0 else None  # the teacher learns from the same rendered faces
        G, stats = train_gan(bank, cfg, args.seed, device, on_step=on_step)
        result["seconds_per_step"] = round(stats["seconds"] / max(1, args.steps), 3)
    result["gan_config"], result["gan_stage"] = asdict(cfg), stats
    print("generator", stats, flush=True)

    scores, fake, drawn = measure(G, z, real, read_real, classifier)
    said = indicators(labels)
    result.update(scores)
    result["classifier_on_renders"] = {k: round(float((read_real[k] == said[k]).float().mean()), 4) for k in said}
    data = {k: round(float(v.float().mean()), 4) for k, v in said.items()}
    sample = {k: round(float(v.float().mean()), 4) for k, v in drawn.items()}
    result["data_frequencies"], result["sample_frequencies"] = data, sample
    result["max_frequency_difference_points"] = round(max(100 * abs(sample[k] - data[k]) for k in data), 2)
    result["environment"] = environment(device)
    print({k: result[k] for k in ("l1", "agreement", "max_frequency_difference_points")}, flush=True)
    if args.grid:
        rows = [t for i in range(0, 32, 8) for t in (real[i : i + 8], fake[i : i + 8])]
        save_image(grid(to01(torch.cat(rows)), 8), args.grid)
    if args.save_generator:
        from erasekit.models.stylegan import save_generator

        save_generator(G, Path(args.save_generator), dtype=torch.float16)
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
