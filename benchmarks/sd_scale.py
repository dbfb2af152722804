"""Speed and memory of erasekit's erasure loops and sampling at Stable Diffusion 1.5 scale, with random weights.

Speed does not depend on the weights' values, so the SD 1.5 architecture (UNet ~860 M parameters, cross-attention
dim 768; a CLIP ViT-L/14-size text encoder; the SD VAE) is built with random weights: no download. Each workload is
run twice in the same process: erasekit's configuration and a reference-style one (fp32 weights, eager attention,
no autocast, full AdamW states, a host sync every step), and the ratio is reported. FLOPs are counted with
``torch.utils.flop_counter`` over one training step (or one sampling call), so TFLOP/s and MFU are measured, not
estimated. ``--scale tiny`` runs the same code on the tiny test components in seconds (a smoke test; its timings
mean nothing).

    python benchmarks/sd_scale.py --scale sd15 --out benchmarks/results/sd_scale_h100.json    # on a GPU
    python benchmarks/sd_scale.py --scale tiny --out /tmp/sd_scale_tiny.json                   # anywhere
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import erasekit
from erasekit._io import write_json, write_text
from erasekit.methods import Callback, get_method, list_methods
from erasekit.models import DiffusionHandle, set_attention_backend

logger = logging.getLogger("sd_scale")

# Dense bf16 peak of the devices we compare against (TFLOP/s); DESIGN.md §6 uses ~790 for an H100.
PEAK_TFLOPS = {"H100": 790.0, "H200": 790.0, "A100": 312.0}
# The reference workloads of issue 8: (config overrides, steps the projection assumes).
WORKLOADS = {
    "esd": ({"batch_size": 1, "ddim_steps": 50}, 1000),
    "salun": ({"batch_size": 8, "forget_samples": 400, "retain_samples": 400}, 500),
    "doco": ({"batch_size": 8}, 2000),
}
# What "reference-style" means for every loop (and the pipeline is loaded in fp32 with eager attention).
REFERENCE = {
    "mixed_precision": "no",
    "optimizer_states": "full",
    "compile": False,
    "sync_every": 1,
    "channels_last": False,
}


def sd15_pipeline(device: torch.device, dtype: torch.dtype):
    """A StableDiffusionPipeline with the SD 1.5 architecture and random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from erasekit.models.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            projection_dim=768,
            vocab_size=49408,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            hidden_act="quick_gelu",
        )
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    )
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def build(scale: str, device: torch.device, reference: bool):
    dtype = torch.float32 if reference or device.type == "cpu" else torch.bfloat16
    if scale == "tiny":
        from erasekit.models.tiny import tiny_sd_pipeline

        pipe = tiny_sd_pipeline().to(device)
        pipe = pipe if pipe.unet.dtype == dtype else pipe.to(dtype=dtype)
    else:
        pipe = sd15_pipeline(device, dtype)
    set_attention_backend(pipe, "eager" if reference else "sdpa")
    return DiffusionHandle(pipe)


class StepProbe(Callback):
    """Times the steps after ``warmup`` (one device sync at each end) and counts one step's FLOPs."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device = warmup, device
        self.flop_mode, self.flops, self.t0, self.t1, self.start_time = None, None, None, None, time.perf_counter()

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_start(self, state) -> None:
        self.prepare_seconds = time.perf_counter() - self.start_time

    def on_step_end(self, state, logs) -> None:
        if state.step == self.warmup:
            self.t0 = self._sync()
            self.flop_mode = FlopCounterMode(display=False)
            self.flop_mode.__enter__()
        elif state.step == self.warmup + 1 and self.flop_mode is not None:
            self.flop_mode.__exit__(None, None, None)
            self.flops, self.flop_mode = self.flop_mode.get_total_flops(), None
        if state.step == state.total_steps:
            self.t1 = self._sync()


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def run_erasure(handle, method: str, overrides: dict, ref_steps: int, args, reference: bool) -> dict:
    cls = get_method(method)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    cfg = {k: v for k, v in overrides.items() if k in fields}
    if args.scale == "tiny":
        cfg = {k: min(v, 4) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in cfg.items()}
    cfg.update(steps=args.warmup + args.measure, progress=False, compile=args.compile and not reference)
    cfg.update(REFERENCE if reference else {})
    probe = StepProbe(args.warmup, handle.device)
    if handle.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(handle.device)
    started = time.perf_counter()
    patch = erasekit.erase(
        handle,
        method,
        "a painting in the style of a famous artist",
        callbacks=[probe],
        **{k: v for k, v in cfg.items() if k in fields},
    )
    return _summarise(probe, handle, patch, ref_steps, args, time.perf_counter() - started, cfg)


def _summarise(probe, handle, patch, ref_steps, args, seconds, cfg) -> dict:
    ms = 1000 * (probe.t1 - probe.t0) / max(args.measure - 1, 1) if probe.t0 else None
    tflops = probe.flops / (ms / 1000) / 1e12 if probe.flops and ms else None
    peak = peak_tflops(handle.device)
    return {
        "config": cfg,
        "ms_per_step": ms,
        "flops_per_step": probe.flops,
        "tflops": tflops,
        "mfu": tflops / peak if tflops and peak else None,
        "prepare_seconds": probe.prepare_seconds,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(handle.device) if handle.device.type == "cuda" else None,
        "reference_steps": ref_steps,
        "projected_seconds": probe.prepare_seconds + ms / 1000 * ref_steps if ms else None,
        "wall_seconds": seconds,
        "patch_bytes": patch.nbytes,
    }


def run_sampling(handle, batch: int, args) -> dict:
    prompts, seeds = ["a painting of a house"] * batch, list(range(batch))
    steps = 2 if args.scale == "tiny" else 50
    handle.generate(prompts[:1], seeds[:1], 2, 7.5)  # warm-up
    with FlopCounterMode(display=False) as counter:
        handle.generate(prompts[:1], seeds[:1], steps, 7.5)
    flops = counter.get_total_flops() * batch
    if handle.device.type == "cuda":
        torch.cuda.synchronize(handle.device)
        torch.cuda.reset_peak_memory_stats(handle.device)
    t0 = time.perf_counter()
    handle.generate(prompts, seeds, steps, 7.5)
    if handle.device.type == "cuda":
        torch.cuda.synchronize(handle.device)
    seconds = time.perf_counter() - t0
    peak = peak_tflops(handle.device)
    return {
        "batch": batch,
        "steps": steps,
        "guidance": 7.5,
        "seconds_per_image": seconds / batch,
        "tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / 1e12 / peak if peak else None,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(handle.device) if handle.device.type == "cuda" else None,
    }


def run_info(args, device: torch.device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    return {
        "argv": sys.argv[1:],
        "scale": args.scale,
        "device": str(device),
        "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "peak_tflops": peak_tflops(device),
        "cpu_threads": torch.get_num_threads(),
        "git_commit": commit,
        "versions": {p: version(p) for p in ("torch", "diffusers", "transformers", "accelerate")}
        | {"erasekit": erasekit.__version__},
    }


def markdown(result: dict) -> str:
    lines = ["| workload | config | ms/step | TFLOP/s | MFU | peak GB | projected s | speed-up |", "|" + "---|" * 8]
    for name, r in result["erasure"].items():
        for kind in ("erasekit", "reference"):
            x = r[kind]
            lines.append(
                f"| {name} | {kind} | {_f(x['ms_per_step'])} | {_f(x['tflops'])} | {_f(x['mfu'], 2)} | "
                f"{_f((x['peak_memory_bytes'] or 0) / 1e9)} | {_f(x['projected_seconds'])} | "
                f"{_f(r.get('speedup')) if kind == 'erasekit' else ''} |"
            )
    for s in result["sampling"]:
        lines.append(
            f"| sampling b{s['batch']} | erasekit | {_f(1000 * s['seconds_per_image'])} ms/img | "
            f"{_f(s['tflops'])} | {_f(s['mfu'], 2)} | {_f((s['peak_memory_bytes'] or 0) / 1e9)} | | |"
        )
    return "\n".join(lines) + "\n"


def _f(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=("tiny", "sd15"), default="sd15", help="component sizes (default sd15)")
    p.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    p.add_argument("--methods", default="esd,salun,doco", help="erasure workloads (registered ones only)")
    p.add_argument("--batches", default="8,16", help="sampling batch sizes")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before measuring (compilation, caches)")
    p.add_argument("--measure", type=int, default=10, help="timed steps per workload")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet in erasekit's configuration")
    p.add_argument("--no-reference", action="store_true", help="skip the reference-style runs")
    p.add_argument("--out", required=True, help="JSON result (a .md table is written beside it)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    result = {"run": run_info(args, device), "erasure": {}, "sampling": []}
    for method in [m for m in args.methods.split(",") if m in list_methods() and m in WORKLOADS]:
        overrides, ref_steps = WORKLOADS[method]
        entry = {"erasekit": run_erasure(build(args.scale, device, False), method, overrides, ref_steps, args, False)}
        if not args.no_reference:
            entry["reference"] = run_erasure(build(args.scale, device, True), method, overrides, ref_steps, args, True)
            a, b = entry["erasekit"]["ms_per_step"], entry["reference"]["ms_per_step"]
            entry["speedup"] = b / a if a and b else None
        else:
            entry["reference"] = {k: None for k in entry["erasekit"]}
        result["erasure"][method] = entry
    handle = build(args.scale, device, False)
    result["sampling"] = [run_sampling(handle, int(b), args) for b in args.batches.split(",")]
    write_json(args.out, result)
    write_text(Path(args.out).with_suffix(".md"), markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
