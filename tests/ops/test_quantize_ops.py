"""Known answers for the quantization round trips of the quantize attack."""

import pytest
import torch

from erasekit.ops.quantize import FORMATS, bin_width, delta_bin_ratio, nf4_levels, nf4_roundtrip, quantize_roundtrip


def _weights(seed=0, shape=(16, 96)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.05


def test_nf4_levels_are_sixteen_sorted_with_exact_zero_and_unit_ends():
    levels = nf4_levels()
    assert levels.shape == (16,)
    assert torch.all(levels[1:] > levels[:-1])
    assert levels[0] == -1 and levels[-1] == 1 and (levels == 0).sum() == 1
    assert (levels > 0).sum() == 8 and (levels < 0).sum() == 7  # the asymmetric NF4 code book


@pytest.mark.parametrize("fmt,rel", [("fp16", 2.0**-11), ("bf16", 2.0**-8)])
def test_float_casts_round_within_half_an_ulp(fmt, rel):
    w = _weights()
    err = (quantize_roundtrip(w, fmt) - w).abs()
    assert torch.all(err <= rel * w.abs() + 1e-30)
    assert torch.all(err <= bin_width(w, fmt) / 2)


def test_int8_error_is_at_most_half_the_row_scale_and_grid_values_are_exact():
    w = _weights()
    err = (quantize_roundtrip(w, "int8") - w).abs()
    scale = w.abs().amax(1, keepdim=True) / 127
    assert torch.all(err <= scale / 2 + 1e-7)
    assert torch.allclose(bin_width(w, "int8"), scale.expand_as(w))
    on_grid = torch.arange(-127, 128, dtype=torch.float32)[None, :] * 0.01
    assert torch.allclose(quantize_roundtrip(on_grid, "int8"), on_grid, atol=1e-7)


def test_nf4_error_is_at_most_half_the_widest_gap_times_the_group_absmax():
    w = _weights(shape=(8, 100))  # 800 values: 12 full groups and a padded one
    out, absmax = nf4_roundtrip(w, 64)
    half_gap = float((nf4_levels()[1:] - nf4_levels()[:-1]).max()) / 2
    flat_err = torch.nn.functional.pad((out - w).abs().reshape(-1), (0, 32)).reshape(-1, 64)
    assert torch.all(flat_err <= absmax[:, None] * half_gap + 1e-7)
    assert torch.all((out - w).abs() <= bin_width(w, "nf4") / 2 + 1e-7)
    group = torch.cat([nf4_levels() * 0.3] * 4)  # values on the code book, absmax 0.3
    assert torch.allclose(quantize_roundtrip(group, "nf4"), group, atol=1e-7)


def test_coarser_formats_err_more():
    w = _weights()
    errors = [float((quantize_roundtrip(w, f) - w).abs().mean()) for f in FORMATS]
    assert errors == sorted(errors)  # fp16 < bf16 < int8 < nf4


def test_a_delta_under_half_a_bin_is_erased_and_a_large_one_kept():
    w = torch.zeros(4, 64)
    w[:, 0] = 1.0  # int8 scale 1/127 on every row; zeros sit in the middle of their bin
    small = torch.zeros(4, 64)
    small[:, 1:] = 1e-3  # an eighth of a bin
    stats = delta_bin_ratio(w, small, "int8")
    assert stats["retained"] == 0 and stats["below_half_bin"] == 1
    assert stats["median_ratio"] == pytest.approx(0.127, rel=1e-3)
    large = torch.zeros(4, 64)
    large[:, 1:] = 3 / 127  # exactly three bins: rounding keeps it
    assert delta_bin_ratio(w, large, "int8")["retained"] == pytest.approx(1.0, abs=1e-6)


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="int4"):
        quantize_roundtrip(torch.ones(2, 2), "int4")
