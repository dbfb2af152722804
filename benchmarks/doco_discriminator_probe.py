"""How much domain signal does DoCo's discriminator have, and at which timesteps?

DoCo's discriminator tells the frozen model's x̂₀ for an anchor prompt ("real") from the x̂₀ for the paired concept
prompt ("fake") on the same noisy anchor latent x_t. This probe measures, before any unlearning, how separable the
two are per timestep bucket: the mean |real − fake| of the x̂₀ latents, and the held-out accuracy of a PatchGAN
discriminator (DoCo's own class and settings) trained offline on the whole schedule and on the upper part of it only.
Held-out pairs come from anchor samples the discriminator never saw. Writes one JSON result (settings, environment,
per-bucket numbers) atomically.

Usage:
    python benchmarks/doco_discriminator_probe.py --target style:Watercolor --out /tmp/probe.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch
import torch.nn.functional as F

from erasekit._env import environment
from erasekit._io import write_json
from erasekit.methods.doco import DoCoConfig, PatchDiscriminator, predicted_x0
from erasekit.methods.salun import generated_latents
from erasekit.models import DiffusionHandle, load_pipeline
from erasekit_worlds.minicanvas.plans import erasure_plan

logger = logging.getLogger("doco_discriminator_probe")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default=None, help="world folder (default: the shipped weights)")
    p.add_argument("--target", default="style:Watercolor", help="MiniCanvas target, style:NAME or object:NAME")
    p.add_argument("--train-samples", type=int, default=32, help="anchor samples the discriminator trains on")
    p.add_argument("--test-samples", type=int, default=16, help="held-out anchor samples")
    p.add_argument("--draws", type=int, default=4, help="noise/timestep draws per sample and bucket")
    p.add_argument("--buckets", type=int, default=5, help="equal timestep buckets over the schedule")
    p.add_argument(
        "--upper-from", type=float, default=0.4, help="the 'upper' discriminator trains on t ≥ this fraction"
    )
    p.add_argument("--disc-steps", type=int, default=600, help="discriminator updates")
    p.add_argument("--disc-batch", type=int, default=8, help="pairs per discriminator update")
    p.add_argument("--sample-steps", type=int, default=20, help="sampler steps of the anchor samples (DoCo's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default="benchmarks/results/doco_discriminator_probe.json", help="JSON result path")
    return p.parse_args(argv)


def x0_pairs(handle, latents, anchor_emb, concept_emb, bounds, draws, gen):
    """(real, fake) x̂₀ of the frozen model for ``draws`` noisings of each latent with t uniform in ``bounds``."""
    real, fake = [], []
    for _ in range(draws):
        t = torch.randint(bounds[0], bounds[1], (len(latents),), generator=gen)
        x_t = handle.add_noise(latents, torch.randn(latents.shape, generator=gen), t)
        real.append(predicted_x0(handle, x_t, t, handle.predict_noise(x_t, t, anchor_emb)))
        fake.append(predicted_x0(handle, x_t, t, handle.predict_noise(x_t, t, concept_emb)))
    return torch.cat(real), torch.cat(fake)


def train_discriminator(real, fake, args, gen) -> tuple[PatchDiscriminator, float]:
    cfg = DoCoConfig()
    disc = PatchDiscriminator(real.shape[1], cfg.disc_channels, cfg.disc_layers)
    disc.reset_parameters(gen)
    opt = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))
    losses = []
    for _ in range(args.disc_steps):
        i = torch.randint(0, len(real), (args.disc_batch,), generator=gen)
        lr_, lf = disc(real[i]), disc(fake[i])
        loss = 0.5 * (
            F.binary_cross_entropy_with_logits(lr_, torch.ones_like(lr_))
            + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf))
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    tail = losses[-max(1, args.disc_steps // 10) :]
    return disc, sum(tail) / len(tail)


@torch.no_grad()
def accuracy(disc, real, fake) -> float:
    """Image-level accuracy: the mean patch logit decides."""
    return 0.5 * float(
        (disc(real).mean((1, 2, 3)) > 0).float().mean() + (disc(fake).mean((1, 2, 3)) < 0).float().mean()
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if (
        not 0.0 <= args.upper_from < 1.0
        or min(args.train_samples, args.test_samples, args.draws, args.buckets, args.sample_steps) < 1
    ):
        sys.exit("--upper-from must be in [0, 1); sample, draw and bucket counts >= 1.")
    torch.set_num_threads(args.threads)
    started = time.time()
    handle = DiffusionHandle(load_pipeline("minicanvas" if args.world is None else f"minicanvas:{args.world}"))
    concept, anchor, plan = erasure_plan("doco", args.target)
    gen = torch.Generator().manual_seed(args.seed)
    n = args.train_samples + args.test_samples
    anchors = [plan["anchor_prompts"][i % len(plan["anchor_prompts"])] for i in range(n)]
    concepts = [plan["concept_prompts"][i % len(plan["concept_prompts"])] for i in range(n)]
    total = handle.num_train_timesteps
    edges = [round(total * k / args.buckets) for k in range(args.buckets + 1)]
    buckets = list(zip(edges[:-1], edges[1:], strict=True))
    with torch.no_grad():
        latents = generated_latents(handle, anchors, gen, args.sample_steps, 7.5, 8)
        a_emb, c_emb = handle.encode_prompts(anchors), handle.encode_prompts(concepts)
        tr, te = slice(0, args.train_samples), slice(args.train_samples, n)
        pairs = {
            b: {
                split: x0_pairs(handle, latents[s], a_emb[s], c_emb[s], b, args.draws, gen)
                for split, s in (("train", tr), ("test", te))
            }
            for b in buckets
        }
    rows = []
    for b in buckets:
        real, fake = pairs[b]["test"]
        rows.append(
            {
                "t": list(b),
                "mean_abs_diff": float((real - fake).abs().mean()),
                "mean_abs_real": float(real.abs().mean()),
            }
        )
    for name, lo in (("all", 0), ("upper", round(args.upper_from * total))):
        chosen = [b for b in buckets if b[0] >= lo]
        real = torch.cat([pairs[b]["train"][0] for b in chosen])
        fake = torch.cat([pairs[b]["train"][1] for b in chosen])
        disc, final_loss = train_discriminator(real, fake, args, gen)
        logger.info("%s discriminator (t >= %d): final loss %.3f", name, lo, final_loss)
        for row, b in zip(rows, buckets, strict=True):
            row[f"held_out_accuracy_{name}"] = accuracy(disc, *pairs[b]["test"])
            row[f"final_loss_{name}"] = final_loss
    for row in rows:
        logger.info(
            "t in %s: |real-fake| %.3f, acc all %.2f, acc upper %.2f",
            row["t"],
            row["mean_abs_diff"],
            row["held_out_accuracy_all"],
            row["held_out_accuracy_upper"],
        )
    result = {
        "benchmark": "doco_discriminator_probe",
        "settings": {**vars(args), "concept": concept, "anchor": anchor, "sample_guidance": 7.5},
        "environment": environment(torch.device("cpu")),
        "buckets": rows,
        "seconds": round(time.time() - started, 1),
    }
    write_json(args.out, result)
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
