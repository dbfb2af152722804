"""Known answers for Text-to-Unlearn's CLIP losses (hand-computed on 2-d embeddings)."""

import math

import pytest
import torch
import torch.nn.functional as F

from erasekit.ops import (
    attribute_probability,
    centred_logits,
    colour_layout_loss,
    directional_loss,
    feature_retention,
    logit_drift,
    pixel_retention,
    prototype,
    removal_loss,
    text_direction,
    weighted_directional_loss,
    weighted_mean,
)


def test_text_direction_averages_normalised_templates():
    with_ = torch.tensor([[2.0, 0.0], [0.0, 0.0001]])  # a long and a tiny embedding count the same once normalised
    without = torch.tensor([[0.0, 3.0]])
    expected = F.normalize(torch.tensor([0.0, 1.0]) - torch.tensor([1.0, 1.0]) / math.sqrt(2), dim=0)
    torch.testing.assert_close(text_direction(with_, without), expected)


def test_prototype_is_the_normalised_mean():
    torch.testing.assert_close(prototype(torch.tensor([[3.0, 0.0], [1.0, 0.0]])), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(
        prototype(torch.tensor([[0.6, 0.8], [0.0, 1.0]])), F.normalize(torch.tensor([0.3, 0.9]), dim=0)
    )


def test_directional_loss_known_answers():
    direction = torch.tensor([0.0, 1.0])
    frozen = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    trained = torch.tensor([[1.0, 0.5], [1.0, -2.0], [3.0, 0.0]])  # along, against, orthogonal
    torch.testing.assert_close(directional_loss(trained, frozen, direction), torch.tensor([0.0, 2.0, 1.0]))
    # a floor changes nothing for changes at least that large, and is a bounded linear push below it
    torch.testing.assert_close(directional_loss(trained, frozen, direction, 0.5), torch.tensor([0.0, 2.0, 1.0]))
    small = torch.tensor([[1.0, 0.1], [1.0, 0.0]])
    torch.testing.assert_close(directional_loss(small, frozen[:2], direction, 0.5), torch.tensor([0.8, 1.0]))
    at_start = frozen[:1].clone().requires_grad_(True)  # trained == frozen: the first step
    directional_loss(at_start, frozen[:1], direction, 0.5).sum().backward()
    torch.testing.assert_close(at_start.grad, torch.tensor([[0.0, -2.0]]))  # along the direction, finite
    plain = frozen[:1].clone().requires_grad_(True)  # the plain cosine at the first step: ~1/eps
    directional_loss(plain, frozen[:1], direction).sum().backward()
    assert float(plain.grad.norm()) > 1e6


def test_weighted_directional_loss_divides_by_the_batch_not_the_weights():
    frozen = torch.zeros(2, 2)
    trained = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # against d0 (loss 2), orthogonal to d0 (loss 1)
    directions = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # d1: orthogonal (1), along (0)
    weights = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    # d0: (2·1 + 1·0) / 2 = 1; d1: (1·0 + 0·0.5) / 2 = 0; mean over directions 0.5
    assert float(weighted_directional_loss(trained, frozen, directions, weights)) == pytest.approx(0.5)
    assert float(weighted_directional_loss(trained, frozen, directions, torch.zeros(2, 2))) == 0.0


def test_weighted_mean_and_its_all_zero_fallback():
    assert float(weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.0]))) == 1.0
    assert float(weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 3.0]))) == 2.5
    assert float(weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0]))) == 2.0


def test_attribute_probability_is_the_softmax_over_with_and_without():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    glasses = torch.eye(2)  # (with, without)
    beard = torch.eye(2).flip(0)  # prototypes the other way round
    p = attribute_probability(feats, [glasses, beard], 2.0)
    s = torch.sigmoid(torch.tensor([2.0, -2.0, -0.4]))  # σ(scale · (cos_with − cos_without))
    torch.testing.assert_close(p, torch.stack([s, 1 - s], dim=1))


def test_removal_loss_is_the_weighted_softplus_of_the_log_odds():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    weights = torch.tensor([[1.0], [0.5]])
    expected = (math.log1p(math.e**3) * 1.0 + math.log1p(math.e**-3) * 0.5) / 2  # log-odds ±3 at scale 3
    assert float(removal_loss(feats, [torch.eye(2)], 3.0, weights)) == pytest.approx(expected)


def test_centred_logits_and_their_drift():
    feats = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    pair = centred_logits(feats, torch.eye(2), 10.0)
    torch.testing.assert_close(pair, torch.tensor([[5.0, -5.0], [-1.0, 1.0]]))  # ± half the log-odds
    group = centred_logits(feats, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), 3.0)
    torch.testing.assert_close(group, torch.tensor([[2.0, -1.0, -1.0], [1.2, 1.8, -3.0]]))
    # log-odds 10 -> 0 and -2 -> 0: 2·(5² + 5²) = 100 and 2·(1² + 1²) = 4, mean 52
    still = torch.zeros(2, 2)
    assert float(logit_drift([still], [pair])) == pytest.approx(52.0)
    torch.testing.assert_close(logit_drift([pair, group], [pair, group]), torch.tensor(0.0))
    with pytest.raises(ValueError):
        logit_drift([pair], [pair, group])


def test_pixel_and_feature_retention():
    frozen = torch.zeros(2, 3, 2, 2)
    trained = torch.stack([torch.full((3, 2, 2), 0.5), torch.ones(3, 2, 2)])  # per-image MSE 0.25 and 1
    assert float(pixel_retention(trained, frozen, torch.tensor([3.0, 1.0]))) == pytest.approx((0.75 + 1.0) / 4)
    f_frozen = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    f_trained = torch.tensor([[0.6, 0.8], [-1.0, 0.0]])  # 1 − cos: 0.4 and 2
    assert float(feature_retention(f_trained, f_frozen, torch.tensor([1.0, 1.0]))) == pytest.approx(1.2)


def test_colour_layout_loss_sees_cell_means_not_shapes():
    frozen = torch.zeros(1, 1, 4, 4)
    stripe = frozen.clone()
    stripe[..., :, 0] = 1.0  # a thin stripe in the left cells: each 2x2 cell's mean moves by 0.5
    assert float(colour_layout_loss(stripe, frozen, 2)) == pytest.approx((0.25 + 0.25) / 4)
    moved = stripe.roll(1, dims=-1)  # the stripe one pixel right: every cell mean unchanged
    assert float(colour_layout_loss(moved, stripe, 2)) == 0.0
    assert float(colour_layout_loss(stripe, frozen, 1)) == pytest.approx(0.25**2)
