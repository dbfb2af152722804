"""GAN evaluation: known answers for W1 / γ, drift, rates and CLIP-space FID, and evaluate_gan on fabricated parts."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from erasekit.eval.gan import (
    GanSuite,
    _rate_metrics,
    attribute_rates,
    clip_fid,
    clip_scores,
    drift,
    evaluate_gan,
    wasserstein_1,
)
from erasekit.patch import DenseDelta, ErasurePatch


def test_wasserstein_1_known_answers():
    assert wasserstein_1([0.0], [1.0]) == pytest.approx(1.0)
    assert wasserstein_1([0.0, 1.0], [2.0, 3.0]) == pytest.approx(2.0)
    assert wasserstein_1([0.0, 2.0], [1.0]) == pytest.approx(1.0)  # both halves move 1
    assert wasserstein_1([0.0, 0.0, 3.0], [0.0, 3.0, 3.0]) == pytest.approx(1.0)  # a third of the mass moves 3
    x = torch.randn(500, generator=torch.Generator().manual_seed(0))
    assert wasserstein_1(x, x + 0.7) == pytest.approx(0.7)  # a shift moves everything by itself
    assert wasserstein_1(x, x[torch.randperm(500)]) == 0.0
    y = np.random.default_rng(1).normal(size=37) * 2
    assert wasserstein_1(x, y) == pytest.approx(wasserstein_1(y, x))
    from scipy.stats import wasserstein_distance

    assert wasserstein_1(x, y) == pytest.approx(wasserstein_distance(x.numpy(), y), rel=1e-9)
    with pytest.raises(ValueError, match="non-empty"):
        wasserstein_1([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        wasserstein_1([float("nan")], [1.0])


def test_attribute_rates_and_rate_metrics():
    flags = {"glasses": torch.tensor([True, False, True, True]), "hair_red": torch.tensor([False] * 4)}
    assert attribute_rates(flags) == {"glasses": 0.75, "hair_red": 0.0}
    suite = GanSuite(
        "s", None, ["glasses", "hat", "hair_red", "hair_black"], str, str, {"hair_red": "hair", "hair_black": "hair"}
    )
    before = {"glasses": 0.5, "hat": 0.3, "hair_red": 0.5, "hair_black": 0.5}
    after = {"glasses": 0.0, "hat": 0.32, "hair_red": 0.1, "hair_black": 0.9}

    def as_flags(rates):  # 100 samples with exactly these rates
        return {k: torch.tensor([True] * round(100 * v) + [False] * (100 - round(100 * v))) for k, v in rates.items()}

    m = _rate_metrics(suite, ["glasses"], as_flags(before), as_flags(after))
    assert m["glasses_rate_before"] == 0.5 and m["glasses_rate_after"] == 0.0
    assert m["max_other_change_points"] == pytest.approx(40.0)  # hair_black moved 40 points
    m = _rate_metrics(suite, ["hair_red"], as_flags(before), as_flags(after))
    assert set(m["other_changes_points"]) == {"glasses", "hat"}  # the other hair colours must move with red
    assert m["max_other_change_points"] == pytest.approx(50.0)


def test_drift_known_answers():
    before = torch.zeros(4, 3, 2, 2)
    after = before.clone()
    after[0] += 0.5  # changed, but had the attribute (not kept)
    after[1, :, 0, 0] = 1.0  # a quarter of the pixels change by 1: mean abs 0.25
    keep = torch.tensor([False, True, True, False])
    out = drift(before, after, keep)
    assert out == {"drift_samples": 2, "pixel_drift": pytest.approx(0.125)}

    def features(x):  # a known feature map: sample i of `before` -> e_0, changed sample 1 -> e_1
        f = torch.zeros(len(x), 2)
        f[:, 0] = 1 - x[:, 0, 0, 0]
        f[:, 1] = x[:, 0, 0, 0]
        return f

    assert drift(before, after, keep, features)["feature_drift"] == pytest.approx(0.5)  # 1 - cos: 1 and 0
    nothing = drift(before, after, torch.zeros(4, dtype=torch.bool), features)
    assert nothing["drift_samples"] == 0 and np.isnan(nothing["pixel_drift"]) and np.isnan(nothing["feature_drift"])
    with pytest.raises(ValueError, match="shape"):
        drift(before, after[:2], keep)


class ChannelMeans(nn.Module):
    num_features = 3
    name = "channel means"

    def forward(self, images):
        return images.float().mean(dim=(2, 3))


def test_clip_fid_known_answer():
    real = torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert clip_fid(real, real.clone(), ChannelMeans()) == pytest.approx(0.0, abs=1e-6)
    # a constant shift c of every feature moves only the mean: FID = |c|^2 = 3 * 0.1^2
    assert clip_fid(real, real + 0.1, ChannelMeans()) == pytest.approx(0.03, abs=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        clip_fid(real[:1], real, ChannelMeans())


class BrightnessJudge:
    """A fabricated attribute classifier: 'bright' when the mean pixel is above a threshold."""

    def __init__(self, threshold):
        self.threshold = threshold

    def indicators(self, images):
        mean = images.mean(dim=(1, 2, 3))
        return {"bright": mean > self.threshold, "dark": mean < self.threshold - 0.2}


def test_evaluate_gan_on_fabricated_parts(tiny_generator, tiny_clip_dir, tmp_path):
    from erasekit.eval.clip import clip_loader
    from erasekit.models import StyleGANHandle

    handle = StyleGANHandle(tiny_generator)
    seeds = list(range(12))
    before = handle.generate(seeds)
    threshold = float(before.mean(dim=(1, 2, 3)).median())
    suite = GanSuite(
        name="fabricated",
        classifier=BrightnessJudge(threshold),
        indicators=["bright", "dark"],
        resolve=lambda text: {"a bright face": "bright"}[text],
        prompts=lambda name: [f"a {name} face", f"a photo of a {name} face"],
        clip=clip_loader(tiny_clip_dir),
        reference_images=lambda n: torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1)),
    )
    bias = "generator.synthesis.b16.torgb.bias"
    patch = ErasurePatch({bias: DenseDelta(torch.full((3,), -50.0))})  # darker everywhere: nothing stays bright
    original = {k: v.clone() for k, v in tiny_generator.state_dict().items()}
    report = evaluate_gan(
        handle, patch, "a bright face", suite, seeds, fid=True, check_fingerprint=False, progress=False
    )
    m = report.metrics
    assert report.targets == ["bright"]
    assert m["bright_rate_before"] == pytest.approx(float((before.mean(dim=(1, 2, 3)) > threshold).float().mean()))
    assert m["bright_rate_after"] == 0.0 and m["rates_after"]["dark"] == 1.0
    assert m["max_other_change_points"] == pytest.approx(100 * (1.0 - m["rates_before"]["dark"]))
    assert m["drift_samples"] == int((before.mean(dim=(1, 2, 3)) <= threshold).sum()) and m["pixel_drift"] > 0
    model, processor = suite.clip()
    scores_before = clip_scores(before, model, processor, suite.prompts("bright"))
    scores_after = clip_scores(report.after, model, processor, suite.prompts("bright"))
    assert m["bright_gamma"] == pytest.approx(wasserstein_1(scores_before, scores_after)) and m["gamma"] > 0
    assert m["fid_after"] >= 0 and m["fid_before"] >= 0 and "fid_features" in m
    assert all(torch.equal(v, original[k]) for k, v in tiny_generator.state_dict().items())  # patch removed
    json.loads(json.dumps(report.to_dict()))  # JSON-friendly
    assert "bright (erased)" in report.to_markdown()
    assert report.save_grid(tmp_path / "grid.png").stat().st_size > 0
    with pytest.raises(ValueError, match="at least 2 seeds"):
        evaluate_gan(handle, patch, "bright", suite, [0], progress=False)
