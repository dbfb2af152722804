"""The diffusers model handle, spec resolution, attention backends and the offline CLIP tokenizer."""

import pytest
import torch

import erasekit
from erasekit.models import DiffusionHandle, attention_backend, load_pipeline, set_attention_backend


def test_tokenizer_matches_open_clip():
    import open_clip

    from erasekit.models.tokenizer import clip_tokenizer

    ours, ref = clip_tokenizer(), open_clip.get_tokenizer("ViT-B-32")
    for text in ["a photo of a cat", "A apple image in Watercolor style.", "Van Gogh's café, 1889!"]:
        ids = ours(text).input_ids
        assert ids == ref([text])[0].tolist()[: len(ids)]


def test_partial_sampling_stops_at_the_requested_step(tiny_handle):
    h = tiny_handle
    cond, uncond = h.encode_prompts(["a cat"]), h.encode_prompts([""])
    start = h.initial_latents(1, torch.Generator().manual_seed(0))
    x_k, t_k = h.sample_latents(cond, uncond, start, 6, 3.0, stop_after=2)
    assert int(t_k) == int(h.pipe.scheduler.timesteps[2])
    # continuing from x_k with the scheduler's own step function equals stepping manually from the start
    sched = h.pipe.scheduler
    sched.set_timesteps(6)
    x = start.clone()
    for t in sched.timesteps[:2]:
        eps = h.predict_noise(torch.cat([x, x]), t, torch.cat([uncond, cond]))
        e_u, e_c = eps.chunk(2)
        x = sched.step(e_u + 3.0 * (e_c - e_u), t, x).prev_sample
    torch.testing.assert_close(x_k, x, rtol=1e-5, atol=1e-5)
    x0, t_end = h.sample_latents(cond, uncond, start, 6, 3.0, stop_after=0)
    assert torch.equal(x0, start) and int(t_end) == int(sched.timesteps[0])


def test_generate_is_deterministic_per_seed_and_independent_of_batch(tiny_handle):
    a = tiny_handle.generate(["a cat", "a dog"], [0, 1], num_inference_steps=2)
    b = tiny_handle.generate(["a dog"], [1], num_inference_steps=2)
    assert a.shape == (2, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(a[1:], b, rtol=1e-5, atol=1e-5)


def test_text_encoder_overrides_flow_gradients_without_touching_the_model(tiny_handle):
    names = [n for n in tiny_handle.named_parameters() if n.endswith("final_layer_norm.weight")]
    params = {n: tiny_handle.named_parameters()[n].detach().clone().requires_grad_(True) for n in names}
    emb = tiny_handle.encode_prompts(["a cat"], params=params)
    emb.sum().backward()
    assert params[names[0]].grad is not None
    assert tiny_handle.encode_prompts(["a cat"]).requires_grad is False


def test_attention_backends_and_restore(tiny_pipe):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    assert set_attention_backend(tiny_pipe, "auto") in ("sdpa", "xformers")
    with attention_backend(tiny_pipe, "eager"):
        assert all(isinstance(p, AttnProcessor) for p in tiny_pipe.unet.attn_processors.values())
    assert all(isinstance(p, AttnProcessor2_0) for p in tiny_pipe.unet.attn_processors.values())
    with pytest.raises(ValueError, match="Unknown attention backend"):
        set_attention_backend(tiny_pipe, "flash")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_xformers_without_cuda_is_a_clear_error(tiny_pipe):
    with pytest.raises(ValueError, match="xformers attention needs"):
        set_attention_backend(tiny_pipe, "xformers")


def test_local_folder_round_trip_and_spec_errors(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "pipe", safe_serialization=True)
    loaded = load_pipeline(f"local:{tmp_path / 'pipe'}", device="cpu")
    for (n, a), b in zip(tiny_pipe.unet.named_parameters(), loaded.unet.parameters(), strict=True):
        assert torch.equal(a, b), n
    assert loaded.unet.dtype == torch.float32
    handle = erasekit.load_model(str(tmp_path / "pipe"), device="cpu")
    assert handle.spec == str(tmp_path / "pipe")
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        load_pipeline("nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model_index.json"):
        load_pipeline(str(tmp_path / "empty"))


def test_handle_rejects_incomplete_pipelines():
    class Half:
        unet = object()

    with pytest.raises(TypeError, match="lacks"):
        DiffusionHandle(Half())


def test_minicanvas_spec_resolves_a_world_folder(tiny_pipe, tmp_path):
    with pytest.raises(ValueError, match="erasekit world train minicanvas"):
        load_pipeline(f"minicanvas:{tmp_path}")
    tiny_pipe.save_pretrained(tmp_path / "pipeline", safe_serialization=True)
    loaded = load_pipeline(f"minicanvas:{tmp_path}", device="cpu")
    assert torch.equal(loaded.unet.conv_in.weight, tiny_pipe.unet.conv_in.weight)
