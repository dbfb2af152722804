"""Known answers for the math of SalUn (saliency mask), DoCo (gradient surgery) and UCE (closed form)."""

import pytest
import torch
import torch.nn.functional as F

from erasekit.ops import (
    cfg_combination,
    combine_gradients,
    global_topk_mask,
    pcgrad_project,
    reference_project,
    saliency_loss,
    surgery,
    uce_closed_form,
)

# ---- SalUn: the mask ------------------------------------------------------------------------------------------


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


# ---- DoCo: gradient surgery -----------------------------------------------------------------------------------


def test_non_conflicting_gradients_are_untouched():
    g_a, g_b = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0])
    for mode in ("pcgrad", "reference", "none"):
        assert torch.equal(surgery(g_a, g_b, mode), g_a)
    orthogonal = torch.tensor([0.0, 3.0])  # cos = 0 is no conflict
    assert torch.equal(pcgrad_project(orthogonal, g_b), orthogonal)


def test_conflicting_gradients_become_orthogonal_to_the_preserved_one():
    assert torch.equal(pcgrad_project(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])), torch.tensor([1.0, 0.0]))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        g_a, g_b = torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.randn(3, 4, generator=gen).double()
        if (g_a * g_b).sum() >= 0:
            g_a = -g_a
        out = pcgrad_project(g_a, g_b)
        assert abs(float((out * g_b).sum())) < 1e-12
        assert (
            torch.linalg.matrix_rank(torch.stack([(g_a - out).reshape(-1), g_b.reshape(-1)])) == 1
        )  # removed: only g_b


def test_reference_rule_equals_the_projection_only_for_unit_norm():
    g_b = torch.tensor([0.0, 3.0], dtype=torch.float64)
    g_a = torch.tensor([2.0, -2.0], dtype=torch.float64)  # ‖g_a‖ ≠ 1
    assert torch.equal(pcgrad_project(g_a, g_b), torch.tensor([2.0, 0.0], dtype=torch.float64))
    assert not torch.allclose(reference_project(g_a, g_b), pcgrad_project(g_a, g_b))
    unit = g_a / g_a.norm()
    torch.testing.assert_close(reference_project(unit, g_b), pcgrad_project(unit, g_b))
    # with λ = ‖g_a‖ the reference rule is the projection again
    torch.testing.assert_close(reference_project(g_a, g_b, lam=float(g_a.norm())), pcgrad_project(g_a, g_b))


def test_combine_gradients_adds_the_protected_gradient_and_handles_missing_ones():
    g_a = {"x": torch.tensor([1.0, -1.0]), "y": None, "z": torch.tensor([1.0])}
    g_b = {"x": torch.tensor([0.0, 1.0]), "y": torch.tensor([5.0]), "z": None}
    out, conflict = combine_gradients(g_a, g_b, "pcgrad")
    assert torch.equal(out["x"], torch.tensor([1.0, 1.0]))  # projected [1, 0] + g_b
    assert torch.equal(out["y"], g_b["y"]) and torch.equal(out["z"], g_a["z"])
    assert conflict == 1.0
    assert torch.equal(combine_gradients(g_a, g_b, "none")[0]["x"], torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="surgery"):
        surgery(g_a["x"], g_b["x"], "pc-grad")


# ---- UCE: the closed form -------------------------------------------------------------------------------------


def test_uce_hand_computed_two_by_two():
    # W = (λI + v eᵀ)(λI + e eᵀ)⁻¹ with e = (1, 0), v = (0, 2), λ = 1: [[1, 0], [2, 1]] · diag(1/2, 1)
    w = uce_closed_form(torch.eye(2), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), lam=1.0)
    assert w.dtype == torch.float64
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.0], [1.0, 1.0]], dtype=torch.float64))


def test_uce_small_lambda_maps_erased_keys_to_their_values_and_keeps_preserved_ones():
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    c_e, c_p = torch.randn(2, 5, generator=gen).double(), torch.randn(2, 5, generator=gen).double()
    v_e = torch.randn(2, 3, generator=gen).double()
    w = uce_closed_form(w0, c_e, v_e, lam=1e-9)
    torch.testing.assert_close(c_e @ w.T, v_e, rtol=0, atol=1e-6)
    w = uce_closed_form(w0, c_e, v_e, c_p, lam=1e-9)
    torch.testing.assert_close(c_e @ w.T, v_e, rtol=0, atol=1e-6)
    torch.testing.assert_close(c_p @ w.T, c_p @ w0.T, rtol=0, atol=1e-6)  # W c_p = W₀ c_p


def test_uce_large_lambda_stays_at_the_original_weight():
    w0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w = uce_closed_form(w0, torch.tensor([[1.0, 1.0]]), torch.tensor([[9.0, 9.0]]), lam=1e9)
    torch.testing.assert_close(w, w0.double(), rtol=0, atol=1e-7)


def test_uce_rejects_bad_lambda_and_shapes():
    with pytest.raises(ValueError, match="lam"):
        uce_closed_form(torch.eye(2), torch.ones(1, 2), torch.ones(1, 2), lam=0.0)
    with pytest.raises(ValueError, match="do not fit"):
        uce_closed_form(torch.eye(2), torch.ones(1, 3), torch.ones(1, 2))
