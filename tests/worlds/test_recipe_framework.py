"""The recipe framework both worlds share: reuse decisions, work folders, the world folder and its manifest, setting
overrides, and the shared training pieces (augmentation, the judge-classifier loop, the CLIP loop).

Reuse is decided on small hand-made world folders of a toy recipe, so these tests train nothing but a few tiny steps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from erasekit_worlds.common import verify_world
from erasekit_worlds.recipes import classifier, clip
from erasekit_worlds.recipes.framework import (
    Stage,
    StageCache,
    WorldBuild,
    WorldRecipe,
    apply_overrides,
    check_seed,
    describe,
    reusable_stages,
    write_world,
)
from erasekit_worlds.recipes.training import _shift, augment, generator

LAYOUT = ("judge.txt", "encoder", "decoder.txt")
STAGES = (
    Stage("judge", files=("judge.txt",), excludable=False),
    Stage("encoder", files=("encoder",), tail="encoder_tune", tail_metrics=("encoder_before_tune",)),
    Stage("decoder", files=("decoder.txt",), entries=("codes", "decoder"), inputs=("encoder",)),
)
TOY = WorldRecipe(
    world="toy",
    title="Toy",
    version="toy-v2",
    stages=STAGES,
    data=("images",),
    verify=lambda root: verify_world(root, LAYOUT),
    same_version=True,
)


class Config:
    """A toy recipe config: what the framework reads of one (``quick`` and ``to_dict``)."""

    def __init__(self, **changes):
        self.sections = {
            "images": 10,
            "judge": {"steps": 2},
            "encoder": {"steps": 2},
            "encoder_tune": {"steps": 1},
            "decoder": {"steps": 2},
        }
        self.sections.update(changes)
        self.quick = True

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self.sections))


def run_of(cfg: Config, seed: int = 0, exclude=()) -> dict:
    return {"seed": seed, "quick": cfg.quick, "config": cfg.to_dict(), "exclude": list(exclude)}


def toy_world(out: Path, cfg: Config | None = None, exclude=(), reused=None, work=None, calls=None) -> dict:
    """Write a toy world folder through the framework: each stage writes a file holding its config section."""
    cfg, calls = cfg or Config(), calls if calls is not None else []

    def train(build: WorldBuild) -> dict:
        def writer(name: str, path: str, stats: dict):
            def write() -> dict:
                calls.append(name)
                (build.tmp / path).parent.mkdir(parents=True, exist_ok=True)
                (build.tmp / path).write_text(json.dumps(cfg.sections[name]))
                return stats

            return write

        build.run(STAGES[0], writer("judge", "judge.txt", {"seconds": 1.0}))
        build.run(STAGES[1], writer("encoder", "encoder/weights.txt", {"seconds": 2.0}))
        if cfg.sections["encoder_tune"]["steps"] and not build.tail_copied("encoder"):
            build.metrics["encoder_before_tune"] = {"accuracy": 0.5}
            build.run(Stage("encoder_tune", files=("encoder",)), writer("encoder_tune", "encoder/tuned.txt", {}))
        stats = {"codes": {"seconds": 0.5}, "decoder": {"seconds": 3.0}}
        build.run(STAGES[2], writer("decoder", "decoder.txt", stats))
        return describe(build, cfg, 0, list(exclude), torch.device("cpu"), {"classes": 3}, {"steps": 2})

    return write_world(TOY, out, train, reused=reused, work=work, identity={"seed": 0})


# ---------------------------------------------------------------------------------------------------- reuse


def test_a_toy_world_folder_has_a_manifest_that_verifies(tmp_path):
    manifest = toy_world(tmp_path / "w")
    assert verify_world(tmp_path / "w", LAYOUT) == []
    assert manifest["world"] == "toy" and manifest["recipe"] == "toy-v2" and manifest["reused"] == []
    assert list(manifest["stages"]) == ["judge", "encoder", "encoder_tune", "codes", "decoder"]
    assert manifest["full_recipe_seconds"] == manifest["total_seconds"]
    assert set(manifest["files"]) == {"judge.txt", "encoder/weights.txt", "encoder/tuned.txt", "decoder.txt"}
    assert manifest["total_bytes"] == sum(f["bytes"] for f in manifest["files"].values())
    assert set(manifest["versions"]) == {"python", "torch", "transformers", "erasekit"}
    assert json.loads((tmp_path / "w" / "manifest.json").read_text()) == manifest


def test_reuse_copies_every_stage_of_a_matching_world_and_records_where_from(tmp_path):
    toy_world(tmp_path / "old")
    reused = reusable_stages(TOY, tmp_path / "old", run_of(Config()))
    assert list(reused) == ["judge", "encoder", "decoder"] and reused["encoder"]["tail_done"] is True
    assert reused["encoder"]["metrics"] == {"encoder_before_tune": {"accuracy": 0.5}}
    calls = []
    manifest = toy_world(tmp_path / "new", reused=reused, calls=calls)
    assert calls == [] and manifest["reused"] == ["judge", "encoder", "encoder_tune", "codes", "decoder"]
    old = json.loads((tmp_path / "old" / "manifest.json").read_text())
    assert manifest["files"] == old["files"] and manifest["full_recipe_seconds"] > manifest["total_seconds"]
    assert manifest["stages"]["decoder"]["reused_from"] == str(tmp_path / "old")
    assert manifest["stages"]["decoder"]["trained_created"] == old["created"]
    assert list(manifest["metrics"]) == ["encoder_before_tune"]


@pytest.mark.parametrize(
    "cfg, seed, exclude, expected",
    [
        (Config(), 1, (), []),  # another seed: nothing
        (Config(images=20), 0, (), []),  # other data: nothing
        (Config(), 0, ("x",), ["judge"]),  # other exclusions: only the judge, which sees everything
        (Config(decoder={"steps": 3}), 0, (), ["judge", "encoder"]),
        (Config(encoder={"steps": 3}), 0, (), ["judge"]),  # the decoder reads the encoder: not without it
        (Config(encoder_tune={"steps": 5}), 0, (), ["judge"]),  # a differently tuned encoder cannot be untuned
    ],
)
def test_reuse_copies_only_what_matches(tmp_path, cfg, seed, exclude, expected):
    toy_world(tmp_path / "old")
    assert list(reusable_stages(TOY, tmp_path / "old", run_of(cfg, seed, exclude))) == expected


def test_an_untuned_stage_is_copied_and_tuned_here(tmp_path):
    toy_world(tmp_path / "old", Config(encoder_tune={"steps": 0}))
    reused = reusable_stages(TOY, tmp_path / "old", run_of(Config()))
    assert reused["encoder"]["tail_done"] is False and set(reused["encoder"]["stats"]) == {"encoder"}
    calls = []
    manifest = toy_world(tmp_path / "new", reused=reused, calls=calls)
    assert calls == ["encoder_tune"] and manifest["reused"] == ["judge", "encoder", "codes", "decoder"]
    assert "reused_from" not in manifest["stages"]["encoder_tune"]


def test_reuse_refuses_broken_foreign_and_other_version_folders(tmp_path):
    toy_world(tmp_path / "old")
    (tmp_path / "old" / "judge.txt").write_text("changed")
    with pytest.raises(ValueError, match="--reuse .*: not an intact Toy world folder .size differs: judge.txt"):
        reusable_stages(TOY, tmp_path / "old", run_of(Config()))
    toy_world(tmp_path / "other")
    manifest = json.loads((tmp_path / "other" / "manifest.json").read_text())
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({**manifest, "world": "minicanvas"}))
    with pytest.raises(ValueError, match="a 'minicanvas' world folder, not a Toy one"):
        reusable_stages(TOY, tmp_path / "other", run_of(Config()))
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({**manifest, "recipe": "toy-v1"}))
    assert reusable_stages(TOY, tmp_path / "other", run_of(Config())) == {}


def test_work_folder_resumes_finished_stages_and_refuses_other_settings(tmp_path):
    work, calls = tmp_path / "work", []
    first = toy_world(tmp_path / "a", work=work, calls=calls)
    assert calls == ["judge", "encoder", "encoder_tune", "decoder"]
    assert sorted(p.name for p in work.iterdir()) == ["decoder", "encoder", "encoder_tune", "judge"]
    calls.clear()
    again = toy_world(tmp_path / "b", work=work, calls=calls)
    assert calls == [] and again["files"] == first["files"]
    assert again["stages"]["codes"]["resumed_from"] == str(work / "decoder")
    with pytest.raises(ValueError, match="holds a judge stage trained with other settings"):
        write_world(TOY, tmp_path / "c", lambda build: build.run(STAGES[0], dict, {"seed": 1}), work=work)
    assert not (tmp_path / "c").exists()


def test_stage_cache_restores_into_a_folder_replacing_an_earlier_version(tmp_path):
    cache, source, into = StageCache(tmp_path / "work"), tmp_path / "src", tmp_path / "into"
    (source / "clip").mkdir(parents=True)
    (source / "clip" / "new.txt").write_text("tuned")
    cache.store("clip_tune", {"a": (1, 2)}, source, ["clip"], {"seconds": 1.0})
    (into / "clip").mkdir(parents=True)
    (into / "clip" / "old.txt").write_text("untuned")
    assert cache.restore("clip_tune", {"a": [1, 2]}, into, ["clip"]) == {"seconds": 1.0}  # as read back from JSON
    assert [p.name for p in (into / "clip").iterdir()] == ["new.txt"]
    assert cache.restore("gan", {}, into, ["x"]) is None


def test_seed_must_be_a_non_negative_integer():
    assert check_seed(3) == 3
    for bad in (-1, 1.0, True, "0"):
        with pytest.raises(ValueError, match="non-negative integer"):
            check_seed(bad)


def test_recipe_overrides_are_typed_and_name_what_exists():
    from erasekit_worlds.recipes.minifaces.recipe import RecipeConfig

    base = RecipeConfig()
    cfg = apply_overrides(base, ["gan.lr=3e-3", "gan.pair_weight=1", "gan.pixel_loss=mse", "check_samples=500"])
    assert (cfg.gan.lr, cfg.gan.pair_weight, cfg.gan.pixel_loss, cfg.check_samples) == (0.003, 1.0, "mse", 500)
    assert isinstance(cfg.gan.pair_weight, float) and base.gan.lr is None and base.check_samples == 2000
    assert apply_overrides(cfg, ["gan.lr=null"]).gan.lr is None
    for bad, message in [
        ("gan.lrr=1", "gan has no setting 'lrr'; it has z_dim"),
        ("gann.lr=1", "no section 'gann'; sections: classifier, clip, clip_tune, gan"),
        ("gan.lr=fast", "lr must be float or None, got 'fast' (str)"),
        ("gan.steps=true", "steps must be int, got True (bool)"),
        ("gan.steps=2.5", "steps must be int, got 2.5 (float)"),
        ("gan.pair_weight=-1", "pair_weight must be >= 0"),
        ("gan", "expected NAME=VALUE"),
        ("gan=1", "the recipe has no setting 'gan'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            apply_overrides(base, [bad])


# ---------------------------------------------------------------------------------------------------- training


def test_shift_moves_pixels_and_augment_is_seeded():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out = _shift(x, torch.tensor([[1, 2], [0, 0]]))
    assert torch.equal(out[0, :, 1:, 2:], x[0, :, :-1, :-2]) and torch.equal(out[1], x[1])
    images = torch.rand(4, 3, 16, 16)
    kw = dict(blur_prob=0.5, noise_prob=0.5)
    a = augment(images, generator(torch.device("cpu"), "t", 0), **kw)
    b = augment(images, generator(torch.device("cpu"), "t", 0), **kw)
    assert torch.equal(a, b) and a.shape == images.shape and 0 <= a.min() and a.max() <= 1


class Bank:
    """A tiny image bank: what the shared loops read."""

    def __init__(self, n: int = 12):
        self.images = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        self.labels = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.images)

    def floats(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index]


def _tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 6 * 6, 3))


def test_the_shared_classifier_loop_is_seeded_end_to_end_with_a_seeded_dropout():
    cfg = classifier.ClassifierTrainConfig(steps=3, batch_size=4, warmup=1)
    bank, cpu, runs = Bank(), torch.device("cpu"), []
    for _ in range(2):
        model = _tiny_classifier()
        torch.manual_seed(len(runs))  # the global RNG differs between the runs: the dropout seed must decide
        loss = nn.functional.cross_entropy
        stats = classifier.train_classifier(model, bank, bank.labels, loss, cfg, ("d", 0), cpu, "t", ("drop", 0))
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    params = sum(p.numel() for p in model.parameters())
    assert stats == {"seconds": stats["seconds"], "steps": 3, "batch_size": 4, "params": params} and not model.training
    assert 0 <= classifier.accuracy(model, bank.images, bank.labels) <= 1


def test_the_shared_clip_loop_trains_what_the_batch_loss_asks_and_stops_on_nan():
    from erasekit_worlds.recipes.minifaces.recipe import quick_config

    model = clip.build_clip(quick_config().clip, 0).train()
    images = torch.rand(4, 3, 64, 64)
    ids = torch.full((4, 8), clip.SPECIAL_TOKENS[1])
    ids[:, 0], ids[:, 1] = clip.SPECIAL_TOKENS[0], torch.arange(400, 404)

    def batch_loss(step, gen):
        logits = clip.logit_scale(model) * clip.image_embeds(model, images) @ clip.text_embeds(model, ids).T
        return clip.multi_positive_nce(logits, torch.eye(4, dtype=torch.bool)), 4

    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = clip.fit_clip(model, batch_loss, 2, 1e-3, 0.1, 1, ("c", 0), torch.device("cpu"))
    assert stats["steps"] == 2 and stats["batch_size"] == 4
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(FloatingPointError, match="clip tune: the loss became nan at step 0"):
        clip.fit_clip(
            model,
            lambda s, g: (torch.tensor(float("nan"), requires_grad=True), 4),
            1,
            1e-3,
            0.1,
            1,
            ("c",),
            torch.device("cpu"),
            name="clip tune",
        )
