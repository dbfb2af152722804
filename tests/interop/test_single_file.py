"""Single-file (LDM layout) checkpoints in and out, checked against diffusers' own ``from_single_file`` reader."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

import erasekit
from erasekit.cli.main import main
from erasekit.interop import checkpoint_kind, load_single_file, save_single_file
from erasekit.interop.ldm import pipeline_to_ldm, unet_to_ldm


def _weights_equal(a, b) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    return [k for k in sa if k not in sb or not torch.equal(sa[k], sb[k].to(sa[k].dtype))]


@pytest.fixture
def sd_folder(tmp_path, tiny_pipe):
    folder = tmp_path / "tiny_sd"
    tiny_pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture
def single_file(tmp_path, tiny_pipe):
    path = tmp_path / "tiny.safetensors"
    save_single_file(tiny_pipe, path)
    return path


def test_written_file_loads_back_with_from_single_file(tiny_pipe, sd_folder, single_file):
    from diffusers import StableDiffusionPipeline

    assert checkpoint_kind(single_file) == "sd"
    back = StableDiffusionPipeline.from_single_file(
        str(single_file), config=str(sd_folder), local_files_only=True, safety_checker=None
    )
    for component in ("unet", "vae", "text_encoder"):
        assert _weights_equal(getattr(tiny_pipe, component), getattr(back, component)) == [], component


@pytest.mark.parametrize("layers", [1, 2])
def test_unet_mapping_for_sd15_block_layout(tmp_path, layers):
    """SD 1.5 has two layers per block and a last level without attention: the mapping follows the config."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8, 8),
        layers_per_block=layers,
        sample_size=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
        attention_head_dim=2,
    )
    unet.save_pretrained(tmp_path / "unet")
    path = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in unet_to_ldm(unet.state_dict(), dict(unet.config)).items()}, str(path))
    back = UNet2DConditionModel.from_single_file(str(path), config=str(tmp_path / "unet"), local_files_only=True)
    assert _weights_equal(unet, back) == []


def test_load_single_file_through_load_pipeline(tiny_pipe, sd_folder, single_file):
    pipe = erasekit.load_pipeline(str(single_file), device="cpu", config=sd_folder)
    assert _weights_equal(tiny_pipe.unet, pipe.unet) == []
    handle = erasekit.load_model(str(single_file), device="cpu", config=sd_folder)
    assert handle.kind == "diffusion"


def test_single_file_errors_name_the_fix(tmp_path, single_file, sd_folder):
    with pytest.raises(ValueError, match="--model-config"):
        load_single_file(single_file)
    with pytest.raises(ValueError, match="no model_index.json"):
        load_single_file(single_file, config=tmp_path)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, ckpt)
    with pytest.raises(ValueError, match="--trust-pickle"):
        load_single_file(ckpt, config=sd_folder)
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    assert checkpoint_kind(other) == "unknown"
    with pytest.raises(ValueError, match="no LDM UNet weights"):
        load_single_file(other, config=sd_folder)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match="not a readable .safetensors"):
        checkpoint_kind(broken)


def test_stylegan_file_is_told_apart_by_its_header(tmp_path, tiny_generator):
    from erasekit.models.stylegan import save_generator

    path = tmp_path / "g.safetensors"
    save_generator(tiny_generator, path)
    assert checkpoint_kind(path) == "stylegan"
    assert erasekit.load_model(str(path)).kind == "stylegan"


def test_sd2_text_encoder_is_refused_clearly(tiny_pipe):
    pipe = copy.copy(tiny_pipe)
    pipe.text_encoder = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="Only the SD 1.x text encoder"):
        pipeline_to_ldm(pipe)


def test_round_trip_erase_on_single_file_then_single_file_out(tmp_path, tiny_pipe, sd_folder, single_file, capsys):
    """folder -> single file -> erase -> single file out -> from_single_file: the images of the patch in memory."""
    patch_path, out = tmp_path / "p.safetensors", tmp_path / "erased.safetensors"
    argv = ["--model", str(single_file), "--device", "cpu"]
    assert (
        main(
            ["erase", *argv, "--config", str(sd_folder), "--method", "esd", "--concept", "a cat"]
            + ["--set", "steps=2", "--set", "ddim_steps=3", "--set", "progress=false", "--out", str(patch_path)]
        )
        == 0
    )
    assert (
        main(
            ["apply", *argv, "--model-config", str(sd_folder), "--patch", str(patch_path)]
            + ["--single-file", str(out)]
        )
        == 0
    )
    patch = erasekit.load_patch(patch_path)
    erased = load_single_file(out, config=sd_folder)
    base = load_single_file(single_file, config=sd_folder)

    def images(pipe):
        gen = torch.Generator().manual_seed(0)
        return pipe("a cat", num_inference_steps=2, generator=gen, output_type="pt").images

    with patch.applied(base):
        expected = images(base)
    assert torch.allclose(images(erased), expected, atol=1e-5)
    assert not torch.allclose(images(base), expected, atol=1e-6)  # the patch changed something


def test_cli_single_file_without_config_exits_with_the_fix(tmp_path, single_file, capsys):
    code = main(
        ["erase", "--model", str(single_file), "--method", "esd", "--concept", "a cat"]
        + ["--out", str(tmp_path / "p.safetensors")]
    )
    assert code != 0
    assert "--model-config" in capsys.readouterr().err
    assert not (tmp_path / "p.safetensors").exists()


def test_shipped_sd15_architecture_folder(tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    from erasekit.models.architectures import architecture_folder, resolve_config

    folder = architecture_folder("sd15", root=tmp_path / "sd15")
    assert architecture_folder("sd15", root=folder) == folder  # written once
    unet = UNet2DConditionModel.load_config(folder / "unet")
    assert unet["block_out_channels"] == [320, 640, 1280, 1280] and unet["cross_attention_dim"] == 768
    assert AutoencoderKL.load_config(folder / "vae")["scaling_factor"] == 0.18215
    assert CLIPTextConfig.from_pretrained(folder / "text_encoder").hidden_size == 768
    assert CLIPTokenizer.from_pretrained(folder / "tokenizer")("a cat").input_ids == [49406, 320, 2368, 49407]
    assert resolve_config(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match="Unknown architecture 'sd99'"):
        architecture_folder("sd99")


@pytest.mark.slow
def test_full_size_sd15_single_file_round_trip(tmp_path, monkeypatch):
    """A random full-size SD 1.5 written as one file loads back with config='sd15' (about 8 GB of memory)."""
    from erasekit.models.architectures import random_pipeline

    monkeypatch.setenv("ERASEKIT_CACHE", str(tmp_path / "cache"))
    pipe = random_pipeline("sd15")
    path = save_single_file(pipe, tmp_path / "sd15.safetensors", dtype=torch.float16)
    back = load_single_file(path, config="sd15", dtype=torch.float16)
    assert _weights_equal(pipe.unet.half(), back.unet) == []
