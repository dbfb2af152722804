"""random_pipeline(overrides=...): a smaller model of a shipped architecture for trying benchmarks out."""

import pytest
import torch

from erasekit.models.architectures import SD15, random_pipeline

TOY = {
    "unet": {"block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "cross_attention_dim": 32},
    "vae": {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1},
    "text_encoder": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
}


def test_overrides_replace_only_the_named_entries_and_the_seed_fixes_the_weights():
    a, b = random_pipeline("sd15", seed=1, overrides=TOY), random_pipeline("sd15", seed=1, overrides=TOY)
    assert list(a.unet.config.block_out_channels) == [32, 64, 64, 64]
    assert list(a.unet.config.down_block_types) == SD15["unet"]["down_block_types"]  # the rest is SD 1.5's
    assert a.text_encoder.config.hidden_size == 32 and a.text_encoder.config.vocab_size == 49408
    assert all(torch.equal(p, q) for p, q in zip(a.unet.parameters(), b.unet.parameters(), strict=True))
    assert SD15["unet"]["block_out_channels"] == [320, 640, 1280, 1280]  # the shipped spec is not modified


def test_overrides_of_an_unknown_component_are_refused():
    with pytest.raises(ValueError, match="unknown components \\['unett'\\]"):
        random_pipeline("sd15", overrides={"unett": {}})
