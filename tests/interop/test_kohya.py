"""LoRA in the kohya key format: key names known by hand, and diffusers' loader merging it into the patch's weights."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from erasekit.cli.main import main
from erasekit.interop.kohya import kohya_module, to_kohya
from erasekit.patch import DenseDelta, ErasurePatch


def test_key_names_by_hand():
    assert (
        kohya_module("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k")
        == "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    )
    assert kohya_module("text_encoder", "encoder.layers.1.self_attn.q_proj") == (
        "lora_te_text_model_encoder_layers_1_self_attn_q_proj"
    )
    assert kohya_module("text_encoder", "text_model.encoder.layers.1.mlp.fc1") == (
        "lora_te_text_model_encoder_layers_1_mlp_fc1"
    )
    with pytest.raises(ValueError, match="no prefix for component 'vae'"):
        kohya_module("vae", "decoder.conv_in")


def test_alpha_is_the_rank_and_bad_keys_fail():
    down, up = torch.ones(3, 5), torch.ones(7, 3)
    out = to_kohya({"unet.a.b.lora_A.weight": down, "unet.a.b.lora_B.weight": up})
    assert sorted(out) == ["lora_unet_a_b.alpha", "lora_unet_a_b.lora_down.weight", "lora_unet_a_b.lora_up.weight"]
    assert float(out["lora_unet_a_b.alpha"]) == 3.0
    with pytest.raises(ValueError, match="not a peft LoRA key"):
        to_kohya({"unet.a.b.weight": down})


def _patch(pipe) -> ErasurePatch:
    """Exactly rank-2 deltas on a UNet cross-attention projection and a text-encoder attention layer.

    All four projections of the text-encoder layer change: diffusers' kohya reader tells the key layout of a text
    encoder LoRA from its ``out_proj`` keys, as a text-encoder erasure (which trains whole layers) always has them.
    """
    gen = torch.Generator().manual_seed(0)
    deltas = {}
    te = "text_encoder.encoder.layers.0.self_attn"
    for key in (
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        *(f"{te}.{p}_proj.weight" for p in ("q", "k", "v", "out")),
    ):
        component, name = key.split(".", 1)
        shape = dict(getattr(pipe, component).named_parameters())[name].shape
        low = torch.randn(shape[0], 2, generator=gen) @ torch.randn(2, shape[1], generator=gen)
        deltas[key] = DenseDelta(0.1 * low)
    return ErasurePatch(deltas, {"method": "test"})


def test_kohya_lora_merges_into_the_patched_weights(tmp_path, tiny_pipe):
    patch = _patch(tiny_pipe)
    path = tmp_path / "k.safetensors"
    report = patch.save_lora(path, rank=4, key_format="kohya")
    assert report.relative_error < 1e-5  # rank-2 deltas at rank 4: exact up to float round-off
    keys = load_file(str(path))
    assert any(k.startswith("lora_unet_") for k in keys) and any(k.startswith("lora_te_") for k in keys)
    merged = copy.deepcopy(tiny_pipe)
    merged.load_lora_weights(str(path))
    merged.fuse_lora()
    merged.unload_lora_weights()
    with patch.applied(tiny_pipe, check_fingerprint=False):
        for key in patch.deltas:
            component, name = key.split(".", 1)
            want = dict(getattr(tiny_pipe, component).named_parameters())[name]
            got = dict(getattr(merged, component).named_parameters())[name]
            assert torch.allclose(got, want, atol=1e-6), key


def test_cli_lora_format(tmp_path, capsys):
    patch_path = tmp_path / "p.safetensors"
    assert (
        main(
            ["erase", "--model", "tiny-sd", "--method", "esd", "--concept", "a cat", "--set", "steps=1"]
            + ["--set", "ddim_steps=2", "--set", "progress=false", "--out", str(patch_path)]
        )
        == 0
    )
    out = tmp_path / "k.safetensors"
    assert main(["apply", "--patch", str(patch_path), "--lora", str(out), "--lora-format", "kohya"]) == 0
    assert all(k.startswith("lora_unet_") for k in load_file(str(out)))
    assert main(["apply", "--patch", str(patch_path), "--out", str(tmp_path / "o"), "--lora-format", "kohya"]) != 0
    assert "--lora-format applies to --lora" in capsys.readouterr().err
