"""SDXL and SD3 checkpoint folders end to end: ``erasekit erase --model local:DIR`` writes a patch that applies to the
folder's model, and ``erasekit apply --lora`` writes a LoRA that the pipeline class's own ``load_lora_weights`` reads
into the same weights the patch gives (denoiser and second text encoder)."""

import copy

import pytest
import torch
from conftest import DIFFUSION_ARCHS, FAST_CONFIGS

from erasekit.cli.main import main
from erasekit.models import load_model
from erasekit.patch import DenseDelta, ErasurePatch, load_patch

# One weight of each kind the LoRA loaders read: the denoiser's text-reading attention and the second text encoder
LORA_KEYS = {
    "sdxl": (
        "unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight",
        "unet.up_blocks.0.attentions.0.proj_in.weight",
        "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.weight",
    ),
    "sd3": (
        "transformer.transformer_blocks.0.attn.add_k_proj.weight",
        "transformer.transformer_blocks.1.attn.to_q.weight",
        "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.weight",
    ),
}


@pytest.fixture(scope="module", params=["sdxl", "sd3"])
def folder(request, tmp_path_factory):
    """(architecture, a folder the tiny pipeline was saved to with save_pretrained)."""
    arch = request.param
    pipe = copy.deepcopy(request.getfixturevalue(DIFFUSION_ARCHS[arch]))
    out = tmp_path_factory.mktemp(arch) / "model"
    pipe.save_pretrained(out, safe_serialization=True)
    return arch, out


def _sets(method: str) -> list[str]:
    return [a for k, v in FAST_CONFIGS[method].items() for a in ("--set", f"{k}={str(v).lower()}")]


def test_cli_salun_erases_a_saved_folder(folder, tmp_path):
    arch, model = folder
    out = tmp_path / "salun.safetensors"
    argv = ["erase", "--model", f"local:{model}", "--device", "cpu", "--method", "salun", "--concept", "a cat"]
    assert main([*argv, *_sets("salun"), "--out", str(out)]) == 0
    patch = load_patch(out)
    handle = load_model(f"local:{model}", device="cpu")
    assert patch.components == [handle.denoiser_name] and patch.metadata["base_model"] == f"local:{model}"
    before = {k: p.detach().clone() for k, p in handle.named_parameters().items()}
    with patch.applied(handle):  # the fingerprint of the folder's model matches
        assert any(not torch.equal(p, before[k]) for k, p in handle.named_parameters().items())
    assert all(torch.equal(p, before[k]) for k, p in handle.named_parameters().items())


def _outputs(handle) -> tuple[torch.Tensor, torch.Tensor]:
    """The denoiser's output on fixed inputs, and the second text encoder's part of the conditioning."""
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, *handle.latent_shape(), generator=gen)
    cond = handle.encode_prompts(["a cat"])
    with torch.no_grad():
        out = handle.predict_noise(latents, torch.tensor([500]), cond)
    return out, cond


def test_apply_lora_loads_with_the_pipelines_own_loader(folder, tmp_path):
    from diffusers import DiffusionPipeline

    arch, model = folder
    handle = load_model(f"local:{model}", device="cpu")
    params, gen = handle.named_parameters(), torch.Generator().manual_seed(0)
    patch = ErasurePatch(
        {k: DenseDelta(0.2 * torch.randn(params[k].shape, generator=gen)) for k in LORA_KEYS[arch]},
        {"base_fingerprint": handle.fingerprint(["text_encoder_2", handle.denoiser_name])},
    )
    patch.save(tmp_path / "p.safetensors", dtype="float32")
    lora = tmp_path / "p_lora.safetensors"
    argv = ["apply", "--model", f"local:{model}", "--patch", str(tmp_path / "p.safetensors"), "--lora", str(lora)]
    assert main([*argv, "--rank", "64"]) == 0  # rank >= every tiny width: the factorisation is exact
    base_out, base_cond = _outputs(handle)
    with patch.applied(handle):
        want_out, want_cond = _outputs(handle)
    pipe = DiffusionPipeline.from_pretrained(model, local_files_only=True)
    assert type(pipe) is type(handle.pipe)
    pipe.load_lora_weights(lora)
    got_out, got_cond = _outputs(load_model(pipe))
    assert (want_out - base_out).abs().max() > 1e-3 and (want_cond - base_cond).abs().max() > 1e-3
    torch.testing.assert_close(got_out, want_out, rtol=0, atol=1e-4)
    torch.testing.assert_close(got_cond, want_cond, rtol=0, atol=1e-4)
