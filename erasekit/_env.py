"""The environment a measurement ran in, recorded next to benchmark results (versions, device, threads, machine)."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

PACKAGES = ("erasekit", "torch", "diffusers", "transformers", "torchmetrics", "numpy")


def package_versions(packages=PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``packages`` (``None`` for a missing one)."""
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str | None:
    """The processor's name from /proc/cpuinfo (Linux), else :func:`platform.processor`; ``None`` when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def cpu_matmul_gflops(size: int = 512, seconds: float = 0.3) -> float:
    """fp32 matmul throughput of this process's torch threads right now, in GFLOP/s (best of ~``seconds`` of
    repeats). Shared machines of one kind run the same code up to 2.6x apart from one day to the next: this number,
    recorded next to a timing, tells a slow machine from a slow change."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: thread pool and allocator
    best, deadline = float("inf"), time.perf_counter() + seconds
    while best == float("inf") or time.perf_counter() < deadline:  # at least one timed repeat
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return float(f"{2 * size**3 / best / 1e9:.4g}")  # significant digits: a tiny, preempted run is not 0


def recorded_path(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` as a results file records it: relative to ``root`` (a repository) when inside it, so the record
    names no machine's home; absolute otherwise.

    Example:
        >>> recorded_path("/repo/worlds/w", "/repo"), recorded_path("/data/w", "/repo")
        ('worlds/w', '/data/w')
    """
    path, root = Path(path).resolve(), Path(root).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def environment(device: torch.device | str | None = None, packages=PACKAGES) -> dict:
    """Package versions, Python, the device (the GPU's name on CUDA), torch threads, CPU count, model and current
    matmul throughput (:func:`cpu_matmul_gflops`), and platform."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    return {
        "versions": package_versions(packages),
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_matmul_gflops": cpu_matmul_gflops(),
        "platform": platform.platform(),
    }
