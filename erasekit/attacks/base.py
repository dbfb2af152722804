"""The attack registry, the config every attack derives from, and the context an attack runs in.

An attack is a registered class with a config dataclass (every budget: steps, tokens, images, learning rate, seeds)
and one entry point, ``run(ctx) -> dict``. It measures the same thing on every model variant the context offers:
``"patched"`` (the base model with the erasure applied), ``"base"`` (the attack must succeed there, or it proves
nothing) and ``"gold"`` (a model retrained without the concept, when given: the honest floor). An attack leaves every
model as it found it: temporary changes go through patches, which are removed bit-exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..methods.config import option
from ..patch import DenseDelta, ErasurePatch
from .judge import Judge

_REGISTRY: dict[str, type[Attack]] = {}
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class AttackConfig:
    """Fields every attack shares; subclasses add their budgets, each with help text."""

    seed: int = option(0, "seed of every random draw of the attack (initialisation, noise, timesteps)")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and f.name != "seed" and value < 0:
                raise ValueError(f"{type(self).__name__}.{f.name} must be >= 0, got {value!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AttackConfig:
        """A config from ``{field: value}``; an unknown key is an error naming the valid ones."""
        data = dict(data or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in valid]
        if unknown:
            raise ValueError(f"Unknown option {unknown[0]!r} for {cls.__name__}; valid: {', '.join(valid)}.")
        return cls(**data)


class Attack:
    """Base class. Subclasses set ``config_class`` and ``kinds`` and implement :meth:`run`."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[AttackConfig]] = AttackConfig
    kinds: ClassVar[tuple[str, ...]] = ("diffusion",)
    summary: ClassVar[str] = ""

    def __init__(self, config: AttackConfig | None = None):
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name} takes a {self.config_class.__name__}, got {type(config).__name__}.")
        self.config = config

    def check(self, ctx: AttackContext) -> None:
        """Raise a clear ``ValueError`` before any work when the attack cannot run in ``ctx``."""
        if ctx.kind not in self.kinds:
            raise ValueError(f"Attack {self.name!r} works on {', '.join(self.kinds)} models, not {ctx.kind}.")

    def prepare(self, ctx: AttackContext) -> None:
        """Compute what needs the unpatched model (concept images) before any attack applies the patch."""

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        """Attack every variant of ``ctx``; returns JSON-friendly results (``images`` is kept for the grid only)."""
        raise NotImplementedError


def register_attack(name: str):
    """Class decorator adding an attack to the registry; a bad or duplicate name fails at import time.

    Example:
        >>> @register_attack("quantize")
        ... class Quantize(Attack):
        ...     config_class = QuantizeConfig
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"Attack name {name!r} must be lowercase letters, digits and underscores.")

    def decorate(cls: type[Attack]) -> type[Attack]:
        if name in _REGISTRY:
            raise ValueError(f"Attack {name!r} is already registered by {_REGISTRY[name].__qualname__}.")
        if not (isinstance(cls, type) and issubclass(cls, Attack)):
            raise TypeError(f"@register_attack({name!r}) must decorate an Attack subclass.")
        cfg = cls.config_class
        undocumented = [f.name for f in dataclasses.fields(cfg) if not f.metadata.get("help")]
        if undocumented:
            raise TypeError(f"{cfg.__qualname__} fields lack help text: {undocumented}.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_attacks() -> list[str]:
    """Names of the registered attacks, sorted."""
    return sorted(_REGISTRY)


def get_attack(name: str) -> type[Attack]:
    """The attack class registered under ``name``; a clear error listing the choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown attack {name!r}; available: {', '.join(list_attacks())}.") from None


@dataclass
class AttackContext:
    """What an attack sees: the model, the patch, how the concept is judged, the seeds and the sampler settings.

    ``prompts`` are the concept's prompts (a diffusion suite's target row; empty for a StyleGAN generator, whose
    samples are drawn from ``seeds``); every concept rate is measured on ``prompts x seeds``.
    """

    handle: Any
    patch: ErasurePatch
    judge: Judge
    target: str
    prompts: list[str]
    seeds: list[int]
    gold: Any = None
    steps: int = 10
    guidance: float = 7.5
    batch_size: int = 32
    progress: bool = True
    check_fingerprint: bool = True
    contrast: tuple[list[str], list[str]] | None = None  # (concept prompts, matched prompts without the concept)
    cache: dict = field(default_factory=dict)
    _inside: set = field(default_factory=set, init=False, repr=False)  # variants whose block is open

    @property
    def kind(self) -> str:
        return self.handle.kind

    @property
    def variants(self) -> list[str]:
        """``patched`` and ``base`` always, ``gold`` when a gold model was given."""
        return ["patched", "base"] + (["gold"] if self.gold is not None else [])

    @contextlib.contextmanager
    def model(self, variant: str) -> Iterator[Any]:
        """The handle of ``variant``; for ``patched`` the patch is applied inside the block and removed after.

        Blocks do not nest: a ``patched`` block inside another would stack the patch twice (patches stack by design),
        and a ``base`` block inside a ``patched`` one would see the patched weights, so either raises.
        """
        if self._inside and variant != "gold":
            raise RuntimeError(
                f"model({variant!r}) inside model({sorted(self._inside)[0]!r}): the weights would not be {variant}'s "
                "(ask for plain rates and concept images before opening a model block)."
            )
        self._inside.add(variant)
        try:
            if variant == "patched":
                with self.patch.applied(self.handle, check_fingerprint=self.check_fingerprint):
                    yield self.handle
            elif variant == "base":
                yield self.handle
            elif variant == "gold" and self.gold is not None:
                yield self.gold
            else:
                raise ValueError(f"Unknown model variant {variant!r}; choose from {self.variants}.")
        finally:
            self._inside.discard(variant)

    def pairs(self, prompts: Sequence[str] | None = None) -> list[tuple[str, int]]:
        """``(prompt, seed)`` for every prompt (default: the concept's) and seed."""
        return [(p, s) for p in (prompts if prompts is not None else self.prompts) for s in self.seeds]

    def generate(self, handle, pairs: Sequence[tuple[str, int]] | None = None) -> torch.Tensor:
        """Images of ``handle`` for ``pairs`` (default: the concept's prompts x seeds); for a StyleGAN generator one
        image per seed."""
        if handle.kind == "stylegan":
            return handle.generate(self.seeds).cpu()
        from ..sampling import generate_pairs

        return generate_pairs(handle, pairs or self.pairs(), self.steps, self.guidance, self.batch_size, False)

    def concept_rate(self, handle, pairs: Sequence[tuple[str, int]] | None = None) -> tuple[float, torch.Tensor]:
        """``(fraction of images judged to show the concept, images)``."""
        images = self.generate(handle, pairs)
        return self.judge.rate(images), images

    def plain_rate(self, variant: str) -> float:
        """The concept rate of ``variant`` without any attack (cached: every attack reports it)."""
        key = ("plain", variant)
        if key not in self.cache:
            with self.model(variant) as handle:
                self.cache[key] = self.concept_rate(handle)
        return self.cache[key][0]

    def concept_latents(self, k: int, folder: str | None = None) -> torch.Tensor:
        """``k`` latents of concept images: generated by the unpatched model from the concept's prompts (with seeds
        apart from the evaluation seeds), or encoded from the images of ``folder``. Attacks ask for them in
        :meth:`Attack.prepare`, while no patch is applied."""
        key = ("concept_latents", k, folder)
        if key not in self.cache:
            if self.patch.components and any(self.patch.deltas) and _patched(self.handle, self.patch):
                raise RuntimeError("Concept images must come from the unpatched model: ask for them in prepare().")
            from ..methods.diffusion_data import folder_latents, generated_latents

            gen = torch.Generator().manual_seed(10_000 + k)
            if folder:
                latents = folder_latents(self.handle, folder, gen, self.batch_size)[:k]
            else:
                prompts = [self.prompts[i % len(self.prompts)] for i in range(k)]
                latents = generated_latents(self.handle, prompts, gen, self.steps, self.guidance, self.batch_size)
            self.cache[key] = latents
        return self.cache[key]


def _patched(handle, patch: ErasurePatch) -> bool:
    """Whether ``patch`` is currently applied to ``handle``."""
    from ..patch.patch import _STACKS

    modules = [handle.components[c] for c in patch.components if c in handle.components]
    return any(any(a.patch is patch for a in _STACKS.get(m, {}).get("applied", [])) for m in modules)


def parameter_patch(handle, values: dict[str, torch.Tensor], metadata: dict | None = None) -> ErasurePatch | None:
    """A patch that moves ``handle``'s current parameters to ``values`` (``None`` when nothing changes); applied with
    ``check_fingerprint=False`` and removed bit-exactly, it is how an attack evaluates changed weights."""
    params = handle.named_parameters()
    deltas = {}
    for key, value in values.items():
        diff = value.detach().float().cpu() - params[key].detach().float().cpu()
        if torch.count_nonzero(diff):
            deltas[key] = DenseDelta(diff)
    return ErasurePatch(deltas, metadata or {"method": "attack"}) if deltas else None


@contextlib.contextmanager
def weights(handle, values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Inside the block ``handle``'s parameters named in ``values`` hold those values (restored bit-exactly)."""
    patch = parameter_patch(handle, values)
    if patch is None:
        yield
        return
    with patch.applied(handle, check_fingerprint=False):
        yield


@contextlib.contextmanager
def frozen_modules(*modules) -> Iterator[None]:
    """The modules' parameters stop requiring gradients inside the block (attacks differentiate through frozen
    networks to their own tensors only); every flag is restored afterwards."""
    flags = {p: p.requires_grad for m in modules if m is not None for p in m.parameters()}
    try:
        for p in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


def judge_modules(judge) -> list:
    """The torch modules a judge runs (frozen while an attack differentiates through it)."""
    return [m for m in (getattr(judge, "classifier", None), getattr(judge, "model", None)) if m is not None]


def handle_modules(handle) -> list:
    return list(handle.components.values())
