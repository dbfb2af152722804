"""Known answers for SalUn's math: the global saliency mask, the CFG combination and the saliency loss."""

import pytest
import torch
import torch.nn.functional as F

from erasekit.ops import cfg_combination, global_topk_mask, saliency_loss


def test_mask_keeps_the_most_salient_entries_ranked_globally():
    scores = {"small": torch.tensor([0.1, 0.2, 0.3, 0.4]), "big": torch.tensor([[10.0, 40.0], [30.0, 20.0]])}
    mask = global_topk_mask(scores, 0.25)  # k = 2 of 8
    assert mask["small"].dtype == torch.bool and mask["big"].shape == (2, 2)
    assert not mask["small"].any()  # ranked globally: a tensor of small scores gets nothing (not top-k per tensor)
    assert mask["big"].tolist() == [[False, True], [True, False]]  # the LARGEST scores (40, 30), not the least


def test_mask_holds_exactly_k_entries_and_every_kept_score_beats_every_dropped_one():
    gen = torch.Generator().manual_seed(0)
    scores = {f"t{i}": torch.rand(5, 7, generator=gen) for i in range(3)}
    for ratio in (0.1, 0.5, 0.9):
        mask = global_topk_mask(scores, ratio)
        flat_s = torch.cat([s.reshape(-1) for s in scores.values()])
        flat_m = torch.cat([m.reshape(-1) for m in mask.values()])
        assert int(flat_m.sum()) == round(ratio * flat_s.numel())
        assert flat_s[flat_m].min() > flat_s[~flat_m].max()


def test_mask_ties_are_broken_deterministically_in_global_order():
    scores = {"a": torch.ones(3), "b": torch.tensor([1.0, 2.0, 1.0])}
    mask = global_topk_mask(scores, 0.5)  # k = 3: the 2.0, then the first two tied ones in (a, b) order
    assert mask["a"].tolist() == [True, True, False] and mask["b"].tolist() == [False, True, False]
    assert all(torch.equal(mask[k], global_topk_mask(scores, 0.5)[k]) for k in mask)


def test_mask_ratio_edge_cases_and_bad_input():
    scores = {"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([2.0])}
    assert not any(m.any() for m in global_topk_mask(scores, 0.0).values())
    assert all(m.all() for m in global_topk_mask(scores, 1.0).values())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        global_topk_mask(scores, 1.5)
    with pytest.raises(ValueError, match="NaN"):
        global_topk_mask({"a": torch.tensor([float("nan"), 1.0])}, 0.5)


def test_cfg_combination_and_saliency_loss_known_answers():
    cond, uncond = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    assert torch.equal(cfg_combination(cond, uncond, 7.5), torch.tensor([9.5, -7.5]))
    assert torch.equal(cfg_combination(cond, uncond, 0.0), cond)
    noise = torch.tensor([9.5, -7.5])
    assert float(saliency_loss(noise, cond, uncond, 7.5)) == 0.0
    assert torch.equal(saliency_loss(noise, cond, uncond, 0.0), F.mse_loss(cond, noise))
