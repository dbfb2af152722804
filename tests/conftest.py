"""Shared fixtures: tiny random components, built once per session and deep-copied per test."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Helper modules that live beside the tests using them and are imported by basename from other folders too
# (tests/eval/eval_fixtures.py: the tiny evaluation suite, also used by tests/demo/).
sys.path.insert(0, str(Path(__file__).parent / "eval"))


if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n 2: one torch thread per worker, not two workers x two
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Give every test the process's torch thread count back: benchmark ``main()``s set it process-wide (``--threads``),
    and one left at 1 would run every later test on half the machine."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# Fast settings for the shared method suite; every registered method must have an entry (see test_methods_suite).
# tests/methods/test_expected_slices.py pins the patches they give: regenerate its table when changing them.
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
    "uce": {"preserve": ["a dog"], "progress": False},
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


# ---------------------------------------------------------------------------------------------------- SDXL and SD3

# Architectures the diffusion method suite runs on -> the session fixture building its tiny pipeline
DIFFUSION_ARCHS = {"sd": "_tiny_pipe_session", "sdxl": "_tiny_sdxl_session", "sd3": "_tiny_sd3_session"}
# (method, architecture) pairs the method refuses -> words its ValueError must say
UNSUPPORTED = {("uce", "sd3"): "cross-attention"}


@pytest.fixture(scope="session")
def _tiny_sdxl_session():
    from erasekit.models.tiny import tiny_sdxl_pipeline

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return tiny_sdxl_pipeline()


@pytest.fixture(scope="session")
def _tiny_sd3_session():
    from erasekit.models.tiny import tiny_sd3_pipeline

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return tiny_sd3_pipeline()


@pytest.fixture
def tiny_sdxl_pipe(_tiny_sdxl_session):
    """A fresh copy of the tiny random SDXL pipeline (fp32, CPU)."""
    return copy.deepcopy(_tiny_sdxl_session)


@pytest.fixture
def tiny_sd3_pipe(_tiny_sd3_session):
    """A fresh copy of the tiny random SD3 pipeline (fp32, CPU)."""
    return copy.deepcopy(_tiny_sd3_session)


@pytest.fixture
def fresh_pipe(request):
    """``fresh_pipe(arch)``: a fresh copy of the tiny pipeline of an architecture of :data:`DIFFUSION_ARCHS`."""

    def make(arch: str):
        return copy.deepcopy(request.getfixturevalue(DIFFUSION_ARCHS[arch]))

    return make


class _Patches(dict):
    """(method, arch) -> patch, each made on first use (with FAST_CONFIGS, concept "a cat") on a private copy of that
    architecture's tiny pipeline; ``losses[method, arch]``: the values each step logged."""

    def __init__(self, request):
        super().__init__()
        self.pipes, self.request, self.losses = {}, request, {}

    def __missing__(self, key):
        import erasekit
        from erasekit.methods import LossHistory

        method, arch = key
        if arch not in self.pipes:
            self.pipes[arch] = copy.deepcopy(self.request.getfixturevalue(DIFFUSION_ARCHS[arch]))
        history = LossHistory()
        self[key] = erasekit.erase(self.pipes[arch], method, "a cat", callbacks=[history], **FAST_CONFIGS[method])
        self.losses[key] = history.history
        return self[key]


@pytest.fixture(scope="session")
def method_patches(request):
    """One patch per (diffusion method, architecture), made once per session (the method suite and the pinned
    slices read the same patches)."""
    return _Patches(request)


def state_of(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k].reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8)), k


# ---------------------------------------------------------------------------------------------------- StyleGAN2 / MiniFaces

FAST_CONFIGS["text_to_unlearn"] = {"steps": 2, "batch_size": 2, "adaptive_iters": 1, "progress": False}
TINY_GAN = dict(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16, mapping_layers=2)


@pytest.fixture(scope="session")
def _tiny_generator_session():
    from erasekit.models.stylegan import Generator, StyleGAN2Config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Generator(StyleGAN2Config(**TINY_GAN)).eval()


class _GanPatches(dict):
    """method -> patch (FAST_CONFIGS, concept "glasses", the tiny CLIP) on a private copy of the tiny generator;
    ``losses[method]``: the values each step logged."""

    def __init__(self, generator, clip: str):
        import erasekit
        from erasekit.methods import LossHistory, get_method, list_methods

        super().__init__()
        self.losses = {}
        for m in [m for m in list_methods() if "stylegan" in get_method(m).kinds]:
            history = LossHistory()
            self[m] = erasekit.erase(generator, m, "glasses", callbacks=[history], **{**FAST_CONFIGS[m], "clip": clip})
            self.losses[m] = history.history


@pytest.fixture(scope="session")
def gan_method_patches(request):
    """One patch per StyleGAN2 method, made once per session (the method suite and the pinned slices read them)."""
    generator = copy.deepcopy(request.getfixturevalue("_tiny_generator_session"))
    return _GanPatches(generator, str(request.getfixturevalue("tiny_clip_dir")))


@pytest.fixture
def tiny_generator(_tiny_generator_session):
    """A fresh copy of a tiny random StyleGAN2 generator (16 px, CPU)."""
    return copy.deepcopy(_tiny_generator_session)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random transformers CLIP folder (model + processor for 32 px images, the real CLIP tokenizer)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from erasekit.models.tokenizer import clip_tokenizer

    text = dict(vocab_size=49408, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    text.update(max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    vision = dict(image_size=32, patch_size=8, hidden_size=8, intermediate_size=16, num_hidden_layers=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(
            CLIPConfig(text_config=text, vision_config={**vision, "num_attention_heads": 2}, projection_dim=8)
        )
    out = tmp_path_factory.mktemp("tiny_clip") / "clip"
    model.save_pretrained(out, safe_serialization=True)
    size = {"shortest_edge": 32}
    processor = CLIPImageProcessor(size=size, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=clip_tokenizer()).save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------------- quick worlds
# Each quick world is trained once per session, when a test first asks for it; tests read it and never write into it
# (a test that needs to change a world works on a copy).


@pytest.fixture(scope="session")
def minifaces_world(tmp_path_factory):
    """A MiniFaces world from the quick recipe, trained once per session through the CLI (seconds)."""
    from erasekit.cli.main import main

    out = tmp_path_factory.mktemp("minifaces") / "world"
    assert main(["world", "train", "minifaces", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def minicanvas_world(tmp_path_factory):
    """A MiniCanvas world from the quick recipe trained without the Ink style, once per session through the CLI."""
    from erasekit.cli.main import main

    out = tmp_path_factory.mktemp("minicanvas") / "no_ink"
    argv = ["world", "train", "minicanvas", "--quick", "--exclude", "style:ink", "--out", str(out)]
    assert main([*argv, "--threads", str(min(2, torch.get_num_threads()))]) == 0
    return out


@pytest.fixture(scope="session")
def minicanvas_full_world(tmp_path_factory):
    """A MiniCanvas world from the quick recipe with every style and object, once per session (the reuse tests'
    source world)."""
    from erasekit_worlds.recipes.minicanvas.recipe import train_world

    out = tmp_path_factory.mktemp("minicanvas") / "full"
    train_world(out, quick=True)  # the device the tests' own quick worlds use (auto), so their files compare
    return out
