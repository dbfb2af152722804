"""AdamW whose moments cover only the entries a mask lets change.

SalUn trains the entries of its saliency mask and nothing else (their gradients are zeroed outside it, and it forbids
weight decay). Plain AdamW still keeps two float32 moments for every entry of every trained tensor, although
outside the mask they stay exactly zero and so does the update. :class:`MaskedAdamW` keeps them for the masked
entries only: at mask ratio 0.5 that halves the optimizer's memory, about 3.4 GB at Stable Diffusion 1.5's size.

Each step gathers a tensor's masked gradient and weights into contiguous buffers, runs torch's own AdamW update on
them (the same functional kernel, the fused one on CUDA), and scatters the weights back: the result is the one full
AdamW gives.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.optim.adam import adam


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW over ``params`` (name -> tensor) with state for the entries of ``masks[name]`` only.

    ``masks`` is read at every step, so replacing one of its values (a resumed run loading its saved mask) takes
    effect. ``weight_decay`` is applied to the masked entries alone; entries outside the mask never change.
    ``fused=True`` (CUDA) uses torch's fused kernel, which also honours ``found_inf`` set on the optimizer.
    """

    def __init__(
        self,
        params: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        fused: bool = False,
    ) -> None:
        missing = [name for name in params if name not in masks]
        if missing:
            raise ValueError(f"MaskedAdamW needs a mask for every parameter; none for {missing[:3]}.")
        self._names = {id(p): name for name, p in params.items()}
        self._masks = masks
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "fused": fused}
        super().__init__(list(params.values()), defaults)

    def mask_of(self, p: torch.Tensor) -> torch.Tensor:
        return self._masks[self._names[id(p)]].to(p.device)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                mask = self.mask_of(p)
                st = self.state[p]
                if not st:  # the only place the masked count is read (on CUDA, a host sync per tensor)
                    n = int(mask.sum())
                    st["step"] = torch.zeros((), dtype=torch.float32, device=p.device if group["fused"] else "cpu")
                    st["exp_avg"] = torch.zeros(n, dtype=p.dtype, device=p.device)
                    st["exp_avg_sq"] = torch.zeros(n, dtype=p.dtype, device=p.device)
                for key in (
                    "exp_avg",
                    "exp_avg_sq",
                ):  # a moment shaped like p (a checkpoint of plain AdamW): gather it
                    if st[key].shape == p.shape:
                        st[key] = st[key][mask].contiguous()
                weights, grad = p.detach()[mask], p.grad[mask]
                beta1, beta2 = group["betas"]
                adam(
                    [weights],
                    [grad],
                    [st["exp_avg"]],
                    [st["exp_avg_sq"]],
                    [],
                    [st["step"]],
                    foreach=False,
                    fused=group["fused"] or None,
                    grad_scale=getattr(self, "grad_scale", None) if group["fused"] else None,
                    found_inf=getattr(self, "found_inf", None) if group["fused"] else None,
                    decoupled_weight_decay=True,
                    amsgrad=False,
                    beta1=beta1,
                    beta2=beta2,
                    lr=group["lr"],
                    weight_decay=group["weight_decay"],
                    eps=group["eps"],
                    maximize=False,
                )
                p.detach().masked_scatter_(mask, weights)
        return loss
