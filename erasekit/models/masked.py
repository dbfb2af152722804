"""Trainable values for a mask's entries only, built into full weights one submodule at a time.

A method that may change only the entries of a mask (SalUn's saliency mask) needs no full trainable copy of the
tensors it touches. :class:`MaskedWeights` holds one 1-D leaf per tensor, the values of its masked entries, next to
the frozen tensor and the mask. When a handle runs a component with it (``params=`` of
:meth:`~erasekit.models.DiffusionHandle.predict_noise`), each submodule that owns a trained tensor gets its full
weight, ``base.masked_scatter(mask, values)``, just before it runs and its own tensor back right after, so at most
one submodule's weights exist as a second copy at a time. Backward does not keep the built weights either: while the
component runs, a saved-tensor hook stores a reference to which weight an operation saved, and backward builds that
weight again when it needs it.

The numbers are those of a full copy trained with its gradients zeroed outside the mask: the same entries, the same
forward and backward arithmetic, and AdamW on the leaves keeps moments for the masked entries only. At Stable
Diffusion 1.5's size and mask ratio 0.5 the trained values and their gradients take half a UNet each in float32
instead of a whole one, and no second UNet is built for the forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn


class MaskedWeights(Mapping):
    """``key -> full weight`` over ``values[key]`` (1-D, the entries of ``masks[key]`` in row-major order) and the
    frozen ``base[key]``. Keys are ``"<component>.<name>"``; :meth:`component` gives the view a handle passes to one
    component. Indexing builds the weight (with gradients to the values), which is what a caller outside a handle's
    forward pass gets; handles use :meth:`swapped_into` instead."""

    def __init__(
        self,
        base: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        values: Mapping[str, torch.Tensor],
        prefix: str = "",
    ) -> None:
        missing = [k for k in values if k not in base or k not in masks]
        if missing:
            raise ValueError(
                f"MaskedWeights needs a base tensor and a mask for every trained value; not {missing[:3]}."
            )
        self.base, self.masks, self.values, self.prefix = base, masks, values, prefix
        self._keys = [k[len(prefix) :] for k in values if k.startswith(prefix)]

    def component(self, name: str) -> MaskedWeights:
        """The weights of one component, keyed by the names inside it."""
        return MaskedWeights(self.base, self.masks, self.values, self.prefix + name + ".")

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._keys:
            raise KeyError(name)
        return self.build(self.prefix + name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def build(self, key: str, grad: bool = True) -> torch.Tensor:
        """The full weight ``key`` (full key, prefix included) in the base tensor's dtype."""
        base, values = self.base[key].detach(), self.values[key]
        values = values if grad else values.detach()
        return base.masked_scatter(self.masks[key], values.to(base.dtype))

    def full_values(self, key: str) -> torch.Tensor:
        """``build(key)`` in float32 without gradients: the trained tensor as a full copy would hold it."""
        with torch.no_grad():
            return self.base[key].detach().float().masked_scatter(self.masks[key], self.values[key].detach().float())

    @contextlib.contextmanager
    def swapped_into(self, root: nn.Module, save_references: bool = True) -> Iterator[None]:
        """Run ``root`` (the component of this view) with the trained weights: every submodule that owns one gets
        it built before its forward and loses it after. With ``save_references``, tensors that autograd saves and
        that are one of those weights are stored as a reference and built again in backward.

        Raises:
            KeyError: a trained key names no parameter of ``root``.
        """
        from torch.nn.utils._named_member_accessor import swap_tensor  # what torch.func.functional_call uses

        owners: dict[nn.Module, list[tuple[str, str]]] = {}
        modules = dict(root.named_modules())
        for name in self._keys:
            path, _, leaf = name.rpartition(".")
            module = modules.get(path)
            if module is None or leaf not in module._parameters:
                raise KeyError(f"{self.prefix}{name} is not a parameter of {type(root).__name__}.")
            owners.setdefault(module, []).append((leaf, self.prefix + name))
        live: dict[int, str] = {}  # storage address of a built weight -> its key, while its submodule runs
        originals: dict[nn.Module, list[tuple[str, torch.Tensor]]] = {}  # the module's own tensors while swapped

        def restore(module: nn.Module) -> None:
            for leaf, own in originals.pop(module, ()):
                live.pop(getattr(module, leaf).untyped_storage().data_ptr(), None)
                swap_tensor(module, leaf, own)

        depth: dict[nn.Module, int] = {}  # calls of a module inside its own forward reuse the outer call's weights

        def before(module: nn.Module, args) -> None:
            if module in originals:
                depth[module] = depth.get(module, 0) + 1
                return
            swapped = []
            for leaf, key in owners[module]:
                weight = self.build(key)
                live[weight.untyped_storage().data_ptr()] = key
                swapped.append((leaf, swap_tensor(module, leaf, weight)))
            originals[module] = swapped

        def after(module: nn.Module, args, output) -> None:
            if depth.get(module):
                depth[module] -= 1
                return
            restore(module)

        def pack(t: torch.Tensor):
            key = live.get(t.untyped_storage().data_ptr()) if t.layout == torch.strided else None
            if key is None or t.dtype != self.base[key].dtype:
                return t
            return _Reference(key, tuple(t.shape), tuple(t.stride()), t.storage_offset())

        def unpack(saved):
            if not isinstance(saved, _Reference):
                return saved
            weight = self.build(saved.key, grad=False)
            return weight.as_strided(saved.shape, saved.stride, saved.offset)

        handles = []
        try:
            for module in owners:
                handles.append(module.register_forward_pre_hook(before))
                handles.append(module.register_forward_hook(after, always_call=True))
            hooks = torch.autograd.graph.saved_tensors_hooks(pack, unpack) if save_references else None
            with hooks or contextlib.nullcontext():
                yield
        finally:
            for h in handles:
                h.remove()
            for module in list(originals):  # a forward that raised before its submodule's hook ran
                restore(module)


class _Reference:
    """What autograd keeps instead of a built weight: its key and the view of it that was saved."""

    __slots__ = ("key", "shape", "stride", "offset")

    def __init__(self, key: str, shape: tuple, stride: tuple, offset: int) -> None:
        self.key, self.shape, self.stride, self.offset = key, shape, stride, offset
