"""What the diffusion methods compute on SDXL and SD3, beyond the shared suite: UCE's closed form over both SDXL
encoders' width, SD3's flow-matching training inputs, and the denoiser-only targets on SD3."""

import pytest
import torch
from conftest import FAST_CONFIGS

import erasekit
from erasekit.methods.diffusion_data import noisy, timestep_bounds
from erasekit.models import load_model


def test_uce_on_sdxl_sends_the_concept_key_to_the_guide_value(tiny_sdxl_pipe):
    handle = load_model(tiny_sdxl_pipe)
    patch = erasekit.erase(tiny_sdxl_pipe, "uce", "a cat", guide="a dog", lam=1e-4, progress=False)
    keys = handle.token_embeddings(["a cat", "a dog"]).double()
    concept, guide = keys[0, 2], keys[1, 2]  # last word ("cat" / "dog"): the default keys, last_word
    params = handle.named_parameters()
    assert patch.deltas and all(k.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for k in patch.deltas)
    for key, delta in patch.deltas.items():
        w0 = params[key].detach().double()
        assert w0.shape[1] == handle.text_embedding_dim == 8 + 12  # both encoders' states are the key
        w = w0 + delta.to_dense().double()
        target = w0 @ guide
        assert (w @ concept - target).norm() < 1e-2 * (w0 @ concept - target).norm()


def test_sd3_training_inputs_are_flow_matching_on_the_sigma_table(tiny_sd3_pipe):
    handle = load_model(tiny_sd3_pipe)
    table = handle.training_timesteps(torch.arange(handle.num_train_timesteps))
    x0 = torch.randn(4, *handle.latent_shape())
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    x_t, t, target, noise = noisy(handle, x0, gens, timestep_bounds(handle, (0.5, 1.0)), return_noise=True)
    assert all(float(v) in table[500:].tolist() for v in t)  # the upper half of the schedule: more noise
    sigma = (t / 1000).view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, (1 - sigma) * x0 + sigma * noise)
    torch.testing.assert_close(target, noise - x0)


@pytest.mark.parametrize("method", ["salun", "doco"])
def test_sd3_methods_train_the_transformer_only(method, tiny_sd3_pipe):
    with pytest.raises(ValueError, match="transformer parameters only"):
        erasekit.erase(tiny_sd3_pipe, method, "a cat", **{**FAST_CONFIGS[method], "target": ["unet", "text_encoder"]})


def test_esd_variants_on_sd3_follow_the_authors_sd3_sets(tiny_sd3_pipe):
    x = erasekit.erase(tiny_sd3_pipe, "esd", "a cat", **FAST_CONFIGS["esd"])
    u = erasekit.erase(tiny_sd3_pipe, "esd", "a cat", **{**FAST_CONFIGS["esd"], "variant": "u"})
    assert x.deltas and all(".attn." in k for k in x.deltas)  # the joint attention, both streams
    assert u.deltas and not any(".attn." in k for k in u.deltas)
    assert any(k.startswith("transformer.transformer_blocks.0.norm1.linear") for k in u.deltas)


@pytest.mark.parametrize("arch", ["sdxl", "sd3"])
@pytest.mark.parametrize("method", ["esd", "salun"])  # salun: weights built per submodule (MaskedWeights)
def test_gradient_checkpointing_gives_the_same_patch(arch, method, fresh_pipe):
    pipe = fresh_pipe(arch)
    run = {"masked_training": "on"} if method == "salun" else {}
    plain = erasekit.erase(pipe, method, "a cat", **run, **FAST_CONFIGS[method])
    ckpt = erasekit.erase(pipe, method, "a cat", gradient_checkpointing=True, **run, **FAST_CONFIGS[method])
    for k, d in plain.deltas.items():  # recomputation runs under the trained tensors
        assert torch.equal(ckpt.deltas[k].to_dense(), d.to_dense()), k
    assert not load_model(pipe).denoiser.is_gradient_checkpointing
