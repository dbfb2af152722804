"""The SDXL and SD3 handles: conditioning as the pipelines build it, sampling through the pipelines' own loops,
Euler latents in the UNet's scale, flow-matching targets, folders, fingerprints and the attention switch."""

import pytest
import torch

from erasekit.models import DiffusionHandle, SD3Handle, SDXLHandle, load_model, set_attention_backend
from erasekit.models.sd import pack_conditioning, unpack_conditioning


def _pipe_encode(pipe, prompt):
    """The pipeline's own (prompt_embeds, pooled, negative_prompt_embeds, negative_pooled) for ``prompt``."""
    if isinstance(DiffusionHandle(pipe), SDXLHandle):
        out = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=True)
    else:
        out = pipe.encode_prompt(prompt, None, None, device="cpu", do_classifier_free_guidance=True)
    return out[0], out[2], out[1], out[3]


@pytest.fixture(params=["sdxl", "sd3"])
def pipe(request, fresh_pipe):
    return fresh_pipe(request.param)


def test_the_handle_class_follows_the_pipeline(tiny_pipe, tiny_sdxl_pipe, tiny_sd3_pipe):
    assert type(DiffusionHandle(tiny_pipe)) is DiffusionHandle
    assert type(DiffusionHandle(tiny_sdxl_pipe)) is SDXLHandle
    assert type(load_model(tiny_sd3_pipe)) is SD3Handle
    assert set(DiffusionHandle(tiny_sdxl_pipe).components) == {"unet", "text_encoder", "text_encoder_2", "vae"}
    assert set(DiffusionHandle(tiny_sd3_pipe).components) == {
        "transformer",
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
        "vae",
    }


def test_a_variant_pipeline_with_a_second_text_encoder_is_refused(tiny_sdxl_pipe):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    img2img = StableDiffusionXLImg2ImgPipeline(**tiny_sdxl_pipe.components)
    with pytest.raises(TypeError, match="StableDiffusionXLPipeline"):
        DiffusionHandle(img2img)


def test_pack_and_unpack_conditioning_round_trip():
    tokens, pooled = torch.randn(3, 5, 4), torch.randn(3, 6)
    packed = pack_conditioning(tokens, pooled)
    assert packed.shape == (3, 5 + 2, 4)  # 6 pooled values take two rows of 4
    back_tokens, back_pooled = unpack_conditioning(packed, 5, 6)
    assert torch.equal(back_tokens, tokens) and torch.equal(back_pooled, pooled)
    assert torch.equal(unpack_conditioning(packed[[2, 0]], 5, 6)[1], pooled[[2, 0]])  # batch indexing keeps pairs


def test_conditioning_is_what_the_pipeline_encodes(pipe):
    handle = DiffusionHandle(pipe)
    tokens, pooled = handle.split_conditioning(handle.encode_prompts(["a cat"]))
    want_tokens, want_pooled, _, _ = _pipe_encode(pipe, "a cat")
    torch.testing.assert_close(tokens, want_tokens, rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, want_pooled, rtol=0, atol=1e-5)
    assert handle.token_embeddings(["a cat"]).shape == tokens.shape


def test_sdxl_empty_prompt_is_zeros_as_the_pipeline_makes_it(tiny_sdxl_pipe):
    handle = DiffusionHandle(tiny_sdxl_pipe)
    cond = handle.encode_prompts(["a cat", ""])
    _, _, neg_tokens, neg_pooled = _pipe_encode(tiny_sdxl_pipe, "a cat")  # negative_prompt=None: zeros
    tokens, pooled = handle.split_conditioning(cond[1:])
    assert torch.equal(tokens, neg_tokens) and torch.equal(pooled, neg_pooled) and not tokens.any()
    assert handle.token_embeddings([""]).abs().sum() > 0  # UCE's keys are the encoders' real states
    assert handle.text_embedding_dim == cond.shape[-1] == 8 + 12  # both encoders' widths


def test_generate_is_the_pipelines_own_sampling(pipe):
    handle = DiffusionHandle(pipe)
    latents = handle.initial_latents(1, torch.Generator().manual_seed(3))
    images = handle.generate(["a cat"], [3], num_inference_steps=3, guidance_scale=5.0)
    want = pipe("a cat", latents=latents, num_inference_steps=3, guidance_scale=5.0, output_type="pt").images
    torch.testing.assert_close(images, want.float().clamp(0, 1), rtol=0, atol=1e-5)


def _pipeline_latents_after(pipe, steps: int, stop: int, latents, cond, uncond, handle):
    """The pipeline's latents after ``stop`` of ``steps`` steps, caught by a callback, and the sigma there."""
    seen = {}

    def grab(p, i, t, kwargs):
        if i + 1 == stop:
            seen["latents"] = kwargs["latents"].clone()
            seen["sigma"] = p.scheduler.sigmas[i + 1]
        return kwargs

    pipe(
        **handle._pipeline_conditioning(cond, uncond, latents),
        latents=latents,
        num_inference_steps=steps,
        guidance_scale=3.0,
        output_type="latent",
        callback_on_step_end=grab,
    )
    return seen["latents"], seen["sigma"]


def test_partial_sampling_returns_latents_as_the_denoiser_reads_them(pipe):
    handle = DiffusionHandle(pipe)
    cond, uncond = handle.encode_prompts(["a cat"]), handle.encode_prompts([""])
    latents = handle.initial_latents(1, torch.Generator().manual_seed(0))
    x_t, t = handle.sample_latents(cond, uncond, latents, 4, 3.0, stop_after=2)
    raw, sigma = _pipeline_latents_after(pipe, 4, 2, latents, cond, uncond, handle)
    assert float(t) == float(pipe.scheduler.timesteps[2])
    if isinstance(handle, SDXLHandle):  # Euler keeps x0 + sigma*eps; the UNet reads it divided by sqrt(sigma^2+1)
        torch.testing.assert_close(x_t, raw / (float(sigma) ** 2 + 1) ** 0.5)
    else:  # flow matching: the transformer reads the sampler's latents, at t = 1000 sigma
        torch.testing.assert_close(x_t, raw)
        assert float(t) == pytest.approx(1000 * float(sigma), rel=1e-5)
    start, t0 = handle.sample_latents(cond, uncond, latents, 4, 3.0, stop_after=0)
    assert float(t0) == float(pipe.scheduler.timesteps[0])
    assert 0.9 < float(start.std() / latents.std()) < 1.1  # pure noise at unit scale, whatever the sampler's sigma


def test_sdxl_training_noise_is_the_ddpm_forward_process(tiny_sdxl_pipe):
    from diffusers import DDPMScheduler

    handle = DiffusionHandle(tiny_sdxl_pipe)
    ddpm = DDPMScheduler.from_config(tiny_sdxl_pipe.scheduler.config)
    x0, noise, t = torch.randn(3, 4, 16, 16), torch.randn(3, 4, 16, 16), torch.tensor([0, 500, 999])
    torch.testing.assert_close(handle.add_noise(x0, noise, t), ddpm.add_noise(x0, noise, t))
    assert torch.equal(handle.training_target(x0, noise, t), noise)
    torch.testing.assert_close(handle.predicted_x0(handle.add_noise(x0, noise, t), t, noise), x0, atol=1e-4, rtol=0)


def test_sdxl_time_ids_follow_the_latents_size(tiny_sdxl_pipe):
    handle = DiffusionHandle(tiny_sdxl_pipe)
    ids = handle.time_ids(torch.zeros(2, 4, 16, 8), torch.float32)
    assert ids.tolist() == [[32, 16, 0, 0, 32, 16]] * 2


def test_sd3_flow_matching_targets_and_timesteps(tiny_sd3_pipe):
    handle = DiffusionHandle(tiny_sd3_pipe)
    table = handle.training_timesteps(torch.arange(1000))
    fresh = type(tiny_sd3_pipe.scheduler).from_config(tiny_sd3_pipe.scheduler.config)
    assert torch.equal(table, fresh.timesteps.flip(0))  # the shifted sigma table, least noise first
    assert float(table[-1]) == 1000.0 and float(table[0]) < 5.0
    x0, noise = torch.randn(2, 16, 16, 16), torch.randn(2, 16, 16, 16)
    t = handle.training_timesteps(torch.tensor([100, 900]))
    sigma = (t / 1000).view(-1, 1, 1, 1)
    x_t = handle.add_noise(x0, noise, t)
    torch.testing.assert_close(x_t, (1 - sigma) * x0 + sigma * noise)
    velocity = handle.training_target(x0, noise, t)
    assert torch.equal(velocity, noise - x0)
    torch.testing.assert_close(handle.predicted_x0(x_t, t, velocity), x0, atol=1e-5, rtol=0)
    assert handle.prediction_type == "flow_matching" and handle.latent_shape() == (16, 16, 16)


def test_sd3_without_t5_encodes_zeros_in_its_place_and_loads_from_its_folder(tmp_path):
    from erasekit.models.tiny import tiny_sd3_pipeline

    no_t5 = DiffusionHandle(tiny_sd3_pipeline(t5=False))
    tokens, _ = no_t5.split_conditioning(no_t5.encode_prompts(["a cat"]))
    want, _, _, _ = _pipe_encode(no_t5.pipe, "a cat")
    torch.testing.assert_close(tokens, want, rtol=0, atol=1e-5)
    assert not tokens[:, 77:].any() and "text_encoder_3" not in no_t5.components
    no_t5.pipe.save_pretrained(tmp_path / "no_t5", safe_serialization=True)  # text_encoder_3: [null, null]
    loaded = load_model(f"local:{tmp_path / 'no_t5'}", device="cpu")
    assert type(loaded) is SD3Handle and loaded.fingerprint() == no_t5.fingerprint()


def test_folder_round_trip_keeps_class_and_fingerprint(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "model", safe_serialization=True)
    handle = load_model(f"local:{tmp_path / 'model'}", device="cpu")
    assert type(handle) is type(DiffusionHandle(pipe)) and type(handle.pipe) is type(pipe)
    assert handle.fingerprint() == DiffusionHandle(pipe).fingerprint()


def test_tiny_specs_load_by_name():
    assert type(load_model("tiny-sdxl", device="cpu")) is SDXLHandle
    handle = load_model("tiny-sd3", device="cpu")
    assert type(handle) is SD3Handle and handle.spec == "tiny-sd3"


def test_sd3_attention_stays_on_sdpa(tiny_sd3_pipe):
    assert set_attention_backend(tiny_sd3_pipe, "auto") == "sdpa"
    with pytest.raises(ValueError, match="sdpa"):
        set_attention_backend(tiny_sd3_pipe, "eager")


def test_tiny_t5_tokenizer_is_a_t5_tokenizer():
    from transformers import T5TokenizerFast

    from erasekit.models.tiny import t5_char_tokenizer

    tok = t5_char_tokenizer()
    assert isinstance(tok, T5TokenizerFast)
    ids = tok("a cat").input_ids
    assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    assert tok.convert_ids_to_tokens(ids)[:2] == ["▁a", "▁c"]
