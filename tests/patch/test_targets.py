import pytest

from erasekit.models import named_parameters
from erasekit.patch import resolve_targets


@pytest.fixture
def names(tiny_pipe):
    return list(named_parameters({"unet": tiny_pipe.unet, "text_encoder": tiny_pipe.text_encoder}))


def test_xattn_selects_only_cross_attention(names):
    chosen = resolve_targets("xattn", names)
    assert chosen and all(".attn2." in n and n.startswith("unet.") for n in chosen)
    assert len(chosen) == sum(".attn2." in n for n in names)


def test_xattn_kv_is_key_and_value_weights(names):
    chosen = resolve_targets("xattn_kv", names)
    assert chosen and all(n.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for n in chosen)


def test_non_xattn_excludes_cross_attention_time_embedding_and_output(names):
    chosen = set(resolve_targets("non_xattn", names))
    assert chosen and not any(".attn2." in n or "time_embedding" in n or "conv_out" in n for n in chosen)
    assert "unet.conv_in.weight" in chosen and all(n.startswith("unet.") for n in chosen)


def test_list_with_exclusion_and_regex(names):
    chosen = resolve_targets(["unet", "-xattn", "re:text_encoder\\..*final_layer_norm.*"], names)
    assert not any(".attn2." in n for n in chosen)
    assert any(n.startswith("text_encoder.") and n.endswith("final_layer_norm.weight") for n in chosen)


def test_nothing_matched_is_an_error_with_examples(names):
    with pytest.raises(ValueError, match="matches no parameter.*unet\\."):
        resolve_targets("re:nothing\\.here", names)


def test_unknown_preset_lists_presets(names):
    with pytest.raises(ValueError, match="(?s)Unknown target 'xatn'.*xattn_kv"):
        resolve_targets("xatn", names)


def test_bad_regex_and_only_exclusions(names):
    with pytest.raises(ValueError, match="invalid"):
        resolve_targets("re:(", names)
    with pytest.raises(ValueError, match="only removes"):
        resolve_targets(["-xattn"], names)
