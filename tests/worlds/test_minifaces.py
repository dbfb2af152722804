"""MiniFaces: rendering, attributes, captions, the classifier file format, the quick recipe and the CLI end to end.

The quick world (``minifaces_world`` in conftest.py) is trained once per session through the CLI; its models are
untrained, so these tests check mechanics, not quality (that is the recipe's manifest and the benchmark's job).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil

import numpy as np
import pytest
import torch

from erasekit_worlds.minifaces import (
    ATTRIBUTES,
    BINARY_ATTRIBUTES,
    HAIR_COLOURS,
    HELDOUT_OFFSET,
    HELDOUT_TEMPLATES,
    INDICATORS,
    PROBABILITIES,
    TRAIN_TEMPLATES,
    AttributeClassifier,
    AttributeClassifierConfig,
    MiniFacesDataset,
    decode,
    describe,
    encode,
    load_attribute_classifier,
    preview_grid,
    render,
    render_bank,
    render_with,
    resolve_indicator,
    sample_attributes,
    verify_manifest,
)
from erasekit_worlds.minifaces.data import PHRASES, check_attributes, consistent

# ---------------------------------------------------------------------------------------------------- data


def test_render_is_deterministic_from_index_and_seed():
    image, attrs = render(7)
    again, attrs_again = render(7, seed=0)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and set(attrs) == set(ATTRIBUTES)
    assert np.array_equal(image, again) and attrs == attrs_again
    assert not np.array_equal(image, render(7, seed=1)[0]) and not np.array_equal(image, render(8)[0])
    with pytest.raises(ValueError, match="non-negative"):
        render(-1)


def test_attributes_are_independent_with_the_promised_frequencies():
    n = 3000  # attribute draws only (no drawing): independence is a property of the sampler
    labels = np.stack([encode(sample_attributes(i)) for i in range(n)])
    flags = {a: labels[:, k] == 1 for k, a in enumerate(BINARY_ATTRIBUTES)}
    flags.update({f"hair_{c}": labels[:, -1] == k for k, c in enumerate(HAIR_COLOURS)})
    for name, f in flags.items():
        assert 0.2 <= f.mean() <= 0.6, name
        expected = PROBABILITIES.get(name, 1 / len(HAIR_COLOURS))
        assert abs(f.mean() - expected) < 0.035, name
    for a, b in itertools.combinations(BINARY_ATTRIBUTES, 2):
        joint, product = (flags[a] & flags[b]).mean(), flags[a].mean() * flags[b].mean()
        assert abs(joint - product) < 0.03, (a, b)
    for a, c in itertools.product(BINARY_ATTRIBUTES, HAIR_COLOURS):
        assert abs((flags[a] & flags[f"hair_{c}"]).mean() - flags[a].mean() * flags[f"hair_{c}"].mean()) < 0.03


def test_render_bank_labels_match_the_renders_and_splits_are_disjoint():
    bank = render_bank(40, 0, "train", "test")
    assert bank.images.shape == (40, 3, 64, 64) and bank.images.dtype == torch.uint8
    for i in (0, 13, 39):
        image, attrs = render(i)
        assert np.array_equal(bank.images[i].permute(1, 2, 0).numpy(), image)
        assert decode(bank.labels[i]) == attrs
    held = render_bank(5, 0, "heldout", "test")
    assert np.array_equal(held.images[0].permute(1, 2, 0).numpy(), render(HELDOUT_OFFSET)[0])
    freqs = bank.frequencies()
    assert set(freqs) == set(INDICATORS)
    glasses = bank.without(["glasses"])
    assert len(glasses) == len(bank) - int(bank.labels[:, 0].sum()) and not glasses.labels[:, 0].any()


def test_changing_one_attribute_redraws_the_same_face():
    attrs = {**{a: False for a in BINARY_ATTRIBUTES}, "hair": "brown"}
    plain = render_with(attrs, 3).astype(int)
    for a in BINARY_ATTRIBUTES:
        edited = render_with({**attrs, a: True}, 3).astype(int)
        changed = (np.abs(edited - plain).sum(-1) > 30).mean()
        assert 0.003 < changed < 0.2, (a, changed)  # visible, yet most of the face is untouched
    red = render_with({**attrs, "hair": "red"}, 3).astype(int)
    assert (np.abs(red - plain).sum(-1) > 30).mean() > 0.02


def test_attribute_encoding_and_validation():
    attrs = sample_attributes(5)
    assert decode(encode(attrs)) == attrs
    with pytest.raises(ValueError, match="exactly the keys"):
        check_attributes({"glasses": True})
    with pytest.raises(ValueError, match="hair"):
        check_attributes({**attrs, "hair": "green"})
    with pytest.raises(ValueError, match="True or False"):
        check_attributes({**attrs, "hat": "yes"})


def test_captions_tell_the_truth_and_heldout_templates_are_new():
    rng = np.random.default_rng(0)
    labels, claims = [], []
    for i in range(200):
        attrs = sample_attributes(i)
        text, claim = describe(attrs, rng)
        labels.append(encode(attrs))
        claims.append(claim)
        for k, a in enumerate(BINARY_ATTRIBUTES):
            if claim[k] == -1:
                assert PHRASES[a][1] in text and not attrs[a]
            if claim[k] == 1:
                assert (PHRASES[a][0] in text or a == "smile" and "smiling" in text) and attrs[a]
        if claim[-1] >= 0:
            assert f"{HAIR_COLOURS[claim[-1]]} hair" in text
    match = consistent(torch.tensor(np.stack(labels)), torch.tensor(np.stack(claims)))
    assert match.diagonal().all() and not match.all()  # every caption holds for its face, not for every face
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES) and len(HELDOUT_TEMPLATES) >= 3
    item = MiniFacesDataset(size=4, split="heldout", templates="heldout")[1]
    assert item["index"] == HELDOUT_OFFSET + 1 and item["pixel_values"].shape == (3, 64, 64)
    assert any(item["caption"].startswith(t.split("{}")[0]) for t in HELDOUT_TEMPLATES)
    with pytest.raises(ValueError, match="split"):
        MiniFacesDataset(split="test")


def test_resolve_indicator():
    assert resolve_indicator("glasses") == "glasses"
    assert resolve_indicator("a smiling face") == "smile"
    assert resolve_indicator("Blond hair") == "hair_blond"
    assert resolve_indicator("a beard") == "beard"
    with pytest.raises(ValueError, match="names no"):
        resolve_indicator("a banana")
    with pytest.raises(ValueError, match="several"):
        resolve_indicator("glasses and a hat")


def test_preview_grid(tmp_path):
    path = preview_grid(tmp_path / "faces.png", count=6, columns=3, zoom=1)
    from PIL import Image

    assert Image.open(path).size == (3 * 66, 2 * 78)


# ---------------------------------------------------------------------------------------------------- classifier


def test_classifier_save_load_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    model = AttributeClassifier(AttributeClassifierConfig(width=4)).eval()
    images = torch.rand(3, 3, 64, 64)
    path = model.save(tmp_path / "clf.safetensors")
    loaded = load_attribute_classifier(path)
    torch.testing.assert_close(loaded(images), model(images), atol=2e-2, rtol=2e-2)  # stored in fp16
    assert loaded.predict(images).shape == (3, 7) and set(loaded.indicators(images)) == set(INDICATORS)
    with pytest.raises(ValueError, match="end in .safetensors"):
        model.save(tmp_path / "clf.pt")
    with pytest.raises(ValueError, match="no attribute classifier"):
        load_attribute_classifier(tmp_path / "missing.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated"):
        load_attribute_classifier(truncated)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an erasekit attribute classifier"):
        load_attribute_classifier(tmp_path / "other.safetensors")


def test_discriminator_shapes_and_batch_check():
    from erasekit_worlds.recipes.minifaces.discriminator import Discriminator, DiscriminatorConfig

    D = Discriminator(DiscriminatorConfig(resolution=16, channel_base=64, channel_max=8, mbstd_group=2))
    assert D(torch.rand(4, 3, 16, 16) * 2 - 1).shape == (4,)
    with pytest.raises(ValueError, match="divisible"):
        D(torch.rand(3, 3, 16, 16))
    with pytest.raises(ValueError, match="power of 2"):
        DiscriminatorConfig(resolution=48)


def test_a_face_is_a_function_of_its_uniforms():
    from erasekit_worlds.common import stable_seed
    from erasekit_worlds.minifaces.data import attributes_from_uniforms, render_uniforms

    for i in (0, 11):
        attr_u = np.random.default_rng(stable_seed("minifaces-attributes", i, 0)).random(7)
        look_u = np.random.default_rng(stable_seed("minifaces-look", i, 0)).random(32)
        image, attrs = render_uniforms(np.concatenate([attr_u, look_u]))
        reference, reference_attrs = render(i)
        assert attrs == reference_attrs and np.array_equal(image, reference)
    u = np.full(7, 0.01)  # every binary attribute present, hair the first colour
    assert attributes_from_uniforms(u) == {**{a: True for a in BINARY_ATTRIBUTES}, "hair": HAIR_COLOURS[0]}
    cut = attributes_from_uniforms(u, excluded=["glasses", f"hair_{HAIR_COLOURS[0]}"])
    assert cut["glasses"] is False and cut["smile"] is True and cut["hair"] == HAIR_COLOURS[1]
    with pytest.raises(ValueError, match="unknown indicators"):
        attributes_from_uniforms(u, excluded=["wings"])
    with pytest.raises(ValueError, match="39 numbers"):
        render_uniforms(np.zeros(38))
    with pytest.raises(ValueError, match="32 numbers"):
        render_uniforms(np.concatenate([np.full(7, 0.5), np.full(32, 1.5)]))
    with pytest.raises(ValueError, match="7 numbers"):
        attributes_from_uniforms(np.full(7, 1.0))


def test_render_objective_draws_the_data_distribution_and_fits_the_renderer():
    from dataclasses import replace

    from erasekit_worlds.minifaces.data import indicators
    from erasekit_worlds.recipes.minifaces.gan_config import GanTrainConfig
    from erasekit_worlds.recipes.minifaces.recipe import quick_config
    from erasekit_worlds.recipes.minifaces.render_objective import latent_uniforms, render_latents, render_loss
    from erasekit_worlds.recipes.minifaces.train_gan import train_gan

    # the latents' faces have the data's attribute frequencies; excluded indicators never appear
    z = torch.randn(4000, 64, generator=torch.Generator().manual_seed(0))
    u = latent_uniforms(z)
    assert u.shape == (4000, 39) and 0 <= u.min() and u.max() < 1
    for k, a in enumerate(BINARY_ATTRIBUTES):
        assert abs(float((u[:, k] < PROBABILITIES[a]).double().mean()) - PROBABILITIES[a]) < 0.03, a
    images, labels = render_latents(z[:12], excluded=["glasses", "hair_red"])
    flags = indicators(labels)
    assert images.shape == (12, 3, 64, 64) and -1 <= images.min() and images.max() <= 1
    assert not flags["glasses"].any() and not flags["hair_red"].any() and flags["smile"].any()
    # a few steps on a tiny generator pull its samples towards the renderer's faces of the same latents
    cfg = replace(quick_config().gan, objective="render", steps=40, batch_size=8, edge_weight=0.5)
    probe = torch.randn(8, cfg.z_dim, generator=torch.Generator().manual_seed(1))
    target, _ = render_latents(probe)

    def loss_of(G):
        with torch.no_grad():
            return float(render_loss(G.synthesis(G.mapping(probe), noise_mode="const"), target, 0.5))

    untrained, _ = train_gan(None, replace(cfg, steps=0), seed=0, device=torch.device("cpu"))
    trained, stats = train_gan(None, cfg, seed=0, device=torch.device("cpu"))
    assert stats["objective"] == "render" and stats["steps"] == 40 and "discriminator_params" not in stats
    assert loss_of(trained) < 0.7 * loss_of(untrained)
    # under bfloat16 autocast the same steps learn as much (fp32 weights, losses and samples)
    half, _ = train_gan(None, replace(cfg, precision="bfloat16"), seed=0, device=torch.device("cpu"))
    assert half.synthesis.b4.const.dtype == torch.float32 and loss_of(half) < 0.7 * loss_of(untrained)
    with pytest.raises(ValueError, match="precision must be one of"):
        GanTrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="for the render objective"):
        GanTrainConfig(objective="adversarial", precision="bfloat16")
    # the attribute term trains a teacher classifier of its own on the faces it is given, then uses it
    with pytest.raises(ValueError, match="pass a bank"):
        train_gan(None, replace(cfg, attribute_weight=1.0), seed=0, device=torch.device("cpu"))
    bank = render_bank(32, 0, "train", "test")
    taught_cfg = replace(cfg, steps=2, attribute_weight=1.0, teacher_steps=3)
    _, taught = train_gan(bank, taught_cfg, seed=0, device=torch.device("cpu"))
    assert taught["teacher"]["steps"] == 3
    with pytest.raises(ValueError, match="objective must be one of"):
        GanTrainConfig(objective="diffusion")
    with pytest.raises(ValueError, match="pixel_loss must be one of"):
        GanTrainConfig(pixel_loss="l2")
    assert render_loss(target, target, 1.0, "mse") == 0 and render_loss(target * 0, target, 0.0, "mse") > 0
    with pytest.raises(ValueError, match="reads 39 latent dimensions"):
        GanTrainConfig(objective="render", z_dim=16)
    assert GanTrainConfig(objective="adversarial").resolved() == (0.0025, (0.0, 0.99), 0.01)


def test_flipped_pairs_change_one_attribute_and_the_pair_loss_reads_only_its_region():
    from erasekit.models.stylegan import _normalize_2nd_moment
    from erasekit_worlds.recipes.minifaces.render_objective import (
        flipped_latents,
        latent_uniforms,
        pair_loss,
        render_latents,
    )

    gen = torch.Generator().manual_seed(0)
    x = _normalize_2nd_moment(torch.randn(64, 64, generator=gen))
    y = flipped_latents(x, gen, excluded=["glasses"])
    moved = (latent_uniforms(x) - latent_uniforms(y)).abs() > 1e-6
    assert (moved.sum(dim=1) == 1).all()  # one uniform moves: the renderer sees nothing else change
    assert not moved[:, 0].any() and moved[:, 1:6].any(dim=0).all()  # never the excluded one; every other one
    assert torch.allclose(y.square().mean(dim=1), torch.ones(64), atol=1e-5)
    (a, la), (b, lb) = render_latents(x[:16]), render_latents(y[:16])
    assert ((la != lb).sum(dim=1) == 1).all()  # ... and that flips exactly one label
    real = torch.cat([a, b])
    assert pair_loss(real, real) == 0 and pair_loss(torch.zeros_like(real), real) > 0
    # pixels the flip leaves alone do not count: a generator wrong only there scores 0
    changed = ((a - b).abs().amax(dim=1, keepdim=True) > 1 / 64).float()
    outside = 1 - torch.nn.functional.max_pool2d(changed, 3, stride=1, padding=1)
    off = real + torch.cat([outside, torch.zeros_like(outside)]) * 0.5
    assert float(pair_loss(off, real)) == 0
    with pytest.raises(ValueError, match="nothing to flip"):
        flipped_latents(x, gen, excluded=list(BINARY_ATTRIBUTES))
    with pytest.raises(ValueError, match="batch_size must be even"):
        from erasekit_worlds.recipes.minifaces.gan_config import GanTrainConfig

        GanTrainConfig(objective="render", pair_weight=1.0, batch_size=7)


def test_flip_weights_choose_which_attribute_a_pair_flips_and_the_pair_distance_may_be_squared():
    from erasekit.models.stylegan import _normalize_2nd_moment
    from erasekit_worlds.recipes.framework import apply_overrides
    from erasekit_worlds.recipes.minifaces.gan_config import GanTrainConfig
    from erasekit_worlds.recipes.minifaces.recipe import quick_config
    from erasekit_worlds.recipes.minifaces.render_objective import flipped_latents, latent_uniforms, pair_loss

    gen = torch.Generator().manual_seed(0)
    x = _normalize_2nd_moment(torch.randn(2000, 64, generator=gen))

    def flipped_share(weights):
        moved = (latent_uniforms(x) - latent_uniforms(flipped_latents(x, gen, (), weights))).abs() > 1e-6
        return moved[:, : len(BINARY_ATTRIBUTES)].float().mean(dim=0)

    share = flipped_share({"earrings": 5})  # 5 of 10 parts, the other five attributes 1 each
    earrings = BINARY_ATTRIBUTES.index("earrings")
    assert abs(float(share[earrings]) - 0.5) < 0.05
    assert all(abs(float(s) - 0.1) < 0.03 for i, s in enumerate(share) if i != earrings)
    only = flipped_share({a: 0 for a in BINARY_ATTRIBUTES if a != "hat"})
    assert float(only[BINARY_ATTRIBUTES.index("hat")]) == 1.0
    with pytest.raises(ValueError, match="leave no attribute to flip"):
        flipped_latents(x, gen, (), {a: 0 for a in BINARY_ATTRIBUTES})
    with pytest.raises(ValueError, match="unknown attribute"):
        GanTrainConfig(flip_weights={"earings": 2})
    with pytest.raises(ValueError, match="numbers >= 0"):
        GanTrainConfig(flip_weights={"earrings": -1})
    with pytest.raises(ValueError, match="pair_distance must be one of"):
        GanTrainConfig(pair_distance="l2")
    # as the CLI's --set reads them (YAML), checked by the config
    cfg = apply_overrides(quick_config(), ["gan.flip_weights={earrings: 4, hat: 2}", "gan.pair_distance=mse"])
    assert cfg.gan.flip_weights == {"earrings": 4.0, "hat": 2.0} and cfg.gan.pair_distance == "mse"
    with pytest.raises(ValueError, match="maps attribute names to weights"):
        apply_overrides(quick_config(), ["gan.flip_weights=4"])
    # squared: a difference off by 0.5 everywhere in the region costs 0.25 (L1: 0.5)
    real = torch.cat([torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)])
    fake = torch.cat([torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)])
    assert float(pair_loss(fake, real, "mse")) == pytest.approx(0.25)
    assert float(pair_loss(fake, real, "l1")) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="kind must be one of"):
        pair_loss(fake, real, "huber")


def test_the_region_loss_sees_the_level_of_a_flip_that_the_pair_loss_leaves_free():
    from erasekit.models.stylegan import _normalize_2nd_moment
    from erasekit_worlds.recipes.minifaces.gan_config import GanTrainConfig
    from erasekit_worlds.recipes.minifaces.render_objective import (
        flip_region,
        flipped_latents,
        pair_loss,
        region_loss,
        render_latents,
    )

    gen = torch.Generator().manual_seed(1)
    x = _normalize_2nd_moment(torch.randn(8, 64, generator=gen))
    real = torch.cat([render_latents(x)[0], render_latents(flipped_latents(x, gen))[0]])
    region = flip_region(real[:8] - real[8:]).repeat(2, 1, 1, 1)
    # both faces of each pair 0.5 off over the flip's region (a half-drawn earring on both): the right difference
    both = real + 0.5 * region
    assert float(pair_loss(both, real, "mse")) == pytest.approx(0.0, abs=1e-6)
    assert float(region_loss(both, real, "mse")) == pytest.approx(0.25)
    assert float(region_loss(both, real, "l1")) == pytest.approx(0.5)
    # wrong only outside the region: not its business
    assert float(region_loss(real + 0.5 * (1 - region), real, "l1")) == 0
    assert float(region_loss(real, real)) == 0
    with pytest.raises(ValueError, match="kind must be one of"):
        region_loss(both, real, "huber")
    with pytest.raises(ValueError, match="region_weight must be >= 0"):
        GanTrainConfig(region_weight=-1)
    with pytest.raises(ValueError, match="needs pair_weight > 0"):
        GanTrainConfig(region_weight=1, pair_weight=0)


@pytest.mark.parametrize("objective", ["render", "adversarial"])
def test_gan_training_resumes_from_a_checkpoint_with_the_same_weights(objective, tmp_path):
    from dataclasses import replace

    from erasekit_worlds.recipes.minifaces.recipe import quick_config

    cfg = replace(quick_config().gan, objective=objective, steps=5, batch_size=4, pair_weight=0.5, region_weight=0.5)
    bank = render_bank(16, 0, "train", "test")
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-exact comparisons: one thread, whatever else shares the machine
    try:
        _resume_and_compare(bank, cfg, cpu, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _resume_and_compare(bank, cfg, cpu, tmp_path):
    from dataclasses import replace

    from erasekit_worlds.recipes.minifaces.gan_checkpoint import checkpoint_generator
    from erasekit_worlds.recipes.minifaces.train_gan import train_gan

    straight, _ = train_gan(bank, cfg, seed=0, device=cpu)

    class Stop(Exception):
        pass

    at_crash = {}

    def crash(done, G):
        if done == 4:
            at_crash.update({k: v.clone() for k, v in G.state_dict().items()})
            raise Stop

    ckpt = tmp_path / "gan.safetensors"
    with pytest.raises(Stop):
        train_gan(bank, cfg, seed=0, device=cpu, on_step=crash, checkpoint=ckpt, checkpoint_every=2)
    assert ckpt.exists()
    # probes read the EMA generator a checkpoint holds, and its record
    saved, record = checkpoint_generator(ckpt)
    assert record["steps_done"] == 4 and record["config"]["steps"] == cfg.steps and not saved.training
    for k, v in saved.state_dict().items():
        assert torch.equal(v, at_crash[k]), k
    resumed, stats = train_gan(bank, cfg, seed=0, device=cpu, checkpoint=ckpt, checkpoint_every=2)
    assert stats["resumed_at_steps"] == 4
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    with pytest.raises(ValueError, match=r"other settings \(config fields \['steps'\]"):
        train_gan(bank, replace(cfg, steps=6), seed=0, device=cpu, checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"other settings \(seed differs\)"):
        train_gan(bank, cfg, seed=1, device=cpu, checkpoint=ckpt)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable MiniFaces GAN checkpoint"):
        train_gan(bank, cfg, seed=0, device=cpu, checkpoint=ckpt)
    with pytest.raises(ValueError, match="not a readable MiniFaces GAN checkpoint"):
        checkpoint_generator(ckpt)


def test_clip_tune_scores_statements_freezes_the_text_side_on_request_and_skips_excluded_attributes():
    from dataclasses import replace

    from erasekit.models.tokenizer import clip_tokenizer
    from erasekit_worlds.recipes.clip import build_clip
    from erasekit_worlds.recipes.minifaces.recipe import quick_config
    from erasekit_worlds.recipes.minifaces.train_clip import (
        _statement_prototypes,
        statement_loss,
        tune_face_clip,
    )

    cfg = quick_config()
    tokenizer, cpu = clip_tokenizer(), torch.device("cpu")
    model = build_clip(cfg.clip, 0).eval()
    with torch.no_grad():
        pairs, hair, colours = _statement_prototypes(model, tokenizer, excluded=["earrings", "hair_red"])
    assert sorted(pairs) == [0, 1, 2, 3, 5] and hair.shape[0] == 3 and colours == [0, 1, 2]
    # the statement loss is a cross-entropy per attribute: features on the right prototypes score lower
    labels = torch.tensor([[1, 0, 1, 0, 0, 1, 2], [0, 1, 0, 1, 0, 0, 0]])
    right = torch.nn.functional.normalize(
        torch.stack([sum(pairs[k][1 - int(row[k])] for k in pairs) + hair[int(row[-1])] for row in labels]), dim=-1
    )
    scale = torch.tensor(20.0)
    assert statement_loss(right, labels, pairs, hair, colours, scale) < statement_loss(
        -right, labels, pairs, hair, colours, scale
    )
    bank = render_bank(32, 0, "train", "test").without(["earrings", "hair_red"])
    text_before = {k: v.clone() for k, v in model.text_model.state_dict().items()}
    vision_before = {k: v.clone() for k, v in model.vision_model.state_dict().items()}
    tune = replace(cfg.clip_tune, steps=2, train_text=False)
    stats = tune_face_clip(model, bank, tokenizer, cfg.clip, tune, 0, cpu, excluded=["earrings", "hair_red"])
    assert stats["steps"] == 2 and stats["params"] < sum(p.numel() for p in model.parameters())
    assert all(torch.equal(v, model.text_model.state_dict()[k]) for k, v in text_before.items())
    assert any(not torch.equal(v, model.vision_model.state_dict()[k]) for k, v in vision_before.items())
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    tune_face_clip(model, bank, tokenizer, cfg.clip, replace(tune, train_text=True), 0, cpu)
    assert any(not torch.equal(v, model.text_model.state_dict()[k]) for k, v in text_before.items())


# ---------------------------------------------------------------------------------------------------- the quick world


def test_quick_world_folder_and_manifest(minifaces_world, tmp_path):
    from safetensors import safe_open

    assert verify_manifest(minifaces_world) == []
    manifest = json.loads((minifaces_world / "manifest.json").read_text())
    assert manifest["world"] == "minifaces" and manifest["quick"] and manifest["seed"] == 0
    m = manifest["metrics"]
    assert set(m["classifier"]["accuracy"]) == set(ATTRIBUTES) and set(m["clip"]["accuracy"]) == set(ATTRIBUTES)
    assert set(m["generator"]["sample_frequencies"]) == set(INDICATORS) and m["generator"]["fid_clip"] >= 0
    assert set(manifest["stages"]) >= {"render", "classifier", "clip", "gan", "check"}
    for rel in ("generator.safetensors", "classifier/attributes.safetensors", "clip/model.safetensors"):
        with safe_open(str(minifaces_world / rel), framework="pt") as f:
            dtypes = {f.get_tensor(k).dtype for k in f.keys()}
        assert torch.float16 in dtypes and torch.float32 not in dtypes, rel
    assert (minifaces_world / "generator.safetensors").stat().st_size <= 30e6
    copy = tmp_path / "copy"
    shutil.copytree(minifaces_world, copy)
    with open(copy / "generator.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(b"\x00" if last != b"\x00" else b"\x01")
    (copy / "extra.txt").write_text("x")
    problems = verify_manifest(copy)
    assert any("sha256 differs: generator.safetensors" in p for p in problems)
    assert any("not in manifest: extra.txt" in p for p in problems)


def test_load_model_resolves_minifaces_specs(minifaces_world, tmp_path):
    import erasekit
    from erasekit.models import StyleGANHandle

    handle = erasekit.load_model(f"minifaces:{minifaces_world}")
    assert isinstance(handle, StyleGANHandle) and handle.world == minifaces_world
    assert handle.spec == f"minifaces:{minifaces_world}" and handle.generate([0, 1]).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="world train minifaces --out DIR"):
        erasekit.load_model(f"minifaces:{tmp_path}")
    with pytest.raises(ValueError, match="load_model"):
        erasekit.load_pipeline(f"minifaces:{minifaces_world}")


def test_world_cli_rejects_bad_exclusions_before_work(tmp_path, capsys):
    from erasekit.cli.main import main

    assert main(["world", "train", "minifaces", "--exclude", "banana", "--out", str(tmp_path / "w")]) == 2
    assert "MiniFaces attribute" in capsys.readouterr().err and not (tmp_path / "w").exists()
    from erasekit_worlds.recipes.minifaces.recipe import check_exclude

    assert check_exclude(["glasses", "hair:Red", "a smiling face"]) == ["glasses", "hair_red", "smile"]
    with pytest.raises(ValueError, match="every hair colour"):
        check_exclude([f"hair:{c}" for c in HAIR_COLOURS])


def test_recipe_work_folder_resumes_finished_stages_and_refuses_other_settings(tmp_path):
    from dataclasses import replace

    from erasekit.cli.main import main
    from erasekit_worlds.recipes.minifaces.recipe import quick_config, train_world

    work = tmp_path / "work"
    argv = ["world", "train", "minifaces", "--quick", "--device", "cpu", "--work", str(work)]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in work.iterdir()) == ["classifier", "clip", "clip_tune", "gan"]  # no checkpoint left
    # a second run copies every finished stage: the first run's files
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    first, again = (json.loads((d / "manifest.json").read_text()) for d in (tmp_path / "a", tmp_path / "b"))
    for name in ("generator.safetensors", "classifier/attributes.safetensors", "clip/model.safetensors"):
        assert again["files"][name]["sha256"] == first["files"][name]["sha256"], name
    stages = ("classifier", "clip", "clip_tune", "gan")
    assert all(again["stages"][s]["resumed_from"] == str(work / s) for s in stages)
    assert again["metrics"]["clip"] == first["metrics"]["clip"] and "clip_before_tune" in again["metrics"]
    # a stage of other settings is refused, naming the folder to delete
    cfg = quick_config()
    cfg.gan = replace(cfg.gan, steps=3)
    with pytest.raises(ValueError, match="gan stage trained with other settings"):
        train_world(tmp_path / "c", device="cpu", config=cfg, work=work)
    assert not (tmp_path / "c").exists()


def test_reuse_copies_matching_stages_and_retrains_the_rest(minifaces_world, tmp_path, capsys):
    from erasekit.cli.main import main
    from erasekit_worlds.recipes.minifaces.recipe import quick_config, reusable_stages

    argv = ["world", "train", "minifaces", "--quick", "--device", "cpu", "--reuse", str(minifaces_world)]
    assert main([*argv, "--gan-steps", "3", "--out", str(tmp_path / "longer")]) == 0
    assert "copied from" in capsys.readouterr().out
    old, new = (json.loads((d / "manifest.json").read_text()) for d in (minifaces_world, tmp_path / "longer"))
    assert new["reused"] == ["classifier", "clip", "clip_tune"] and new["config"]["gan"]["steps"] == 3
    for name in ("classifier/attributes.safetensors", "clip/model.safetensors"):
        assert new["files"][name]["sha256"] == old["files"][name]["sha256"], name
    assert new["files"]["generator.safetensors"]["sha256"] != old["files"]["generator.safetensors"]["sha256"]
    assert new["stages"]["clip"]["reused_from"] == str(minifaces_world) and "reused_from" not in new["stages"]["gan"]
    assert new["metrics"]["clip"] == old["metrics"]["clip"]
    assert new["metrics"]["clip_before_tune"] == old["metrics"]["clip_before_tune"]
    assert new["full_recipe_seconds"] > new["total_seconds"]
    # the same settings copy everything, the generator included; another seed or exclusion copies less
    cfg = quick_config()
    assert set(reusable_stages(minifaces_world, cfg, 0, [])) == {"classifier", "clip", "gan"}
    assert reusable_stages(minifaces_world, cfg, 1, []) == {}
    assert set(reusable_stages(minifaces_world, cfg, 0, ["glasses"])) == {"classifier"}
    with pytest.raises(ValueError, match="not an intact MiniFaces world folder"):
        reusable_stages(tmp_path, cfg, 0, [])
    assert main(["world", "train", "minicanvas", "--quick", "--gan-steps", "3", "--out", str(tmp_path / "c")]) == 2
    assert "--gan-steps and --gan-from are for minifaces" in capsys.readouterr().err
    assert main(["world", "train", "minicanvas", "--quick", "--set", "gan.lr=1", "--out", str(tmp_path / "c")]) == 2
    assert "--set is for minifaces worlds" in capsys.readouterr().err


def test_warm_start_begins_at_the_given_weights_and_refuses_another_architecture(tmp_path):
    from dataclasses import replace

    from erasekit_worlds.recipes.minifaces.gan_checkpoint import warm_start, weights_digest
    from erasekit_worlds.recipes.minifaces.recipe import quick_config
    from erasekit_worlds.recipes.minifaces.train_gan import train_gan

    cfg = replace(quick_config().gan, steps=1, batch_size=4, pair_weight=0.5, lr=1e-9)
    bank, cpu = render_bank(16, 0, "train", "test"), torch.device("cpu")
    first, _ = train_gan(bank, replace(cfg, lr=0.01, steps=2), seed=0, device=cpu)
    scratch, _ = train_gan(bank, cfg, seed=1, device=cpu)
    warm, stats = train_gan(bank, cfg, seed=1, device=cpu, init=first)
    assert stats["init_sha256"] == weights_digest(first) != weights_digest(scratch)
    # one step at a negligible lr: the warm start is the earlier generator, not the seed's random init (w_avg, a
    # running average of the mapping's outputs, moves with every forward pass whatever the lr)
    for (k, v), w in zip(first.named_parameters(), warm.parameters(), strict=True):
        assert torch.allclose(v, w, atol=1e-5), k
    pairs = zip(first.parameters(), scratch.parameters(), strict=True)
    assert any(not torch.allclose(v, s, atol=1e-3) for v, s in pairs)
    wider, _ = train_gan(bank, replace(cfg, w_dim=8), seed=0, device=cpu)
    with pytest.raises(ValueError, match=r"another architecture: w_dim 8 \(this run: 16\)"):
        warm_start(first, wider)
    # a checkpoint of a warm-started run is not resumed from other weights
    ckpt = tmp_path / "gan.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_gan(
            bank,
            replace(cfg, steps=3),
            seed=0,
            device=cpu,
            init=first,
            checkpoint=ckpt,
            checkpoint_every=1,
            on_step=_interrupt_at(2),
        )
    with pytest.raises(ValueError, match=r"other settings \(warm-start generator differs\)"):
        train_gan(bank, replace(cfg, steps=3), seed=0, device=cpu, init=scratch, checkpoint=ckpt)
    _, stats = train_gan(bank, replace(cfg, steps=3), seed=0, device=cpu, init=first, checkpoint=ckpt)
    assert stats["resumed_at_steps"] == 2


def _interrupt_at(step: int):
    def on_step(done, G):
        if done == step:
            raise KeyboardInterrupt

    return on_step


def test_gan_from_continues_a_world_generator(minifaces_world, tmp_path, capsys):
    from erasekit.cli.main import main
    from erasekit_worlds.recipes.minifaces.recipe import quick_config, reusable_stages

    w = str(minifaces_world)
    argv = ["world", "train", "minifaces", "--quick", "--device", "cpu", "--reuse", w, "--gan-from", w]
    more = tmp_path / "more"
    assert main([*argv, "--gan-steps", "3", "--set", "gan.lr=1e-3", "--out", str(more)]) == 0
    assert "2 steps): 5 steps in all" in capsys.readouterr().out  # the quick recipe's 2 steps, then 3
    old, new = (json.loads((d / "manifest.json").read_text()) for d in (minifaces_world, more))
    gan = new["stages"]["gan"]
    assert gan["continued_from"]["generator_sha256"] == old["files"]["generator.safetensors"]["sha256"]
    assert gan["continued_from"]["world"] == w and gan["total_steps"] == 5 and gan["steps"] == 3
    assert new["reused"] == ["classifier", "clip", "clip_tune"] and new["config"]["gan"]["lr"] == 1e-3
    assert new["files"]["generator.safetensors"]["sha256"] != old["files"]["generator.safetensors"]["sha256"]
    # a continued generator's config says only its last run's steps: a from-scratch run never copies it
    cfg = quick_config()
    cfg.gan.steps, cfg.gan.lr = 3, 1e-3
    assert set(reusable_stages(more, cfg, 0, [])) == {"classifier", "clip"}
    # continuing a continued world adds up every step behind its weights
    again = tmp_path / "again"
    assert main([*argv[:-1], str(more), "--gan-steps", "1", "--out", str(again)]) == 0
    assert "5 steps): 6 steps in all" in capsys.readouterr().out
    # bad continuations fail before any work, saying why
    for extra, message in [
        (["--exclude", "glasses"], "trained without \\[\\], this run excludes \\['glasses'\\]"),
        (["--set", "gan.w_dim=8"], "another architecture \\(w_dim 16 \\(this run: 8\\)\\)"),
    ]:
        assert main([*argv, *extra, "--out", str(tmp_path / "bad")]) == 2
        assert re.search(message, capsys.readouterr().err), message
        assert not (tmp_path / "bad").exists()
    assert main([*argv[:-1], str(tmp_path), "--out", str(tmp_path / "bad")]) == 2
    assert "not an intact MiniFaces world folder" in capsys.readouterr().err


def test_shipped_world_matches_its_manifest_and_the_issue_bars():
    import erasekit
    from erasekit_worlds.minifaces import weights_dir

    root = weights_dir()  # the world ships in the repository: a missing world is a failure, not a skip
    assert verify_manifest(root) == []
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["exclude"] == [] and manifest["quick"] is False
    assert manifest["files"]["generator.safetensors"]["bytes"] <= 30e6  # fp16 generator within the issue's 30 MB
    m = manifest["metrics"]
    assert m["classifier"]["min_accuracy"] >= 0.97  # the judge: >= 97 % per attribute, held out
    assert m["clip"]["min_binary_accuracy"] >= 0.90  # CLIP zero-shot >= 90 % per binary attribute, held out
    handle = erasekit.load_model("minifaces")
    assert handle.generate([0, 1]).shape == (2, 3, 64, 64)


def test_world_verify_cli(minifaces_world, capsys):
    from erasekit.cli.main import main

    assert main(["world", "verify", "minifaces", str(minifaces_world)]) == 0
    assert "OK" in capsys.readouterr().out


def test_erase_cli_end_to_end_on_the_quick_world(minifaces_world, tmp_path, capsys):
    import erasekit
    from erasekit.cli.main import main

    out = tmp_path / "no_glasses.safetensors"
    argv = ["erase", "--model", f"minifaces:{minifaces_world}", "--method", "text_to_unlearn", "--concept", "glasses"]
    assert (
        main([*argv, "--set", "steps=2", "--set", "batch_size=2", "--set", "progress=false", "--out", str(out)]) == 0
    )
    patch = erasekit.load_patch(out)
    assert (
        patch.metadata["method"] == "text_to_unlearn"
        and patch.metadata["base_model"] == f"minifaces:{minifaces_world}"
    )
    handle = erasekit.load_model(f"minifaces:{minifaces_world}")
    before = handle.generate([0, 1])
    with patch.applied(handle):
        after = handle.generate([0, 1])
    assert not torch.equal(before, after) and torch.equal(handle.generate([0, 1]), before)

    grid_png, report = tmp_path / "faces.png", tmp_path / "faces.json"
    model = ["--model", f"minifaces:{minifaces_world}", "--device", "cpu"]
    assert main(["generate", *model, "--seeds", "0-3", "--patch", str(out), "--out", str(grid_png)]) == 0
    assert grid_png.stat().st_size > 0
    assert main(["generate", *model, "--prompt", "a face", "--out", str(grid_png)]) == 2
    assert "takes no prompts" in capsys.readouterr().err
    argv = ["eval", *model, "--suite", "minifaces", "--patch", str(out), "--target", "glasses", "--seeds", "0-3"]
    assert main([*argv, "--no-fid", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["targets"] == ["glasses"] and "glasses_rate_before" in json.dumps(result["metrics"])
    assert main(["eval", *model, "--suite", "minifaces", "--json", str(report)]) == 2
    assert "needs --target" in capsys.readouterr().err


def test_evaluate_gan_with_the_world_suite(minifaces_world):
    import erasekit
    from erasekit.eval.gan import evaluate_gan
    from erasekit.patch import DenseDelta, ErasurePatch
    from erasekit_worlds.minifaces.suite import minifaces_suite

    handle = erasekit.load_model(f"minifaces:{minifaces_world}")
    key = "generator.synthesis.b64.torgb.bias"
    patch = ErasurePatch({key: DenseDelta(torch.full((3,), 0.3))})
    report = evaluate_gan(handle, patch, "glasses, a beard", seeds=range(6), check_fingerprint=False, progress=False)
    assert report.targets == ["glasses", "beard"] and report.run["suite"]["world"] == str(minifaces_world)
    m = report.metrics
    assert {"glasses_gamma", "beard_gamma", "fid_before", "fid_after", "pixel_drift"} <= set(m)
    with pytest.raises(ValueError, match="world train minifaces"):
        minifaces_suite(minifaces_world / "nowhere")
