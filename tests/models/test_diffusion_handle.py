"""The DiffusionHandle operations the diffusion methods use instead of the pipeline's parts."""

import torch


def test_handle_x0_and_latent_shape_follow_the_scheduler_and_unet(tiny_handle, tiny_pipe):
    gen = torch.Generator().manual_seed(0)
    shape = tiny_handle.latent_shape()
    assert shape == tuple(tiny_handle.initial_latents(1, gen).shape[1:])
    assert shape[0] == tiny_pipe.unet.config.in_channels and shape[1] == tiny_pipe.unet.config.sample_size
    x0, eps = torch.randn(3, *shape, generator=gen), torch.randn(3, *shape, generator=gen)
    t = torch.tensor([10, 500, 990])
    x_t = tiny_pipe.scheduler.add_noise(x0, eps, t)
    torch.testing.assert_close(tiny_handle.predicted_x0(x_t, t, eps), x0, rtol=1e-4, atol=1e-3)


def test_handle_text_operations_match_the_tokenizer(tiny_handle, tiny_pipe):
    tok = tiny_pipe.tokenizer
    assert tiny_handle.token_ids("a cat") == tok("a cat", add_special_tokens=False).input_ids
    assert tiny_handle.max_prompt_tokens == tok.model_max_length
    assert tiny_handle.text_embedding_dim == tiny_handle.encode_prompts(["a"]).shape[-1]
    words = [w for w in tiny_handle.vocabulary_words() if w.isascii() and w.isalpha()]
    vocab = tok.get_vocab()
    assert words == sorted(t[:-4] for t in vocab if t.endswith("</w>") and t[:-4].isascii() and t[:-4].isalpha())


def test_add_noise_gives_the_training_timesteps_noise_level_with_every_sampler(tiny_pipe):
    """√ᾱ_t·x₀ + √(1−ᾱ_t)·ε at each training timestep, whatever sampler the pipeline carries and whether or not it
    has sampled: DPM-Solver's, UniPC's and Euler's own add_noise use their inference schedules instead."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler

    from erasekit.models import DiffusionHandle

    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([10, 500, 990])
    original = tiny_pipe.scheduler
    try:
        for kind in (DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler, EulerDiscreteScheduler):
            tiny_pipe.scheduler = kind.from_config(original.config)
            handle = DiffusionHandle(tiny_pipe)
            a = tiny_pipe.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
            expected = a.sqrt() * x0 + (1 - a).sqrt() * eps
            for sampled in (False, True):
                if sampled:
                    tiny_pipe.scheduler.set_timesteps(5)
                torch.testing.assert_close(handle.add_noise(x0, eps, t), expected, msg=f"{kind.__name__} {sampled}")
    finally:
        tiny_pipe.scheduler = original
