"""Stable Diffusion 1.5 at full size, end to end on a CPU, the way a user runs erasekit.

The SD 1.5 architecture (UNet ~860 M parameters, CLIP ViT-L/14 text encoder, the SD VAE) is built with seeded random
weights (:func:`erasekit.models.architectures.random_pipeline`; nothing is downloaded) and saved as a diffusers folder
in fp16, as the fp16 variant users download (``--save-dtype fp32`` for the full-precision one). The CLI then loads
it as it would any local folder: in fp32, the CPU default. Its UNet config says ``--resolution`` (256 px by default)
so that each erasure's sampling and training run at reduced resolution; the weights do not depend on it.

Every step runs as its own process and is measured from outside: wall time, CPU time and peak resident memory
(the kernel's high-water mark for that process, from ``wait4``), with its command line and its log:

- ``build``: build and save the model folder;
- ``uce``, ``salun``, ``esd``, ``doco``: ``erasekit erase --model local:DIR --method M`` with a few steps
  (:data:`METHOD_SETTINGS`; SalUn keeps its default mask ratio 0.5 over the whole UNet, with gradient
  checkpointing);
- ``info``: ``erasekit info`` on the SalUn patch; ``lora``: ``erasekit apply --lora`` of it;
- ``apply``: ``erasekit apply --out`` (the patched pipeline saved in fp16, like the input);
- ``python``: load the model and the patch in Python, ``patch.apply`` then ``remove``, timed, with a SHA-256 of every
  parameter before and after: removal must restore the exact bits.

The results JSON (with the machine: CPU, cores, memory, matmul speed before each step, package versions) is
rewritten atomically after every step, and a step already recorded is skipped unless ``--force``: an interrupted
run continues where it stopped. A Markdown table is written beside it (for ``--arch sd15``: docs/results/).

    python benchmarks/sd15_cpu.py                                   # everything, full size (see docs/performance.md)
    python benchmarks/sd15_cpu.py --only salun,info --force         # redo two steps
    python benchmarks/sd15_cpu.py --arch sd15-small                 # the same at ~1/6 of the size
    python benchmarks/sd15_cpu.py --arch sd15-tiny                  # a smoke run in a few minutes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "sd15_cpu"
CONCEPT = "Van Gogh style"
GB = 1e9
# The bars this benchmark checks (issue 32): decimal gigabytes.
BARS = {"peak_rss_bytes": 16 * GB, "salun_patch_bytes": 1.1 * GB, "apply_remove_seconds": 20.0}
# Smaller models of the same architecture, for trying the benchmark out (per-component config overrides).
ARCHS: dict[str, dict] = {
    "sd15": {},
    "sd15-small": {  # the UNet at 0.4x the channels (~1/6 of its parameters), the text encoder at 6 layers
        "unet": {"block_out_channels": [128, 256, 512, 512]},
        "vae": {"block_out_channels": [64, 128, 256, 256]},
        "text_encoder": {"num_hidden_layers": 6},
    },
    "sd15-tiny": {  # the same blocks at toy widths: a few minutes end to end
        "unet": {"block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "cross_attention_dim": 64},
        "vae": {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1},
        "text_encoder": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "projection_dim": 64},
    },
}  # fmt: skip
# A few steps of each method on data the model generates itself (2 sampler steps), batch 1: what is measured is
# memory and the cost of each phase, not the erasure's quality (random weights have nothing to erase). SalUn trains
# the whole UNet with AdamW (16 bytes per parameter), so it recomputes activations in the backward pass, as a user
# short of memory would: gradient checkpointing changes no result, only speed and memory.
METHOD_SETTINGS: dict[str, dict] = {
    "uce": {},
    "salun": {"steps": 2, "batch_size": 1, "num_forget": 2, "num_retain": 2, "sample_steps": 2, "sample_batch_size": 2,
              "gradient_checkpointing": True},
    "esd": {"steps": 2, "ddim_steps": 4},
    "doco": {"steps": 3, "warmup_steps": 1, "batch_size": 1, "num_anchor": 2, "sample_steps": 2, "sample_batch_size": 2},
}  # fmt: skip
STEPS = ("build", "uce", "salun", "esd", "doco", "info", "lora", "apply", "python")
NEEDS_PATCH = ("info", "lora", "apply", "python")  # they read the SalUn patch


# ---- measuring a child process -----------------------------------------------------------------------------------
# Runs the command as its child and writes what wait4 says about it. A child inherits the resident size of the process
# it was forked from as its high-water mark, so the command must be forked from this small launcher, not from the
# benchmark process (which holds torch).
_LAUNCHER = """
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"exit": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime}, f)
"""


def measure(command: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``command``, its output into ``log``; wall and CPU seconds and peak RSS (the kernel's high-water mark for
    the process and any children it waited for)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    report = log.with_suffix(".usage.json")
    report.unlink(missing_ok=True)
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        launcher = [sys.executable, "-c", _LAUNCHER, str(report), *command]
        subprocess.run(launcher, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, check=False)
    wall = time.perf_counter() - started
    usage = json.loads(report.read_text(encoding="utf-8"))
    return {
        "command": shlex.join(command),
        "returncode": usage["exit"],
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(usage["cpu"], 2),
        "peak_rss_bytes": usage["maxrss_kb"] * 1024,  # Linux reports kilobytes
        "log": str(log),
    }


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def _size(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


# ---- the steps -----------------------------------------------------------------------------------------------------
class Run:
    """Paths, commands and the results file of one benchmark run."""

    def __init__(self, args):
        self.args = args
        self.work = Path(args.workdir)
        self.model = self.work / "model"
        self.logs = self.work / "logs"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.env.setdefault("HF_HUB_OFFLINE", "1")

    def patch(self, method: str) -> Path:
        return self.work / f"{method}.safetensors"

    def cli(self, *argv: str) -> list[str]:
        return [sys.executable, "-m", "erasekit.cli.main", *argv]

    def child(self, mode: str, *argv: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--child", mode, *argv]

    def command(self, step: str) -> tuple[list[str], Path | None]:
        """The command of ``step`` and the file or folder it writes (whose size is recorded)."""
        a, model = self.args, f"local:{self.model}"
        if step == "build":
            argv = ["--arch", a.arch, "--resolution", str(a.resolution), "--save-dtype", a.save_dtype]
            return self.child("build", *argv, "--seed", str(a.seed), "--workdir", str(self.work)), self.model
        if step in METHOD_SETTINGS:
            sets = [f"{k}={json.dumps(v)}" for k, v in METHOD_SETTINGS[step].items()]
            sets += [f"seed={a.seed}", "progress=true"]
            argv = ["erase", "--model", model, "--method", step, "--concept", CONCEPT, "--out", str(self.patch(step))]
            return self.cli(*argv, *[x for s in sets for x in ("--set", s)]), self.patch(step)
        salun = str(self.patch("salun"))
        if step == "info":
            return self.cli("info", salun), None
        if step == "lora":
            out = self.work / "salun_lora.safetensors"
            return self.cli("apply", "--model", model, "--patch", salun, "--lora", str(out), "--rank", "8"), out
        if step == "apply":
            out = self.work / "salun_applied"
            argv = ["apply", "--model", model, "--patch", salun, "--dtype", "fp16", "--out", str(out), "--overwrite"]
            return self.cli(*argv), out
        if step == "python":
            return self.child("python", "--workdir", str(self.work)), self.work / "python_apply.json"
        raise ValueError(step)

    def run_step(self, step: str) -> dict:
        from erasekit._env import cpu_matmul_gflops

        if step in NEEDS_PATCH and not self.patch("salun").is_file():
            raise SystemExit(f"{step} needs the SalUn patch {self.patch('salun')}; run the salun step first.")
        if step != "build" and not (self.model / "model_index.json").is_file():
            raise SystemExit(f"{step} needs the model folder {self.model}; run the build step first.")
        command, output = self.command(step)
        gflops = cpu_matmul_gflops()  # how fast this machine is right now (shared machines vary)
        print(f"[{step}] {shlex.join(command)}", flush=True)
        entry = {**measure(command, self.logs / f"{step}.log", self.env), "matmul_gflops_before": gflops}
        entry["status"] = "ok" if entry["returncode"] == 0 else "failed"
        if output is not None:
            entry["output"], entry["output_bytes"] = str(output), _size(output)
        if entry["status"] == "failed":
            entry["log_tail"] = _tail(self.logs / f"{step}.log")
        elif step == "python":
            entry["python"] = json.loads(output.read_text(encoding="utf-8"))
        elif step in ("lora", "build"):  # the JSON summary each prints last
            entry[step] = _json_block(self.logs / f"{step}.log")
        print(
            f"[{step}] {entry['status']}: {entry['wall_seconds']} s wall, {entry['cpu_seconds']} s CPU, "
            f"peak RSS {entry['peak_rss_bytes'] / GB:.2f} GB",
            flush=True,
        )
        return entry


def _json_block(log: Path) -> dict | None:
    """The JSON summary a step printed last (the last ``{...}`` block that starts a line of its output)."""
    text = "\n" + log.read_text(encoding="utf-8", errors="replace")
    try:
        return json.loads(text[text.rfind("\n{") + 1 :])
    except json.JSONDecodeError:
        return None


# ---- children: the build and the Python apply/remove -----------------------------------------------------------
def child_build(args) -> None:
    """Build the architecture with seeded random weights and save it as a diffusers folder (atomically)."""
    import torch

    from erasekit._io import atomic_dir
    from erasekit.models.architectures import random_pipeline

    overrides = {k: dict(v) for k, v in ARCHS[args.arch].items()}
    overrides.setdefault("unet", {})["sample_size"] = args.resolution // 8  # latents of the VAE's 8x downsampling
    pipe = random_pipeline("sd15", seed=args.seed, overrides=overrides)
    if args.save_dtype == "fp16":
        pipe = pipe.to(dtype=torch.float16)
    with atomic_dir(Path(args.workdir) / "model", overwrite=True) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    counts = {
        name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("unet", "vae", "text_encoder")
    }
    print(json.dumps({"parameters": counts}))


def _digests(params) -> dict[str, str]:
    """SHA-256 of every parameter's bytes, one tensor at a time (no copy of the model)."""
    import torch

    out = {}
    for key, p in params.items():
        data = p.detach().contiguous().reshape(-1)
        out[key] = hashlib.sha256(data.view(torch.uint8).numpy()).hexdigest()
    return out


def child_python(args) -> None:
    """Load the model and the SalUn patch, apply and remove it in Python; time each part and check the bits."""
    import erasekit

    work = Path(args.workdir)
    timings = {}
    started = time.perf_counter()
    handle = erasekit.load_model(f"local:{work / 'model'}")
    timings["load_model_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    patch = erasekit.load_patch(work / "salun.safetensors")
    timings["load_patch_seconds"] = time.perf_counter() - started
    params = handle.named_parameters()
    before = _digests(params)
    started = time.perf_counter()
    applied = patch.apply(handle)
    timings["apply_seconds"] = time.perf_counter() - started
    during = _digests({k: params[k] for k in patch.deltas})
    started = time.perf_counter()
    applied.remove()
    timings["remove_seconds"] = time.perf_counter() - started
    after = _digests(params)
    result = {
        **{k: round(v, 3) for k, v in timings.items()},
        "apply_remove_seconds": round(timings["apply_seconds"] + timings["remove_seconds"], 3),
        "patched_tensors": len(patch.deltas),
        "changed_values": patch.num_changed,
        "apply_changed_every_patched_tensor": all(during[k] != before[k] for k in patch.deltas),
        "remove_bit_exact": after == before,
        "parameters_checked": len(before),
    }
    from erasekit._io import write_json

    write_json(work / "python_apply.json", result)
    print(json.dumps(result))
    if not result["remove_bit_exact"]:
        raise SystemExit("removing the patch did not restore the original bits")


# ---- results -------------------------------------------------------------------------------------------------------
def settings(args) -> dict:
    return {
        "arch": args.arch,
        "arch_overrides": ARCHS[args.arch],
        "resolution": args.resolution,
        "save_dtype": args.save_dtype,
        "load_dtype": "fp32 (the CPU default); apply --out loads fp16",
        "seed": args.seed,
        "concept": CONCEPT,
        "methods": METHOD_SETTINGS,
        "workdir": str(Path(args.workdir)),
    }


def machine() -> dict:
    from erasekit._env import environment

    env = environment()
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split(":")[0] in MEMINFO}
    except OSError:
        mem = {}
    return {
        **env,
        "memory_total_bytes": mem.get("MemTotal"),
        "memory_available_at_start_bytes": mem.get("MemAvailable"),
    }


MEMINFO = ("MemTotal", "MemAvailable")


def bars(steps: dict) -> dict:
    """Each bar: the measured figure and whether it is met (``None`` while its steps have not run)."""
    commands = [s for s in steps.values() if s.get("status")]
    peak = max((s["peak_rss_bytes"] for s in commands), default=None)
    salun = steps.get("salun", {}).get("output_bytes")
    python = steps.get("python", {}).get("python") or {}
    seconds = python.get("apply_remove_seconds")
    return {
        "every_step_succeeded": {
            "value": [k for k in STEPS if steps.get(k, {}).get("status") != "ok"] or "all",
            "met": all(steps.get(k, {}).get("status") == "ok" for k in STEPS),
        },
        "peak_rss_bytes": {"value": peak, "limit": BARS["peak_rss_bytes"], "met": _le(peak, BARS["peak_rss_bytes"])},
        "salun_patch_bytes": {
            "value": salun,
            "limit": BARS["salun_patch_bytes"],
            "met": _le(salun, BARS["salun_patch_bytes"]),
        },
        "apply_remove_seconds": {
            "value": seconds,
            "limit": BARS["apply_remove_seconds"],
            "met": _le(seconds, BARS["apply_remove_seconds"]),
        },
        "remove_bit_exact": {"value": python.get("remove_bit_exact"), "met": python.get("remove_bit_exact")},
    }


def _le(value, limit):
    return None if value is None else value <= limit


def markdown(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    lines = [
        "# Stable Diffusion 1.5 size on CPU",
        "",
        f"Written by `benchmarks/sd15_cpu.py` (`{result['argv']}`). Architecture `{s['arch']}` with random weights "
        f"saved in {s['save_dtype']}, loaded in fp32; erasures at {s['resolution']} px with a few steps "
        f"(every setting is in `{result['results_file']}`). Each step is its own "
        "process; peak RSS is the kernel's high-water mark for it.",
        "",
        f"Machine: {m.get('cpu_model')}, {m.get('cpu_count')} cores, "
        f"{(m.get('memory_total_bytes') or 0) / 2**30:.1f} GiB memory, torch {m['versions'].get('torch')}, "
        f"diffusers {m['versions'].get('diffusers')}, erasekit {m['versions'].get('erasekit')}.",
        "",
        "| step | wall s | CPU s | peak RSS GB | output | output MB | matmul GFLOP/s before | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in STEPS:
        e = result["steps"].get(name)
        if not e:
            lines.append(f"| {name} | | | | | | | not run |")
            continue
        out = Path(e["output"]).name if e.get("output") else ""
        size = f"{e['output_bytes'] / 1e6:.1f}" if e.get("output_bytes") is not None else ""
        lines.append(
            f"| {name} | {e['wall_seconds']:.1f} | {e['cpu_seconds']:.1f} | {e['peak_rss_bytes'] / GB:.2f} | {out} "
            f"| {size} | {e['matmul_gflops_before']:.0f} | {e['status']} |"
        )
    lines += ["", "| bar | measured | limit | met |", "|---|---|---|---|"]
    for name, bar in result["bars"].items():
        value, limit = bar["value"], bar.get("limit")
        if isinstance(value, float | int) and not isinstance(value, bool) and name.endswith("bytes"):
            value, limit = f"{value / GB:.3f} GB", f"{limit / GB:.1f} GB"
        met = {True: "yes", False: "**no**", None: "not measured"}[bar["met"]]
        lines.append(f"| {name} | {value} | {limit if limit is not None else ''} | {met} |")
    python = result["steps"].get("python", {}).get("python")
    if python:
        lines += [
            "",
            f"Python apply/remove of the SalUn patch ({python['changed_values']:,} values in "
            f"{python['patched_tensors']} tensors): apply {python['apply_seconds']} s, remove "
            f"{python['remove_seconds']} s, bit-exact after removal: {python['remove_bit_exact']} "
            f"({python['parameters_checked']} tensors hashed).",
        ]
    return "\n".join(lines) + "\n"


def save(result: dict, out: Path, md: Path) -> None:
    from erasekit._io import write_json, write_text

    result["bars"] = bars(result["steps"])
    write_json(out, result)
    write_text(md, markdown(result))


def load_results(args, out: Path) -> dict:
    current = settings(args)
    if out.is_file():
        result = json.loads(out.read_text(encoding="utf-8"))
        if result.get("settings") == current:
            return result
        if not args.force:
            raise SystemExit(
                f"{out} holds results made with other settings; pass --force to start over, or choose another --out."
            )
    return {"benchmark": NAME, "settings": current, "steps": {}}


# ---- command line ------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=sorted(ARCHS), default="sd15", help="sd15 (full size) or a smaller trial")
    p.add_argument("--only", default=None, help=f"comma-separated steps to run (default all: {','.join(STEPS)})")
    p.add_argument("--force", action="store_true", help="rerun steps already recorded (with --only: just those)")
    p.add_argument("--resolution", type=int, default=256, help="image size the erasures run at (default 256 px)")
    p.add_argument("--save-dtype", choices=("fp16", "fp32"), default="fp16", help="weights in the model folder")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and every erasure")
    p.add_argument("--workdir", default=None, help="model folder, patches and logs (default: a cache folder)")
    p.add_argument(
        "--out",
        default=None,
        help="results JSON (default benchmarks/results/sd15_cpu.json for sd15, in --workdir otherwise); "
        "the Markdown goes to docs/results/sd15_cpu.md for the default, beside the JSON otherwise",
    )
    p.add_argument("--child", choices=("build", "python"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.resolution % 64 or args.resolution < 64:
        p.error("--resolution must be a multiple of 64 (the UNet halves the latents three times)")
    if args.workdir is None:
        cache = os.environ.get("ERASEKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "erasekit")
        args.workdir = os.path.join(cache, NAME, args.arch)
    if args.out is None:
        default = args.arch == "sd15"
        args.out = str(ROOT / "benchmarks" / "results" / f"{NAME}.json") if default else None
        args.out = args.out or os.path.join(args.workdir, f"{NAME}_{args.arch}.json")
    steps = STEPS if args.only is None else tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        p.error(f"--only: unknown step(s) {unknown or args.only!r}; choose from {','.join(STEPS)}")
    args.steps = [s for s in STEPS if s in steps]
    return args


def markdown_path(out: Path) -> Path:
    if out.resolve() == (ROOT / "benchmarks" / "results" / f"{NAME}.json").resolve():
        return ROOT / "docs" / "results" / f"{NAME}.md"
    return out.with_suffix(".md")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child == "build":
        child_build(args)
        return {}
    if args.child == "python":
        child_python(args)
        return {}
    out = Path(args.out)
    result = load_results(args, out)
    result["results_file"] = (
        out.resolve().relative_to(ROOT).as_posix() if out.resolve().is_relative_to(ROOT) else out.name
    )
    result["argv"] = shlex.join(["python", "benchmarks/sd15_cpu.py", *(sys.argv[1:] if argv is None else argv)])
    result["machine"] = machine()
    run = Run(args)
    for step in args.steps:
        if step in result["steps"] and result["steps"][step].get("status") == "ok" and not args.force:
            print(f"[{step}] already recorded in {out}; skipped (--force reruns it)", flush=True)
            continue
        result["steps"][step] = run.run_step(step)
        save(result, out, markdown_path(out))  # atomically, after every step: an interrupted run resumes here
    save(result, out, markdown_path(out))
    print(markdown(result))
    failed = [k for k in args.steps if result["steps"].get(k, {}).get("status") != "ok"]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (logs in {run.logs})")
    return result


if __name__ == "__main__":
    main()
