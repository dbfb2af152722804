"""What every model handle shares: named components, parameter addressing, the base-model fingerprint, and the
run-time switches the shared training loop turns (no-ops unless a handle has something to switch)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator

import torch
from torch import nn

FINGERPRINT_TENSORS = 16  # tensors probed per component
FINGERPRINT_VALUES = 16  # values probed per tensor


def named_parameters(components: dict[str, nn.Module]) -> dict[str, torch.nn.Parameter]:
    """All parameters of ``components`` keyed ``"<component>.<parameter>"``, the address used everywhere."""
    return {f"{c}.{n}": p for c, module in components.items() for n, p in module.named_parameters()}


def component_fingerprint(module: nn.Module) -> dict:
    """A cheap, dtype-independent fingerprint of one component's weights.

    It hashes the architecture (parameter names and shapes) and probes a fixed set of values, which are compared
    with a tolerance so that the same weights in fp32, fp16 or bf16 match while a different checkpoint does not.
    """
    params = sorted(module.named_parameters())
    structure = json.dumps([(n, list(p.shape)) for n, p in params])
    picks = [params[i] for i in _spread(len(params), FINGERPRINT_TENSORS)]
    probe = []
    for _, p in picks:
        flat = p.detach().reshape(-1)
        idx = torch.tensor(_spread(flat.numel(), FINGERPRINT_VALUES), device=flat.device)
        probe += [round(float(v), 6) for v in flat[idx].float().cpu()]
    return {"structure": hashlib.sha256(structure.encode()).hexdigest()[:16], "probe": probe}


def fingerprint_mismatch(expected: dict, actual: dict, rtol: float = 2e-2, atol: float = 1e-3) -> str | None:
    """Return why two component fingerprints differ, or ``None`` when they match."""
    if expected.get("structure") != actual.get("structure"):
        return "its architecture differs (parameter names or shapes)"
    a, b = torch.tensor(expected["probe"]), torch.tensor(actual["probe"])
    if a.shape != b.shape or not torch.allclose(a, b, rtol=rtol, atol=atol):
        return "its weights differ"
    return None


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted({math.floor(i * (n - 1) / (k - 1)) for i in range(k)})


class ModelHandle:
    """Base class of handles: a kind (``"diffusion"`` or ``"stylegan"``) and named components.

    A method talks to its handle only, never to the wrapped model's internals, so a new architecture is a new
    handle. Besides the kind's own operations (:class:`~erasekit.models.DiffusionHandle`,
    :class:`~erasekit.models.StyleGANHandle`), every handle answers the loop's run-time switches below; the
    defaults do nothing.
    """

    kind: str = ""

    @property
    def components(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    def check_concept(self, concept: str) -> None:
        """Raise a clear ``ValueError`` before any work when ``concept`` cannot be erased from this model."""

    def gradient_checkpointing(self, enable: bool) -> bool:
        """Switch activation checkpointing of the trained network; returns the previous setting (to restore it)."""
        return False

    @contextlib.contextmanager
    def memory_format(self, channels_last: bool) -> Iterator[None]:
        """Run in the given memory layout inside the block (values never change)."""
        yield

    @contextlib.contextmanager
    def compiled(self, enable: bool = True) -> Iterator[None]:
        """Inside the block, forward passes may go through ``torch.compile``."""
        yield

    def named_parameters(self) -> dict[str, torch.nn.Parameter]:
        return named_parameters(self.components)

    def fingerprint(self, components: list[str] | None = None) -> dict[str, dict]:
        names = components or list(self.components)
        return {c: component_fingerprint(self.components[c]) for c in names}
