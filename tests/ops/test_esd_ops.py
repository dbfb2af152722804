import torch

from erasekit.ops import esd_target


def test_esd_target_known_answer():
    uncond, cond = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.0])
    assert torch.equal(esd_target(uncond, cond, 1.0), torch.tensor([-1.0, -4.0]))
    assert torch.equal(esd_target(uncond, cond, 0.0), uncond)
    assert torch.equal(esd_target(uncond, cond, 2.0), torch.tensor([-3.0, -6.0]))


def test_esd_target_of_identical_predictions_is_unchanged():
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(esd_target(x, x, 1.0), x)
