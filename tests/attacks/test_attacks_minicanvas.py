"""On the shipped MiniCanvas world, every attack succeeds on the unpatched base model (an attack that cannot succeed
there proves nothing). Slow: it samples the real world's pipeline."""

import pytest

import erasekit

pytestmark = pytest.mark.slow


def test_the_base_model_is_attacked_successfully_on_its_own_concept():
    from erasekit_worlds.minicanvas.plans import erasure_plan

    handle = erasekit.load_model("minicanvas", device="cpu")
    concept, anchor, extra = erasure_plan("uce", "style:Watercolor")
    patch = erasekit.erase(handle, "uce", concept, anchor=anchor, progress=False, **extra)
    configs = {
        "relearn": {"schedule": [0, 5], "k": 4, "batch_size": 2},
        "prompt": {"steps": 4, "modes": ["discrete"], "batch_size": 2},
        "inversion": {"steps": 30, "k": 4, "batch_size": 2},
        "quantize": {"formats": ["int8", "nf4"]},
    }
    report = erasekit.attack(
        handle, patch, "minicanvas", "style:Watercolor", list(configs), seeds=[0], configs=configs, progress=False
    )
    assert report.run["plain_rates"]["base"] >= 0.9
    assert report["prompt"]["asr"]["base"] >= 0.9
    assert report["inversion"]["asr"]["base"] >= 0.9
    assert report["relearn"]["final"]["base"] >= 0.9
    assert min(report["quantize"]["rates"]["base"].values()) >= 0.9
