"""Known answers for the adaptive layer choice: which W+ code each layer reads, and the ranking."""

import pytest
import torch

from erasekit.ops import code_movement, layer_w_index, rank_layers


def test_layer_w_index_is_what_the_synthesis_network_reads(tiny_generator):
    """Every layer's affine gets exactly the W+ code the table names (checked with hooks, distinct codes)."""
    synthesis = tiny_generator.synthesis
    table = layer_w_index(synthesis.block_resolutions)
    assert table[(4, "conv1")] == 0 and table[(8, "conv0")] == 1 and table[(16, "torgb")] == synthesis.num_ws - 1
    ws = torch.arange(synthesis.num_ws, dtype=torch.float32)[None, :, None].expand(1, -1, synthesis.w_dim).clone()
    seen = {}
    for (res, layer), _ in table.items():
        module = getattr(getattr(synthesis, f"b{res}"), layer).affine
        module.register_forward_pre_hook(lambda m, args, key=(res, layer): seen.__setitem__(key, args[0][0, 0].item()))
    synthesis(ws)
    assert seen == {key: float(i) for key, i in table.items()}


def test_code_movement_is_the_mean_absolute_change_per_code():
    before = torch.zeros(2, 3, 2)
    after = before.clone()
    after[0, 1] = torch.tensor([1.0, -3.0])  # code 1: |1| + |−3| over 2 samples x 2 dims = 1
    after[1, 2] = torch.tensor([0.5, 0.5])  # code 2: 1 / 4
    torch.testing.assert_close(code_movement(before, after.requires_grad_(True)), torch.tensor([0.0, 1.0, 0.25]))


def test_rank_layers_keeps_the_layers_whose_codes_moved_most():
    names = [
        "generator.synthesis.b4.conv1.weight",
        "generator.synthesis.b8.conv0.weight",
        "generator.synthesis.b8.conv1.weight",
        "generator.synthesis.b8.conv1.bias",
        "generator.synthesis.b16.conv0.weight",
    ]
    movement = torch.tensor([0.1, 0.5, 0.9, 0.2, 0.0, 0.0])  # w2 (b8.conv1) most, then w1 (b8.conv0)
    assert rank_layers(movement, names, [4, 8, 16], 1) == names[2:4]
    assert rank_layers(movement, names, [4, 8, 16], 2) == names[1:4]
    with pytest.raises(ValueError, match="synthesis-layer"):
        rank_layers(movement, ["generator.mapping.fc0.weight"], [4, 8, 16], 1)


def test_rank_layers_breaks_ties_by_resolution_then_layer():
    names = ["generator.synthesis.b8.conv1.weight", "generator.synthesis.b4.torgb.weight"]
    movement = torch.tensor([0.0, 0.3, 0.3, 0.0])  # b4.torgb reads w1, b8.conv1 reads w2: a tie
    assert rank_layers(movement, names, [4, 8], 1) == [names[1]]
    assert rank_layers(movement, [*names, "generator.mapping.fc0.weight"], [4, 8], 2) == names
