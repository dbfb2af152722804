"""``ErasurePatch``: an erasure as data. Apply in place, remove bit-exactly, scale, compose, save, export as LoRA.

Removal restores a backup of the touched values rather than subtracting (floating-point subtraction is not exact).
Patches applied to the same model form a stack: one that overlaps a later patch must wait until that one is removed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from ..models.base import component_fingerprint, fingerprint_mismatch, named_parameters
from .deltas import Delta, DenseDelta, SparseDelta, add_deltas, all_finite, apply_delta, delta_from_tensors

logger = logging.getLogger(__name__)

# component module -> {"fingerprint": base fingerprint, "applied": [AppliedPatch, ...]}
_STACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def as_components(model) -> dict[str, nn.Module]:
    """Named components of a handle, a diffusers pipeline, or a ``{"name": module}`` dict."""
    from ..models.base import ModelHandle
    from ..models.gan import is_generator

    if isinstance(model, ModelHandle):
        return model.components
    if is_generator(model):
        return {"generator": model}
    if isinstance(model, Mapping) and all(isinstance(m, nn.Module) for m in model.values()):
        return dict(model)
    if getattr(model, "unet", None) is not None or getattr(model, "transformer", None) is not None:
        from ..models.sd import DiffusionHandle

        return DiffusionHandle(model).components
    raise TypeError(
        f"Cannot apply a patch to {type(model).__name__}: pass a diffusers pipeline, a StyleGAN2 generator, an "
        "erasekit model handle or a dict of named modules."
    )


class AppliedPatch:
    """What :meth:`ErasurePatch.apply` returns: call :meth:`remove` to restore the exact original bits."""

    def __init__(
        self,
        patch: ErasurePatch,
        backups: dict[str, tuple[torch.nn.Parameter, torch.Tensor | None, torch.Tensor]],
        modules: list[nn.Module],
    ):
        self.patch = patch
        self._backups = backups
        self._modules = modules
        self.active = True

    def remove(self) -> None:
        """Restore every touched value to its original bits. Overlapping patches must be removed last-in first-out."""
        if not self.active:
            raise RuntimeError("This patch was already removed.")
        for module in self._modules:
            later = _STACKS[module]["applied"]
            for other in later[later.index(self) + 1 :]:
                if set(other._backups) & set(self._backups):
                    raise RuntimeError(
                        "A patch applied after this one changes the same parameters; remove it first (last in, "
                        "first out)."
                    )
        _restore(self._backups.values())
        for module in self._modules:
            stack = _STACKS[module]
            stack["applied"].remove(self)
            if not stack["applied"]:
                del _STACKS[module]
        self.active = False

    def __enter__(self) -> AppliedPatch:
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            self.remove()


class ErasurePatch:
    """Parameter deltas keyed ``"<component>.<parameter>"`` plus metadata (method, config, concept, fingerprint...).

    Example:
        >>> patch = erasekit.erase(pipe, "esd", "Van Gogh style")
        >>> handle = patch.apply(pipe)           # in place
        >>> handle.remove()                      # exact original bits again
        >>> with patch.applied(pipe, scale=0.5): # half strength, restored on exit
        ...     images = pipe("a starry night").images
        >>> patch.save("vangogh.safetensors")
    """

    def __init__(self, deltas: dict[str, Delta], metadata: dict | None = None):
        self.deltas = dict(deltas)
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        kinds = sorted({d.kind for d in self.deltas.values()})
        return (
            f"ErasurePatch(method={self.metadata.get('method')!r}, concept={self.metadata.get('concept')!r}, "
            f"{len(self.deltas)} tensors, {kinds}, {self.nbytes / 1e6:.2f} MB)"
        )

    def __len__(self) -> int:
        return len(self.deltas)

    @property
    def components(self) -> list[str]:
        return sorted({k.split(".", 1)[0] for k in self.deltas})

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data :meth:`save` writes with its defaults (fp16 values, the smallest encoding per tensor)."""
        from .encoding import DEFAULT_DTYPE, encoded_nbytes

        return sum(encoded_nbytes(d, DEFAULT_DTYPE) for d in self.deltas.values())

    @property
    def num_changed(self) -> int:
        """How many parameter entries the patch changes."""
        return sum(d.values.numel() if isinstance(d, SparseDelta) else _numel(d.shape) for d in self.deltas.values())

    # ---- arithmetic -------------------------------------------------------------------------------------------
    def scaled(self, scale: float) -> ErasurePatch:
        """A new patch with every delta multiplied by ``scale`` (0 = base model, 1 = full erasure)."""
        meta = copy.deepcopy(self.metadata)
        meta["scale"] = meta.get("scale", 1.0) * scale
        return ErasurePatch({k: d.scaled(scale) for k, d in self.deltas.items()}, meta)

    def __mul__(self, scale: float) -> ErasurePatch:
        return self.scaled(float(scale))

    __rmul__ = __mul__

    def __add__(self, other: ErasurePatch) -> ErasurePatch:
        """Compose two patches; overlapping parameters are summed, with a warning."""
        if not isinstance(other, ErasurePatch):
            return NotImplemented
        overlap = sorted(set(self.deltas) & set(other.deltas))
        if overlap:
            logger.warning(
                "Composed patches overlap on %d parameters (e.g. %s); their deltas are summed.",
                len(overlap),
                overlap[0],
            )
        deltas = dict(self.deltas)
        for key, delta in other.deltas.items():
            deltas[key] = add_deltas(deltas[key], delta) if key in deltas else delta
        fingerprint = {**other.metadata.get("base_fingerprint", {}), **self.metadata.get("base_fingerprint", {})}
        meta = {
            "method": "composed",
            "concept": _concepts(self) + _concepts(other),
            "base_fingerprint": fingerprint,
            "parts": [_brief(self.metadata), _brief(other.metadata)],
        }
        return ErasurePatch(deltas, meta)

    # ---- apply / remove ---------------------------------------------------------------------------------------
    def apply(self, model, scale: float = 1.0, check_fingerprint: bool = True) -> AppliedPatch:
        """Add the deltas (times ``scale``) to ``model``'s parameters in place.

        Nothing is written unless every new value is finite and every key and shape matches.

        Returns:
            An :class:`AppliedPatch`; its ``remove()`` restores the original bits.
        """
        components = as_components(model)
        params = named_parameters(components)
        self._check_keys(params)
        modules = [components[c] for c in self.components]
        for module in modules:
            if module not in _STACKS:  # remember the base weights' fingerprint while patches are stacked
                _STACKS[module] = {"fingerprint": component_fingerprint(module), "applied": []}
        try:
            if check_fingerprint:
                self._check_fingerprint(components)
            backups = self._write(params, scale)
        except BaseException:
            for module in modules:
                if not _STACKS[module]["applied"]:
                    del _STACKS[module]
            raise
        applied = AppliedPatch(self, backups, modules)
        for module in modules:
            _STACKS[module]["applied"].append(applied)
        return applied

    def _write(self, params: dict[str, torch.nn.Parameter], scale: float) -> dict:
        """Back up, compute and write one tensor at a time; a non-finite new value puts back every tensor already
        written and raises, so nothing is changed. Returns the backups.

        One tensor at a time keeps the extra memory at the backups plus one tensor's temporaries (a SalUn patch on
        Stable Diffusion touches ~430 M values)."""
        backups: dict = {}
        try:
            with torch.no_grad():
                for key, delta in self.deltas.items():
                    param, idx = params[key], delta.touched()
                    idx = None if idx is None else idx.to(param.device)
                    flat = param.data.view(-1)
                    original = param.detach().clone() if idx is None else flat.index_select(0, idx)
                    value = apply_delta(param, delta, scale, current=original)
                    if not all_finite(value):
                        raise ValueError(
                            f"Applying the patch at scale {scale} makes {key} non-finite; nothing was changed."
                        )
                    backups[key] = (param, idx, original)
                    if idx is None:
                        param.data.copy_(value)
                    else:
                        flat.index_copy_(0, idx, value)
        except BaseException:
            _restore(reversed(list(backups.values())))
            raise
        return backups

    @contextlib.contextmanager
    def applied(self, model, scale: float = 1.0, check_fingerprint: bool = True) -> Iterator[AppliedPatch]:
        """Context manager: the patch is applied inside the block and removed (bit-exactly) on exit."""
        handle = self.apply(model, scale=scale, check_fingerprint=check_fingerprint)
        try:
            yield handle
        finally:
            if handle.active:
                handle.remove()

    def _check_keys(self, params: dict[str, torch.Tensor]) -> None:
        missing = [k for k in self.deltas if k not in params]
        if missing:
            raise ValueError(
                f"The patch changes {len(missing)} parameters this model lacks (e.g. {missing[0]!r}); it was made "
                f"for another architecture ({self.metadata.get('base_model', 'unknown base')})."
            )
        for key, delta in self.deltas.items():
            if tuple(params[key].shape) != tuple(delta.shape):
                raise ValueError(
                    f"{key}: the patch has shape {tuple(delta.shape)}, the model {tuple(params[key].shape)}."
                )

    def _check_fingerprint(self, components: dict[str, nn.Module]) -> None:
        expected = self.metadata.get("base_fingerprint") or {}
        for name in self.components:
            if name in expected:
                why = fingerprint_mismatch(expected[name], _STACKS[components[name]]["fingerprint"])
                if why:
                    raise ValueError(
                        f"This patch was made for a different base model: the {name} {why}. Load the model it was "
                        f"made for ({self.metadata.get('base_model', 'see `erasekit info`')}), or pass "
                        "check_fingerprint=False (--force) if you know better."
                    )

    # ---- construction, files, LoRA ----------------------------------------------------------------------------
    @classmethod
    def from_diff(cls, base, edited, sparse: bool = False, metadata: dict | None = None) -> ErasurePatch:
        """The patch that turns ``base`` into ``edited`` (same architecture); unchanged tensors are skipped.

        With ``sparse=True`` only changed entries are stored (indices + values).
        """
        a, b = named_parameters(as_components(base)), named_parameters(as_components(edited))
        if set(a) != set(b):
            raise ValueError("from_diff needs two models with the same parameter names.")
        deltas: dict[str, Delta] = {}
        for key, pa in a.items():
            diff = b[key].detach().float().cpu() - pa.detach().float().cpu()
            if torch.count_nonzero(diff):
                deltas[key] = SparseDelta.from_dense(diff) if sparse else DenseDelta(diff)
        if not deltas:
            raise ValueError("The two models are identical; there is nothing to put in a patch.")
        meta = dict(metadata or {})
        meta.setdefault("method", "diff")
        meta.setdefault("base_fingerprint", {c: component_fingerprint(m) for c, m in as_components(base).items()})
        return cls(deltas, meta)

    def save(self, path: str | Path, dtype: str | torch.dtype | None = None) -> Path:
        """Write one ``.safetensors`` file (atomically) with the metadata as JSON in its header.

        Each tensor is stored in its smallest exact encoding (dense, indices or bitmask). ``dtype`` is what the values
        are rounded to: ``None`` means float16, the precision the shipped worlds and Stable Diffusion checkpoints are
        served in, at half the size of float32; the loaded patch then equals :meth:`stored`, not this one (each value
        within half an fp16 step). ``dtype="float32"`` reads back bit-exactly. Either way, applying the loaded patch
        and removing it restores the model's exact bits.

        Example:
            >>> patch.save("no_cat.safetensors")                   # fp16 values
            >>> patch.save("no_cat_exact.safetensors", dtype="float32")
        """
        from .io import save_patch

        return save_patch(self, path, dtype=dtype)

    def stored(self, dtype: str | torch.dtype | None = None) -> ErasurePatch:
        """This patch as :func:`load_patch` reads it back from ``save(path, dtype)``: same encodings, same rounding.

        Example:
            >>> loaded = erasekit.load_patch(patch.save("p.safetensors"))
            >>> all(torch.equal(loaded.deltas[k].to_dense(), d.to_dense()) for k, d in patch.stored().deltas.items())
            True
        """
        from .encoding import decode, encode, storage_dtype

        target = storage_dtype(dtype)
        deltas = {key: decode(*encode(key, d, target)) for key, d in self.deltas.items()}
        return ErasurePatch(deltas, copy.deepcopy(self.metadata))

    def save_lora(self, path: str | Path, rank: int = 8, key_format: str = "peft"):
        """Export as a LoRA that ``pipe.load_lora_weights(path)`` loads; returns an export report.

        ``key_format="kohya"`` writes the ``lora_unet_…`` layout AUTOMATIC1111 and ComfyUI load (default: peft).
        """
        from .lora import export_lora

        return export_lora(self, path, rank=rank, key_format=key_format)

    def to(self, device=None, dtype=None) -> ErasurePatch:
        """A copy with floating-point tensors moved/cast (indices stay int64)."""
        deltas = {}
        for key, d in self.deltas.items():
            tensors = {
                name: t.to(device=device, dtype=dtype if t.is_floating_point() else None)
                for name, t in d.tensors().items()
            }
            deltas[key] = delta_from_tensors(d.kind, tensors, d.shape)
        return ErasurePatch(deltas, copy.deepcopy(self.metadata))


def _restore(backups) -> None:
    """Write backed-up values (``(param, flat indices or None, values)``) back into their parameters."""
    with torch.no_grad():
        for param, idx, original in backups:
            if idx is None:
                param.data.copy_(original)
            else:
                param.data.view(-1).index_copy_(0, idx, original)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _concepts(p: ErasurePatch) -> list:
    c = p.metadata.get("concept")
    return list(c) if isinstance(c, list) else [c]


def _brief(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("method", "concept", "created") if k in meta}
