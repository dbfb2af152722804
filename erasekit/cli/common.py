"""Argument groups and helpers shared by subcommands."""

from __future__ import annotations

import argparse

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def subparser(sub, name: str, help: str, description: str, examples: str):  # noqa: A002
    """A subcommand parser whose help ends with examples."""
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="tiny-sd",
        help="model spec: 'tiny-sd', a world ('minicanvas', 'minicanvas:DIR'), 'local:/path', a diffusers folder, "
        "or a single-file checkpoint (model.safetensors, with --model-config) (default: tiny-sd)",
    )
    parser.add_argument(
        "--model-config",
        default=None,
        metavar="NAME|DIR",
        help="for a single-file checkpoint: its architecture, 'sd15' (configs erasekit ships) or a local diffusers "
        "folder of the same architecture (its configs and tokenizer are read, not its weights; no hub is contacted)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow pickled files (a .ckpt checkpoint, .pth classifiers): loading a pickle can execute code",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="weights' precision (default: fp32 on CPU, bf16 on CUDA)"
    )
    parser.add_argument(
        "--attention",
        default="auto",
        choices=("auto", "sdpa", "xformers", "eager"),
        help="attention backend (default: auto = SDPA, or xformers when installed on CUDA)",
    )


def add_override_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a method option (repeatable), e.g. --set steps=200",
    )


def add_preset_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default="auto",
        metavar="NAME|PATH|none",
        help="tuned settings: 'auto' (default: the preset of the model's world, if any), a world name "
        "('minicanvas'), WORLD/METHOD, a preset YAML file, or 'none' (the method's paper defaults)",
    )


def load_handle(args):
    import os

    from .. import distributed
    from ..models import load_model

    dtype = DTYPES[args.dtype] if args.dtype else None
    device = args.device
    if distributed.init() and device is None and torch.cuda.is_available():
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"  # one GPU per process
    extra = {}
    if getattr(args, "model_config", None) or getattr(args, "trust_pickle", False):
        extra = {"config": args.model_config, "trust_pickle": args.trust_pickle}
    return load_model(args.model, device=device, dtype=dtype, attention=args.attention, **extra)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or a range ``"0-7"``."""
    try:
        if "-" in text and "," not in text:
            lo, hi = text.split("-")
            seeds = list(range(int(lo), int(hi) + 1))
        else:
            seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds {text!r}: use a list like 0,1,2 or a range like 0-7 (seeds >= 0, low to high).")
    return seeds


def check_output(path: str | None, option: str = "--out") -> None:
    """Fail before any work when ``path`` cannot be written: its folder must exist and be writable."""
    import os
    from pathlib import Path

    if not path:
        return
    folder = Path(path).expanduser().parent
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: the folder {folder} does not exist; create it first (mkdir -p {folder}).")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable; choose another folder.")


def load_patches(paths: list[str] | None):
    """Load and compose the patches named on the command line (``None`` when there are none)."""
    from ..patch import load_patch

    patches = [load_patch(p) for p in paths or []]
    if not patches:
        return None
    combined = patches[0]
    for p in patches[1:]:
        combined = combined + p
    return combined
