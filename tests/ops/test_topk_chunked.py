"""The global top-k mask without concatenation: the same mask as a stable sort of the concatenated scores (ties in
global flat order), and the same k-th largest value as torch.topk, also when bisection narrows and gathers."""

import pytest
import torch

from erasekit.ops import global_topk_mask
from erasekit.ops import saliency as saliency_ops
from erasekit.ops.saliency import kth_largest


def reference_mask(scores: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """The definition: concatenate, stable sort descending (equal scores keep global flat order), keep the first k."""
    flat = torch.cat([s.reshape(-1).float() for s in scores.values()])
    k = int(round(ratio * flat.numel()))
    order = torch.sort(flat, descending=True, stable=True).indices
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start : start + s.numel()].view(s.shape)
        start += s.numel()
    return out


def _scores(seed: int, tie_levels: int | None) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(7,), (3, 5), (2, 3, 4), (0,), (1,), (6, 2)]
    out = {}
    for i, shape in enumerate(shapes):
        s = torch.rand(shape, generator=gen)
        if tie_levels is not None:  # few distinct values: many ties at every threshold
            s = torch.floor(s * tie_levels) / tie_levels
        out[f"t{i}"] = s
    return out


@pytest.mark.parametrize("gather_limit", [0, 1 << 22])  # 0: bisection to the last bit; default: gathered early
@pytest.mark.parametrize("tie_levels", [None, 2, 3, 7])
@pytest.mark.parametrize("seed", [0, 1])
def test_mask_equals_the_stable_sort_of_the_concatenated_scores_including_ties(
    seed, tie_levels, gather_limit, monkeypatch
):
    monkeypatch.setattr(saliency_ops, "_GATHER_LIMIT", gather_limit)
    scores = _scores(seed, tie_levels)
    total = sum(s.numel() for s in scores.values())
    for k in range(total + 1):
        ratio = k / total
        got, want = global_topk_mask(scores, ratio), reference_mask(scores, ratio)
        assert list(got) == list(want)
        for name in want:
            assert got[name].dtype == torch.bool and got[name].shape == want[name].shape
            assert torch.equal(got[name], want[name]), (seed, tie_levels, k, name)


@pytest.mark.parametrize("gather_limit", [0, 1 << 22])
def test_kth_largest_matches_topk_on_values_of_every_sign_and_magnitude(gather_limit, monkeypatch):
    monkeypatch.setattr(saliency_ops, "_GATHER_LIMIT", gather_limit)
    gen = torch.Generator().manual_seed(3)
    special = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 1e-38, 3.4e38, -3.4e38, 1.0, 1.0, -2.5])
    parts = [special, torch.randn(50, generator=gen) * 1e-6, torch.randn(4, 4, generator=gen) * 1e6]
    flat = torch.cat([p.reshape(-1) for p in parts])
    for k in range(1, flat.numel() + 1):
        assert kth_largest(parts, k) == float(flat.topk(k).values[-1]), k


def test_mask_of_signed_zeros_and_equal_scores_keeps_global_order(monkeypatch):
    monkeypatch.setattr(saliency_ops, "_GATHER_LIMIT", 0)
    scores = {"a": torch.tensor([0.0, -0.0, 0.0]), "b": torch.tensor([-0.0, 1.0])}
    mask = global_topk_mask(scores, 0.6)  # k = 3: the 1.0, then the first two zeros (of either sign) in order
    assert mask["a"].tolist() == [True, True, False] and mask["b"].tolist() == [False, True]


def test_mask_reads_half_precision_scores_as_float32():
    scores = {"a": torch.tensor([0.5, 0.25, 2.0], dtype=torch.float16), "b": torch.tensor([1.0], dtype=torch.bfloat16)}
    mask = global_topk_mask(scores, 0.5)
    assert mask["a"].tolist() == [False, False, True] and mask["b"].tolist() == [True]


def test_kth_largest_refuses_k_out_of_range():
    with pytest.raises(ValueError, match=r"k must be in \[1, 2\]"):
        kth_largest([torch.ones(2)], 3)
    with pytest.raises(ValueError, match=r"k must be in \[1, 2\]"):
        kth_largest([torch.ones(2)], 0)
