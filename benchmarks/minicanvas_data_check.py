"""Check that MiniCanvas styles and objects are learnable: a small CNN, trained briefly on CPU, must tell them apart.

Trains one convolutional network with a style head and an object head on the ``train`` split, reports style and
object accuracy on the disjoint ``heldout`` split (the UnlearnCanvas evaluator's job, in miniature), and measures
render speed on one core. Writes one JSON result (settings, seeds, environment, numbers) atomically.

Usage:
    python benchmarks/minicanvas_data_check.py --out /tmp/minicanvas_data_check.json
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import nn

from erasekit._io import write_json
from erasekit_worlds.minicanvas import OBJECTS, STYLES, MiniCanvasDataset, render

logger = logging.getLogger("minicanvas_data_check")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/minicanvas_data_check.json", help="JSON result path")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (images and captions)")
    p.add_argument("--train-seed", type=int, default=0, help="seed for weight init and batch order")
    p.add_argument("--train-per-pair", type=int, default=24, help="training images per (style, object) pair")
    p.add_argument("--eval-per-pair", type=int, default=10, help="held-out images per (style, object) pair")
    p.add_argument("--epochs", type=int, default=8, help="passes over the training images")
    p.add_argument("--max-seconds", type=float, default=200.0, help="stop training early after this long")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW peak learning rate (one-cycle schedule)")
    p.add_argument("--width", type=int, default=16, help="channels of the first conv layer (doubles per block)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--speed-images", type=int, default=330, help="images rendered to time render()")
    return p.parse_args(argv)


class TwoHeadCNN(nn.Module):
    """Four conv blocks (conv-BN-ReLU, pooling to 4×4), then a style head and an object head."""

    def __init__(self, n_styles: int, n_objects: int, width: int = 32):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.style_head = nn.Linear(4 * chans[-1], n_styles)
        self.object_head = nn.Linear(4 * chans[-1], n_objects)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.style_head(h), self.object_head(h)


def render_speed(n_images: int, seed: int) -> dict:
    """Mean milliseconds per ``render`` call, overall and per style, cycling through objects and indices."""
    per_style = {}
    for style in STYLES:
        count = max(1, n_images // len(STYLES))
        start = time.perf_counter()
        for k in range(count):
            render(style, OBJECTS[k % len(OBJECTS)], 1000 + k, seed)
        per_style[style] = 1000 * (time.perf_counter() - start) / count
    return {"ms_per_image": float(np.mean(list(per_style.values()))), "ms_per_image_by_style": per_style}


def materialise(ds: MiniCanvasDataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All of a dataset's images as uint8 (N, 3, 64, 64) plus style and object label tensors."""
    from tqdm.auto import tqdm

    images = torch.empty((len(ds), 3, 64, 64), dtype=torch.uint8)
    styles, objects = torch.empty(len(ds), dtype=torch.long), torch.empty(len(ds), dtype=torch.long)
    for i in tqdm(range(len(ds)), desc=f"render {ds.split}", unit="img", disable=None):
        item = ds[i]
        images[i] = ((item["pixel_values"] + 1) * 127.5).round().to(torch.uint8)
        styles[i], objects[i] = item["style_id"], item["object_id"]
    return images, styles, objects


def to_input(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(127.5).sub(1.0)


def train(model: nn.Module, data: tuple, args: argparse.Namespace) -> dict:
    """Train both heads jointly with AdamW and a one-cycle schedule; stop at ``max_seconds``."""
    images, styles, objects = data
    gen = torch.Generator().manual_seed(args.train_seed)
    steps_per_epoch = -(-len(images) // args.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch)
    loss_fn, start, history = nn.CrossEntropyLoss(), time.perf_counter(), []
    model.train()
    for epoch in range(args.epochs):
        order, total = torch.randperm(len(images), generator=gen), 0.0
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            s_logits, o_logits = model(to_input(images[idx]))
            loss = loss_fn(s_logits, styles[idx]) + loss_fn(o_logits, objects[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        history.append(round(total / len(images), 4))
        logger.info("epoch %d  loss %.4f  %.0f s", epoch + 1, history[-1], time.perf_counter() - start)
        if time.perf_counter() - start > args.max_seconds:
            logger.warning("stopping after %d epochs: --max-seconds reached", epoch + 1)
            break
    return {"epochs_run": len(history), "loss_by_epoch": history, "train_seconds": time.perf_counter() - start}


@torch.no_grad()
def evaluate(model: nn.Module, data: tuple) -> dict:
    """Style and object accuracy overall, per class, and the most frequent confusions."""
    images, styles, objects = data
    model.eval()
    preds = [model(to_input(images[i : i + 256])) for i in range(0, len(images), 256)]
    s_pred = torch.cat([p[0] for p in preds]).argmax(1)
    o_pred = torch.cat([p[1] for p in preds]).argmax(1)
    return {
        "style_accuracy": (s_pred == styles).float().mean().item(),
        "object_accuracy": (o_pred == objects).float().mean().item(),
        "style_accuracy_by_class": per_class(s_pred, styles, STYLES),
        "object_accuracy_by_class": per_class(o_pred, objects, OBJECTS),
        "object_accuracy_by_style": {
            n: (o_pred == objects)[styles == k].float().mean().item() for k, n in enumerate(STYLES)
        },
        "style_accuracy_by_object": {
            n: (s_pred == styles)[objects == k].float().mean().item() for k, n in enumerate(OBJECTS)
        },
        "style_confusions": confusions(s_pred, styles, STYLES),
        "object_confusions": confusions(o_pred, objects, OBJECTS),
    }


def per_class(pred: torch.Tensor, true: torch.Tensor, names: tuple[str, ...]) -> dict[str, float]:
    return {n: (pred[true == k] == k).float().mean().item() for k, n in enumerate(names) if (true == k).any()}


def confusions(pred: torch.Tensor, true: torch.Tensor, names: tuple[str, ...], top: int = 5) -> list[str]:
    wrong = [(names[t], names[p]) for t, p in zip(true.tolist(), pred.tolist(), strict=True) if t != p]
    counts: dict[tuple[str, str], int] = {}
    for pair in wrong:
        counts[pair] = counts.get(pair, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    return [f"{t} -> {p}: {c}" for (t, p), c in ranked]


def main(argv: list[str] | None = None) -> dict:
    """Run the check and write the JSON result; returns the result dict."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny late-training activations otherwise slow CPU kernels down a lot
    torch.manual_seed(args.train_seed)
    speed = render_speed(args.speed_images, args.seed)
    logger.info("render: %.2f ms per image", speed["ms_per_image"])
    t0 = time.perf_counter()
    train_data = materialise(MiniCanvasDataset(per_pair=args.train_per_pair, seed=args.seed, split="train"))
    eval_data = materialise(MiniCanvasDataset(per_pair=args.eval_per_pair, seed=args.seed, split="heldout"))
    render_seconds = time.perf_counter() - t0
    model = TwoHeadCNN(len(STYLES), len(OBJECTS), args.width)
    fit = train(model, train_data, args)
    scores = evaluate(model, eval_data)
    logger.info(
        "held-out style accuracy %.4f, object accuracy %.4f", scores["style_accuracy"], scores["object_accuracy"]
    )
    result = {
        "benchmark": "minicanvas_data_check",
        "settings": vars(args),
        "n_train": len(train_data[0]),
        "n_eval": len(eval_data[0]),
        "styles": list(STYLES),
        "objects": list(OBJECTS),
        "render": {**speed, "dataset_render_seconds": render_seconds},
        "training": fit,
        "heldout": scores,
        "environment": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
    }
    write_json(args.out, result)
    logger.info("wrote %s", args.out)
    return result


if __name__ == "__main__":
    main()
