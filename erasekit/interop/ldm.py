"""Key layouts of the original (CompVis / LDM) Stable Diffusion checkpoints, the layout AUTOMATIC1111 and ComfyUI read.

diffusers reads this layout with ``from_single_file``; it has no writer, so erasekit maps diffusers' parameter names
back to the LDM ones here, component by component, from the component's own config (block counts, layers per
block, which blocks have attention). The mapping is checked by the tests the only way that matters: a file written
here loads back through diffusers' ``from_single_file`` into exactly the same weights.

Only the SD 1.x text encoder (transformers ``CLIPTextModel``) is mapped; SD 2.x stores an OpenCLIP text tower with
fused attention weights and is refused with a clear error.
"""

from __future__ import annotations

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."

_RESNET_UNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_RESNET_VAE = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(name: str, table: dict[str, str]) -> str:
    """Replace the first dotted part(s) of ``name`` found in ``table`` (longest match first)."""
    for old in sorted(table, key=len, reverse=True):
        if name == old or name.startswith(old + "."):
            return table[old] + name[len(old) :]
    return name


def _unet_block_map(config: dict) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix for every block of a ``UNet2DConditionModel`` config."""
    layers = config["layers_per_block"]
    layers = layers if isinstance(layers, int) else layers[0]
    down, up = config["down_block_types"], config["up_block_types"]
    table = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
    }
    for i, kind in enumerate(down):
        for j in range(layers):
            slot = i * (layers + 1) + j + 1
            table[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{slot}.0"
            if "CrossAttn" in kind:
                table[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{slot}.1"
        if i < len(down) - 1:
            table[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(i + 1) * (layers + 1)}.0.op"
    for i, kind in enumerate(up):
        attn = "CrossAttn" in kind
        for j in range(layers + 1):
            slot = i * (layers + 1) + j
            table[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{slot}.0"
            if attn:
                table[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{slot}.1"
        if i < len(up) - 1:
            last = i * (layers + 1) + layers
            table[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{last}.{2 if attn else 1}.conv"
    return table


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict in the LDM layout (``model.diffusion_model.…``)."""
    if config.get("addition_embed_type") or config.get("class_embed_type"):
        raise ValueError("Only the SD 1.x / 2.x UNet layout can be written as a single file (no added embeddings).")
    blocks = _unet_block_map(config)
    out = {}
    for name, tensor in state.items():
        ldm = _rename(name, blocks)
        if ldm == name:
            raise ValueError(f"No LDM name for UNet parameter {name!r}; this UNet layout is not supported.")
        out[UNET_PREFIX + _resnet_inner(ldm, name)] = tensor
    return out


def _resnet_inner(ldm: str, name: str) -> str:
    """Rename a resnet's inner layers (``norm1`` -> ``in_layers.0`` ...) for parameters that live in a resnet."""
    if ".resnets." not in name:
        return ldm
    _, _, inner = name.partition(".resnets.")
    _, _, rest = inner.partition(".")
    mapped_rest = _rename(rest, _RESNET_UNET)
    return ldm[: len(ldm) - len(rest)] + mapped_rest


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict in the LDM layout (``first_stage_model.…``)."""
    n = len(config["block_out_channels"])
    out = {}
    for name, tensor in state.items():
        ldm = _vae_name(name, n)
        if ".mid.attn_1." in ldm and tensor.dim() == 2:  # LDM's VAE attention uses 1x1 convolutions
            tensor = tensor[:, :, None, None]
        out[VAE_PREFIX + ldm] = tensor
    return out


def _vae_name(name: str, n_blocks: int) -> str:
    part, _, rest = name.partition(".")
    if part not in ("encoder", "decoder"):
        return name  # quant_conv, post_quant_conv
    rest = rest.replace("conv_norm_out", "norm_out")
    if rest.startswith("mid_block."):
        rest = rest[len("mid_block.") :]
        rest = rest.replace("resnets.0.", "block_1.", 1).replace("resnets.1.", "block_2.", 1)
        if rest.startswith("attentions.0."):
            rest = "attn_1." + _rename(rest[len("attentions.0.") :], _VAE_ATTENTION)
        else:
            rest = _rename_resnet_vae(rest)
        return f"{part}.mid.{rest}"
    for diffusers_kind, ldm_kind, sampler in (("down_blocks", "down", "downsample"), ("up_blocks", "up", "upsample")):
        if rest.startswith(diffusers_kind + "."):
            index, _, inner = rest[len(diffusers_kind) + 1 :].partition(".")
            level = int(index) if ldm_kind == "down" else n_blocks - 1 - int(index)  # LDM counts up-blocks upwards
            inner = inner.replace("resnets.", "block.", 1).replace(f"{sampler}rs.0.", f"{sampler}.", 1)
            return f"{part}.{ldm_kind}.{level}.{_rename_resnet_vae(inner)}"
    return f"{part}.{rest}"


def _rename_resnet_vae(inner: str) -> str:
    head, sep, tail = inner.partition(".")
    if head in ("block", "block_1", "block_2"):
        if head == "block":
            index, _, tail = tail.partition(".")
            return f"block.{index}.{_rename(tail, _RESNET_VAE)}"
        return f"{head}.{_rename(tail, _RESNET_VAE)}"
    return inner


def text_encoder_to_ldm(state: dict[str, torch.Tensor], text_encoder) -> dict[str, torch.Tensor]:
    """An SD 1.x ``CLIPTextModel`` state dict in the LDM layout (``cond_stage_model.transformer.…``)."""
    if type(text_encoder).__name__ != "CLIPTextModel":
        raise ValueError(
            f"Only the SD 1.x text encoder (CLIPTextModel) can be written as a single file, not "
            f"{type(text_encoder).__name__}; save a diffusers folder with `erasekit apply --out DIR` instead."
        )
    # transformers >= 5.6 flattens CLIPTextModel (no ``text_model.`` level); the LDM layout keeps that level.
    inner = "" if hasattr(text_encoder, "text_model") else "text_model."
    return {TEXT_PREFIX + inner + name: t for name, t in state.items() if not name.endswith("position_ids")}


def pipeline_to_ldm(pipe) -> dict[str, torch.Tensor]:
    """Every weight of an SD 1.x pipeline in the LDM single-file layout (contiguous CPU tensors)."""
    missing = [c for c in ("unet", "vae", "text_encoder") if getattr(pipe, c, None) is None]
    if missing:
        raise ValueError(f"A single-file checkpoint needs unet, vae and text_encoder; this pipeline lacks {missing}.")
    state = {}
    state.update(unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config)))
    state.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    state.update(text_encoder_to_ldm(pipe.text_encoder.state_dict(), pipe.text_encoder))
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}
