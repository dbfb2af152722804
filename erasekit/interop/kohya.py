"""LoRA in the kohya (sd-scripts) key format, the one AUTOMATIC1111, ComfyUI and Fooocus load.

erasekit's LoRA export factorises each weight delta as ``B @ A`` (:mod:`erasekit.patch.lora`). The diffusers/peft
layout names them ``unet.<module>.lora_A.weight`` / ``lora_B.weight``; the kohya layout flattens the module path
with underscores under a per-component prefix and stores the scale as an ``alpha`` tensor::

    unet.down_blocks.0.attentions.0.proj_in.lora_A.weight   ->  lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight
    unet.down_blocks.0.attentions.0.proj_in.lora_B.weight   ->  lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight
                                                                lora_unet_down_blocks_0_attentions_0_proj_in.alpha  (= rank)

The loaders scale ``up @ down`` by ``alpha / rank``; alpha = rank keeps the scale at 1, as in the peft export.
Text-encoder modules are named from the transformers ``CLIPTextModel`` root (``text_model.encoder.layers…``) as
the kohya tools expect, also where a newer transformers flattens that level away.
"""

from __future__ import annotations

import torch

PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}


def kohya_module(component: str, module: str) -> str:
    """The kohya name of ``component.module`` (``module`` in diffusers' dotted form)."""
    if component not in PREFIXES:
        raise ValueError(f"The kohya LoRA format has no prefix for component {component!r} (only {list(PREFIXES)}).")
    if component.startswith("text_encoder") and not module.startswith("text_model."):
        module = "text_model." + module
    return PREFIXES[component] + module.replace(".", "_")


def to_kohya(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a peft-layout LoRA state dict (``<component>.<module>.lora_A/B.weight``) to the kohya layout.

    Every module gets an ``alpha`` equal to its rank (the first dimension of its down matrix), so the loaders apply
    ``up @ down`` unscaled.

    Example:
        >>> kohya = to_kohya({"unet.a.b.lora_A.weight": down, "unet.a.b.lora_B.weight": up})
        >>> sorted(kohya)
        ['lora_unet_a_b.alpha', 'lora_unet_a_b.lora_down.weight', 'lora_unet_a_b.lora_up.weight']
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        for suffix, role in ((".lora_A.weight", "lora_down"), (".lora_B.weight", "lora_up")):
            if key.endswith(suffix):
                component, _, module = key[: -len(suffix)].partition(".")
                name = kohya_module(component, module)
                out[f"{name}.{role}.weight"] = tensor
                if role == "lora_down":
                    out[f"{name}.alpha"] = torch.tensor(float(tensor.shape[0]), dtype=tensor.dtype)
                break
        else:
            raise ValueError(f"{key!r} is not a peft LoRA key (<component>.<module>.lora_A/B.weight).")
    return out
