"""Known answers for DoCo's gradient surgery."""

import pytest
import torch

from erasekit.ops import combine_gradients, pcgrad_project, reference_project, surgery


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
