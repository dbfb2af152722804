"""Known answers for UCE's closed form."""

import pytest
import torch

from erasekit.ops import uce_closed_form


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
