"""Known answers for DoCo's math: x̂₀ from the network output, the adversarial losses, the surrogate loss.

The gradient surgery (PCGrad and the reference rule) is pinned in tests/ops/test_surgery_ops.py.
"""

import math

import pytest
import torch

from erasekit.ops import discriminator_loss, generator_loss, surrogate_loss, x0_from_prediction


def test_x0_from_epsilon_and_v_hand_computed():
    x_t, out, a = torch.tensor([[1.0]]), torch.tensor([[0.6]]), torch.tensor([0.64])  # √ᾱ = 0.8, √(1−ᾱ) = 0.6
    assert torch.allclose(x0_from_prediction(x_t, out, a), torch.tensor([[(1.0 - 0.36) / 0.8]]))
    assert torch.allclose(x0_from_prediction(x_t, out, a, "v_prediction"), torch.tensor([[0.8 - 0.36]]))


def test_x0_inverts_the_forward_process_per_sample():
    """x_t = √ᾱ·x₀ + √(1−ᾱ)·ε with ᾱ per sample; ε or v = √ᾱ·ε − √(1−ᾱ)·x₀ gives x₀ back."""
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, 4, generator=gen), torch.randn(3, 2, 4, 4, generator=gen)
    a = torch.tensor([0.9, 0.5, 0.1])
    s, c = a.sqrt().view(-1, 1, 1, 1), (1 - a).sqrt().view(-1, 1, 1, 1)
    x_t = s * x0 + c * eps
    torch.testing.assert_close(x0_from_prediction(x_t, eps, a), x0)
    torch.testing.assert_close(x0_from_prediction(x_t, s * eps - c * x0, a, "v_prediction"), x0)


def test_x0_is_fp32_whatever_the_inputs():
    out = x0_from_prediction(torch.ones(1, 1, dtype=torch.float16), torch.zeros(1, 1), torch.tensor([0.25]))
    assert out.dtype == torch.float32 and float(out) == 2.0


def test_discriminator_loss_hand_computed():
    # σ(ln 3) = 3/4: the real side costs −ln(3/4), the fake side −ln(1/4); half their sum
    logit = torch.tensor([math.log(3.0)])
    assert float(discriminator_loss(logit, logit)) == pytest.approx(0.5 * (math.log(4 / 3) + math.log(4)))
    undecided = discriminator_loss(torch.zeros(2, 1, 3, 3), torch.zeros(5, 1, 3, 3))  # each side its own mean
    assert float(undecided) == pytest.approx(math.log(2))
    assert float(discriminator_loss(torch.tensor([30.0]), torch.tensor([-30.0]))) < 1e-12  # a perfect one


def test_generator_loss_wants_the_fake_side_read_as_real():
    assert float(generator_loss(torch.tensor([math.log(3.0)]))) == pytest.approx(math.log(4 / 3))
    per_patch = generator_loss(torch.tensor([[0.0, math.log(3.0)]]))  # the mean over patches
    assert float(per_patch) == pytest.approx(0.5 * (math.log(2) + math.log(4 / 3)))
    logits = torch.zeros(4, requires_grad=True)
    generator_loss(logits).backward()  # d/dx BCE(x, 1) = σ(x) − 1 = −1/2 at 0, averaged over 4 logits
    torch.testing.assert_close(logits.grad, torch.full((4,), -0.125))


def test_surrogate_loss_has_the_real_value_and_exactly_the_given_gradient():
    params = {"a": torch.tensor([1.0, -2.0, 3.0], requires_grad=True), "b": torch.ones(2, 2, requires_grad=True)}
    grads = {"a": torch.tensor([0.5, 0.25, -4.0]), "b": None}
    loss = surrogate_loss(params, grads, torch.tensor(1.25))
    loss.backward()
    assert float(loss.detach()) == 1.25
    assert torch.equal(params["a"].grad, grads["a"]) and params["b"].grad is None
    leaf = surrogate_loss(params, {}, torch.tensor(0.5))
    leaf.backward()  # nothing to update: every p.grad stays as it was
    assert float(leaf.detach()) == 0.5 and params["b"].grad is None
    assert torch.equal(params["a"].grad, grads["a"])
