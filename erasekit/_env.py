"""The environment a measurement ran in, recorded next to benchmark results (versions, device, threads, machine)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

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


def environment(device: torch.device | str | None = None, packages=PACKAGES) -> dict:
    """Package versions, Python, the device (the GPU's name on CUDA), torch threads, CPU count and platform."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    return {
        "versions": package_versions(packages),
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
