"""Known answers for the probe attack's math: a planted linear feature is decoded, noise is not; linear CKA."""

import torch

from erasekit.ops.probe import linear_cka, probe_accuracy
from erasekit.ops.vocab import nearest_tokens, project_straight_through


def _features(n=96, d=40, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_probe_finds_a_planted_linearly_separable_feature():
    x = _features()
    labels = torch.arange(96) % 2 == 0
    direction = torch.randn(40, generator=torch.Generator().manual_seed(1))
    x = x + 3.0 * torch.where(labels, 1.0, -1.0)[:, None] * direction / direction.norm()
    result = probe_accuracy(x, labels)
    assert result["accuracy"] >= 0.95
    assert result["control"] < 0.75  # shuffled labels: near chance


def test_probe_does_not_find_a_feature_in_noise():
    x = _features(seed=2)
    labels = torch.arange(96) % 2 == 0
    assert probe_accuracy(x, labels)["accuracy"] < 0.7


def test_linear_cka_known_answers():
    x = _features(64, 8)
    q = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(3)))[0]
    assert abs(linear_cka(x, 2.5 * x @ q) - 1.0) < 1e-9  # invariant to rotation and scale
    assert linear_cka(x, _features(64, 8, seed=9)) < 0.4  # unrelated features
    assert abs(linear_cka(x, x + 0.01) - 1.0) < 1e-9  # centred: a shift changes nothing


def test_nearest_tokens_respects_the_allowed_mask_and_passes_gradients_straight_through():
    table = torch.eye(5)
    v = torch.tensor([[0.0, 0.2, 1.0, 0.0, 0.0]], requires_grad=True)
    assert nearest_tokens(v, table).tolist() == [2]
    allowed = torch.tensor([True, True, False, True, True])
    assert nearest_tokens(v, table, allowed).tolist() == [1]
    hard, ids = project_straight_through(v, table)
    assert torch.equal(hard.detach(), table[ids])
    hard.sum().backward()
    assert torch.equal(v.grad, torch.ones_like(v))
