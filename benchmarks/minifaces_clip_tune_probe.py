"""Probe: what does the MiniFaces CLIP tune (:func:`erasekit_worlds.recipes.minifaces.train_clip.tune_face_clip`) do to a
main-stage CLIP's zero-shot accuracy per attribute?

Loads a CLIP folder as the recipe saves it (fp16 weights, computed in fp32; e.g. ``WORK/clip/clip`` of a recipe run
with ``--work``), prints the zero-shot accuracies (held-out templates, the seed's 2,000 held-out faces) and, per
binary attribute, the cosine between the "with X" and "without X" prompt embeddings, then tunes it with the
recipe's data (the seed's training faces) and the given settings and prints the accuracies again. Run it alone on
the machine: the JSON records the seconds. Nothing is written unless ``--out`` is given.

Usage:
    python benchmarks/minifaces_clip_tune_probe.py --clip WORK/clip/clip --steps 1500 --lr 1e-3 --out r.json
    python benchmarks/minifaces_clip_tune_probe.py --clip WORK/clip/clip --steps 600 --lr 3e-4 --frozen-text
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

import torch

from erasekit._env import environment
from erasekit._io import write_json
from erasekit.models.tokenizer import clip_tokenizer
from erasekit_worlds.minifaces.data import BINARY_ATTRIBUTES, PHRASES, TRAIN_TEMPLATES, prompt_phrase, render_bank
from erasekit_worlds.recipes.minifaces.recipe import RecipeConfig, _reload_clip
from erasekit_worlds.recipes.minifaces.train_clip import FaceClipTuneConfig, _prototype, tune_face_clip, zero_shot


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", required=True, help="a CLIP folder saved by the recipe (WORK/clip/clip)")
    p.add_argument("--steps", type=int, default=FaceClipTuneConfig.steps, help="tune steps")
    p.add_argument("--lr", type=float, default=FaceClipTuneConfig.lr, help="AdamW peak learning rate")
    p.add_argument("--frozen-text", action="store_true", help="tune the image side only")
    p.add_argument("--statement-weight", type=float, default=FaceClipTuneConfig.statement_weight)
    p.add_argument("--seed", type=int, default=0, help="the recipe seed (training and held-out faces)")
    p.add_argument("--train-images", type=int, default=RecipeConfig.train_images, help="rendered training faces")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", help="write the result as JSON here")
    return p.parse_args(argv)


@torch.no_grad()
def prompt_cosines(model, tokenizer) -> dict[str, float]:
    """Per binary attribute, the cosine between its "with" and "without" prototypes (1.0: the text cannot tell)."""
    out = {}
    for a in BINARY_ATTRIBUTES:
        pos = _prototype(model, tokenizer, prompt_phrase(a), TRAIN_TEMPLATES)
        neg = _prototype(model, tokenizer, f"a face {PHRASES[a][1]}", TRAIN_TEMPLATES)
        out[a] = round(float(pos @ neg), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    tokenizer = clip_tokenizer()
    model = _reload_clip(args.clip, device)
    train = render_bank(args.train_images, args.seed, "train", "rendering train faces")
    heldout = render_bank(2000, args.seed, "heldout", "rendering held-out faces")
    tune = FaceClipTuneConfig(
        steps=args.steps, lr=args.lr, train_text=not args.frozen_text, statement_weight=args.statement_weight
    )
    result = {"settings": vars(args), "tune": asdict(tune)}
    result["before"] = {**zero_shot(model, tokenizer, heldout), "prompt_cosines": prompt_cosines(model, tokenizer)}
    print("before", result["before"], flush=True)
    result["stage"] = tune_face_clip(model, train, tokenizer, RecipeConfig().clip, tune, args.seed, device)
    result["after"] = {**zero_shot(model, tokenizer, heldout), "prompt_cosines": prompt_cosines(model, tokenizer)}
    print("after", result["after"], result["stage"], flush=True)
    result["environment"] = environment(device)
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
