"""Shared fixtures: tiny random components, built once per session and deep-copied per test."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Fast settings for the shared method suite; every registered method must have an entry (see test_methods_suite).
FAST_CONFIGS = {
    "esd": {"steps": 2, "ddim_steps": 3, "progress": False},
    "salun": {"steps": 2, "batch_size": 1, "num_forget": 2, "num_retain": 1, "sample_steps": 2, "progress": False},
    "doco": {
        "steps": 2,
        "batch_size": 1,
        "warmup_steps": 1,
        "num_anchor": 1,
        "sample_steps": 2,
        "disc_channels": 4,
        "progress": False,
    },
    "uce": {"steps": 1, "preserve": ["a dog"], "progress": False},
}


@pytest.fixture(scope="session")
def _tiny_pipe_session():
    from erasekit.models.tiny import tiny_sd_pipeline

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return tiny_sd_pipeline()


@pytest.fixture
def tiny_pipe(_tiny_pipe_session):
    """A fresh copy of the tiny random Stable Diffusion pipeline (fp32, CPU)."""
    return copy.deepcopy(_tiny_pipe_session)


@pytest.fixture
def tiny_handle(tiny_pipe):
    from erasekit.models import DiffusionHandle

    return DiffusionHandle(tiny_pipe)


def state_of(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k].reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8)), k
