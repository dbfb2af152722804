"""The MiniCanvas training recipe: the --quick world end to end, the folder layout, manifests, classifiers, the CLI.

The quick worlds are trained once per session (``minicanvas_world``, without Ink, and ``minicanvas_full_world`` in
conftest.py, ~20 s each on 2 CPU cores); the tests read them. The reuse tests train only the worlds whose training
path they check, and ask :func:`reusable_stages` for the decisions that need no training to check.
"""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch

from erasekit_worlds import cli as world_cli
from erasekit_worlds.minicanvas import (
    OBJECTS,
    STYLES,
    ClassifierConfig,
    ImageClassifier,
    load_classifier,
    verify_manifest,
    weights_dir,
)
from erasekit_worlds.recipes.minicanvas.banks import CaptionBank
from erasekit_worlds.recipes.minicanvas.recipe import (
    check_exclude,
    check_exclude_from,
    quick_config,
    reusable_stages,
    train_world,
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="erasekit")
    sub = parser.add_subparsers(dest="command")
    world_cli.add_parser(sub)
    return parser.parse_args(argv)


@pytest.fixture
def world(minicanvas_world):
    """The session's quick world without Ink (read only)."""
    return minicanvas_world


# ---------------------------------------------------------------------------------------------------- the folder


def test_pipeline_folder_loads_offline_with_the_clip_text_tower(world):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel

    pipe = StableDiffusionPipeline.from_pretrained(world / "pipeline", local_files_only=True)
    assert pipe.safety_checker is None and pipe.config.requires_safety_checker is False
    assert pipe.unet.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float32
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64 and pipe.unet.config.in_channels == 4
    assert len(pipe.tokenizer) == 49408 and pipe.text_encoder.config.vocab_size == 49408
    clip = CLIPModel.from_pretrained(world / "clip", local_files_only=True)
    text_tower = clip.text_model.state_dict()
    for name, value in pipe.text_encoder.state_dict().items():
        assert torch.equal(value, text_tower[name]), name
    pipe.set_progress_bar_config(disable=True)
    image = pipe("A apple image in Photo style.", num_inference_steps=2, output_type="pt").images
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()


def test_load_pipeline_and_handle(world):
    from erasekit import load_pipeline
    from erasekit.models import DiffusionHandle

    handle = DiffusionHandle(load_pipeline(str(world / "pipeline"), device="cpu"))
    assert handle.image_size == 64
    images = handle.generate(["A house image in Sketch style."], [0], num_inference_steps=2, guidance_scale=7.5)
    assert images.shape == (1, 3, 64, 64)


def test_weights_are_fp16_safetensors(world):
    from safetensors import safe_open

    weight_files = [p for p in world.rglob("*.safetensors")]
    assert len(weight_files) == 6  # unet, vae, text encoder, clip, two classifiers
    for path in weight_files:
        with safe_open(str(path), framework="pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert "F32" not in dtypes and "F16" in dtypes, (path, dtypes)


def test_clip_folder_and_its_processor(world):
    from transformers import CLIPModel, CLIPProcessor

    from erasekit.models.tokenizer import clip_tokenizer
    from erasekit_worlds.recipes.clip import normalise

    model = CLIPModel.from_pretrained(world / "clip", local_files_only=True)
    processor = CLIPProcessor.from_pretrained(world / "clip", local_files_only=True)
    assert model.config.vision_config.image_size == 64
    uint8 = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pixels = processor(images=list(uint8), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 64, 64)  # no resize or crop surprises at 64 px
    torch.testing.assert_close(pixels, normalise(uint8.float() / 255), atol=1e-5, rtol=0)
    text = "A picture of a fish in Stained Glass style."
    assert processor.tokenizer(text).input_ids == clip_tokenizer()(text).input_ids


def test_manifest_records_the_run(world):
    manifest = json.loads((world / "manifest.json").read_text())
    assert manifest["recipe"] == "minicanvas-v3" and manifest["seed"] == 0 and manifest["quick"] is True
    assert manifest["reused"] == [] and manifest["full_recipe_seconds"] == manifest["total_seconds"]
    assert manifest["exclude"] == ["style:Ink"] and "Ink" not in manifest["styles"]
    assert manifest["classifier_labels"]["style"] == list(STYLES)  # the judge still knows the excluded style
    for stage in "render style_classifier object_classifier clip clip_tune vae latents unet check".split():
        assert manifest["stages"][stage]["seconds"] >= 0
    assert manifest["stages"]["unet"]["steps"] == 2
    assert set(manifest["versions"]) >= {"torch", "diffusers", "transformers"}
    assert manifest["total_bytes"] == sum(f["bytes"] for f in manifest["files"].values()) < 50e6
    assert {"classifiers", "clip_before_tune", "clip", "vae", "fidelity"} <= set(manifest["metrics"])
    fidelity = manifest["metrics"]["fidelity"]
    assert fidelity["per_seed"] == {
        "0": {"style": fidelity["style_agreement"], "object": fidelity["object_agreement"]}
    }


# ---------------------------------------------------------------------------------------------------- verification


def test_verify_manifest_detects_a_flipped_byte_and_missing_or_extra_files(world, tmp_path):
    assert verify_manifest(world) == []
    copy = tmp_path / "copy"
    shutil.copytree(world, copy)
    target = copy / "classifiers" / "style.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    assert verify_manifest(copy) == ["sha256 differs: classifiers/style.safetensors (altered or corrupted)"]
    (copy / "pipeline" / "vae" / "config.json").unlink()
    (copy / "stray.txt").write_text("x")
    problems = verify_manifest(copy)
    assert "missing: pipeline/vae/config.json" in problems and "not in manifest: stray.txt" in problems
    assert verify_manifest(tmp_path / "nowhere")[0].startswith("no manifest.json")


def test_cli_verify(world, tmp_path, capsys):
    assert world_cli.run(parse(["world", "verify", "minicanvas", str(world)])) == 0
    assert "OK" in capsys.readouterr().out
    copy = tmp_path / "copy"
    shutil.copytree(world, copy)
    (copy / "clip" / "config.json").write_text("{}")
    assert world_cli.run(parse(["world", "verify", "minicanvas", str(copy)])) == 1


def test_shipped_weights_match_their_manifest():
    root = weights_dir()
    if not (root / "manifest.json").is_file():
        pytest.skip(f"no shipped MiniCanvas weights at {root} yet (train them with `erasekit world train minicanvas`)")
    assert verify_manifest(root) == []
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["exclude"] == [] and manifest["quick"] is False
    assert manifest["total_bytes"] <= 50e6


def test_reuse_copies_matching_stages_and_gives_the_from_scratch_files(world, tmp_path):
    again = tmp_path / "again"
    args = parse(["world", "train", "minicanvas", "--quick", "--exclude", "style:Ink", "--out", str(again)])
    args.reuse = str(world)
    assert world_cli.run(args) == 0
    manifest = json.loads((again / "manifest.json").read_text())
    every = ["style_classifier", "object_classifier", "clip", "clip_tune", "vae", "latents", "unet"]
    assert manifest["reused"] == every
    assert manifest["stages"]["clip"]["reused_from"] == str(world)
    assert manifest["full_recipe_seconds"] > manifest["total_seconds"]
    first = json.loads((world / "manifest.json").read_text())["files"]
    assert manifest["files"] == first  # the UNet read back and saved with the pipeline: the same bytes
    # another exclusion or seed copies less (a run copies what reusable_stages finds: the copy-some-and-train-the-rest
    # path is trained in the next two tests)
    cfg = quick_config()
    assert list(reusable_stages(world, cfg, 0, ["object:apple"])) == ["classifiers"]  # the judge ignores exclusions
    assert reusable_stages(world, cfg, 1, ["style:Ink"]) == {}
    broken = tmp_path / "broken"
    shutil.copytree(world, broken)
    (broken / "clip" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not an intact MiniCanvas world folder"):
        train_world(tmp_path / "x", quick=True, reuse=broken)
    assert not (tmp_path / "x").exists()


def test_exclude_from_unet_trains_clip_and_vae_on_everything_and_reuses_them(minicanvas_full_world, tmp_path):
    full = json.loads((minicanvas_full_world / "manifest.json").read_text())
    gold = train_world(tmp_path / "gold", exclude=["style:Ink"], exclude_from=["unet"], quick=True)
    assert gold["exclude"] == ["style:Ink"] and gold["exclude_from"] == ["unet"]
    assert full["exclude_from"] == ["clip", "vae", "unet"]
    same = [f for f in full["files"] if f.startswith(("clip/", "pipeline/vae/"))]
    assert same and all(gold["files"][f] == full["files"][f] for f in same)  # as if nothing were excluded
    unet = "pipeline/unet/diffusion_pytorch_model.safetensors"
    assert gold["files"][unet] != full["files"][unet]
    again = train_world(
        tmp_path / "again", exclude=["style:Ink"], exclude_from=["unet"], quick=True, reuse=minicanvas_full_world
    )
    assert again["reused"] == ["style_classifier", "object_classifier", "clip", "clip_tune", "vae"]
    # the classifiers' dropout draws from the process's global RNG, so two trainings in one process differ: the
    # comparison leaves them out
    models = {f: h for f, h in gold["files"].items() if not f.startswith("classifiers/")}
    assert models == {f: h for f, h in again["files"].items() if not f.startswith("classifiers/")}
    everywhere = reusable_stages(tmp_path / "gold", quick_config(), 0, ["style:Ink"])  # excluded from every stage
    assert list(everywhere) == ["classifiers"]  # gold's CLIP saw Ink: not reusable


def test_reuse_tunes_an_untuned_clip_and_keeps_the_pipeline(minicanvas_full_world, tmp_path):
    """A world from before the tuning (recipe v2, ``clip_tune`` absent) or with it off: ``--reuse`` copies its CLIP,
    tunes it as a from-scratch run does, and keeps the UNet (its text tower is the tuned CLIP's, bit for bit)."""
    untuned_cfg = quick_config()
    untuned_cfg.clip_tune.steps = 0
    untuned = train_world(tmp_path / "untuned", config=untuned_cfg)
    assert "clip_tune" not in untuned["stages"] and "clip_before_tune" not in untuned["metrics"]
    fresh = json.loads((minicanvas_full_world / "manifest.json").read_text())  # a from-scratch run of quick_config()
    tuned = train_world(tmp_path / "tuned", quick=True, reuse=tmp_path / "untuned")
    every = ["style_classifier", "object_classifier", "clip", "vae", "latents", "unet"]
    assert tuned["reused"] == every and "reused_from" not in tuned["stages"]["clip_tune"]
    clip_files = [f for f in fresh["files"] if f.startswith("clip/")]
    assert all(tuned["files"][f] == fresh["files"][f] for f in clip_files)  # tuned alike
    assert any(tuned["files"][f] != untuned["files"][f] for f in clip_files)
    pipeline = {f: h for f, h in untuned["files"].items() if f.startswith("pipeline/")}
    assert pipeline == {f: h for f, h in tuned["files"].items() if f.startswith("pipeline/")}
    assert {f: h for f, h in fresh["files"].items() if f.startswith("pipeline/")} == pipeline
    from transformers import CLIPModel

    towers = [CLIPModel.from_pretrained(tmp_path / w / "clip").text_model.state_dict() for w in ("untuned", "tuned")]
    assert all(torch.equal(towers[0][k], towers[1][k]) for k in towers[0])
    # a CLIP tuned otherwise cannot be untuned: CLIP and UNet are trained again
    other_cfg = quick_config()
    other_cfg.clip_tune.steps = 3
    assert list(reusable_stages(tmp_path / "tuned", other_cfg, 0, [])) == ["classifiers", "vae"]


@pytest.fixture
def one_thread():
    """Bit-exact comparisons of trainings in this process: one thread, whatever else shares the machine (oversubscribed
    cores would also make them many times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stop_after_checkpoint(monkeypatch, steps_done: int):
    """Make the UNet stage's checkpoints interrupt the run (as a kill would) right after writing ``steps_done``."""
    from erasekit_worlds.recipes.minicanvas import train_unet as module

    real = module.save_checkpoint

    def save_then_stop(path, key, state, record):
        real(path, key, state, record)
        if record["steps_done"] == steps_done:
            raise KeyboardInterrupt

    monkeypatch.setattr(module, "save_checkpoint", save_then_stop)


def test_work_folder_resumes_an_interrupted_unet_to_the_uninterrupted_files(tmp_path, monkeypatch, one_thread):
    """Interrupted in the UNet stage after a checkpoint, the same command run again (through the CLI) restores the
    finished stages from the work folder, continues the UNet from its checkpoint and writes an uninterrupted run's
    files; a checkpoint of other settings is refused. (The classifiers' dropout draws from the process's global RNG,
    so each run starts it from the same seed, as a fresh process would.)"""
    from dataclasses import replace

    from erasekit.cli.main import main
    from erasekit_worlds.recipes.minicanvas import recipe

    torch.manual_seed(0)
    straight = train_world(tmp_path / "straight", quick=True)
    real_train = recipe.train_unet
    monkeypatch.setattr(recipe, "train_unet", lambda *a, **k: real_train(*a, **k, checkpoint_every=1))  # of 2 steps
    _stop_after_checkpoint(monkeypatch, 1)
    work, out = tmp_path / "work", tmp_path / "world"
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train_world(out, quick=True, work=work)
    assert not out.exists()
    finished = ["classifiers", "clip", "clip_tune", "vae"]
    assert sorted(p.name for p in work.iterdir()) == sorted([*finished, "unet.checkpoint.safetensors"])
    other = quick_config()
    other.unet = replace(other.unet, lr=1e-3)
    with pytest.raises(ValueError, match=r"other settings \(config fields \['lr'\] differ\).*another work folder"):
        train_world(tmp_path / "other", config=other, work=work)
    monkeypatch.undo()  # the default checkpoint interval: the rest of the UNet writes none
    assert main(["world", "train", "minicanvas", "--quick", "--out", str(out), "--work", str(work)]) == 0
    assert sorted(p.name for p in work.iterdir()) == sorted([*finished, "unet"])  # the checkpoint is gone
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == straight["files"]
    stages = manifest["stages"]
    assert stages["style_classifier"]["resumed_from"] == str(work / "classifiers")
    assert stages["clip_tune"]["resumed_from"] == str(work / "clip_tune")
    assert stages["unet"]["resumed_at_steps"] == 1 and "resumed_from" not in stages["unet"]
    # run again, the UNet is restored too (the fp16 weights it ships): the same files
    again = train_world(tmp_path / "again", quick=True, work=work)
    assert again["files"] == manifest["files"] and again["stages"]["unet"]["resumed_from"] == str(work / "unet")


def test_unet_training_resumes_from_a_checkpoint_with_the_same_weights(tmp_path, monkeypatch, one_thread):
    from dataclasses import replace

    from erasekit.models.tokenizer import clip_tokenizer
    from erasekit_worlds.recipes.clip import reload_clip, text_encoder_from_clip
    from erasekit_worlds.recipes.minicanvas.train_unet import train_unet

    cpu = torch.device("cpu")
    text = text_encoder_from_clip(reload_clip(weights_dir() / "clip", cpu))
    gen = torch.Generator().manual_seed(0)
    latents = (torch.randn(8, 4, 16, 16, generator=gen), 0.1 * torch.rand(8, 4, 16, 16, generator=gen), 0.18215)
    labels = (torch.arange(8) % len(STYLES), torch.arange(8) % len(OBJECTS))
    cfg = replace(quick_config().unet, steps=3, warmup=2)  # the learning rate and the EMA's decay change every step
    data = (latents, labels, text, clip_tokenizer(), cfg)
    straight, _ = train_unet(*data, 0, cpu)
    ckpt = tmp_path / "unet.safetensors"
    with monkeypatch.context() as m:
        _stop_after_checkpoint(m, 2)
        with pytest.raises(KeyboardInterrupt):
            train_unet(*data, 0, cpu, checkpoint=ckpt, checkpoint_every=1, identity={"exclude": []})
    resumed, stats = train_unet(*data, 0, cpu, checkpoint=ckpt, checkpoint_every=1, identity={"exclude": []})
    assert stats["resumed_at_steps"] == 2 and stats["steps"] == 3
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    with pytest.raises(ValueError, match=r"other settings \(seed differs\); .*delete the checkpoint"):
        train_unet(*data, 1, cpu, checkpoint=ckpt, identity={"exclude": []})
    with pytest.raises(ValueError, match=r"other settings \(exclude differs\)"):
        train_unet(*data, 0, cpu, checkpoint=ckpt, identity={"exclude": ["style:Ink"]})
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable MiniCanvas UNet checkpoint"):
        train_unet(*data, 0, cpu, checkpoint=ckpt)


# ---------------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "exclude, match",
    [
        (["style:Nope"], "unknown style"),
        (["colour:red"], "style:<name>"),
        (["Ink"], "style:<name>"),
        ([f"object:{o}" for o in OBJECTS], "keep at least one"),
    ],
)
def test_bad_exclude_fails_before_any_work(exclude, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        check_exclude(exclude)
    with pytest.raises(ValueError, match=match):
        train_world(tmp_path / "w", exclude=exclude, quick=True)
    args = parse(["world", "train", "minicanvas", "--quick", "--out", str(tmp_path / "c"), "--exclude", *exclude])
    with pytest.raises(ValueError, match=match):
        world_cli.run(args)
    assert not (tmp_path / "w").exists() and not (tmp_path / "c").exists()


def test_bad_exclude_from_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="must include unet"):
        train_world(tmp_path / "w", exclude=["style:Ink"], exclude_from=["clip"], quick=True)
    with pytest.raises(ValueError, match="among clip, vae, unet"):
        check_exclude_from(["text"])
    args = parse(["world", "train", "minicanvas", "--quick", "--out", str(tmp_path / "c"), "--exclude-from", "unet"])
    with pytest.raises(ValueError, match="give --exclude too"):
        world_cli.run(args)
    assert not (tmp_path / "w").exists() and not (tmp_path / "c").exists()


def test_existing_output_is_not_overwritten(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        train_world(tmp_path, quick=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_cli_help_ends_with_examples(capsys):
    for argv in (["world", "--help"], ["world", "train", "--help"], ["world", "verify", "--help"]):
        with pytest.raises(SystemExit):
            parse(argv)
        text = capsys.readouterr().out.rstrip("\n")
        tail = text[text.rindex("examples:") :].splitlines()
        assert len(tail) >= 2 and all(line.startswith("  erasekit") for line in tail[1:]), text
    assert world_cli.run(parse(["world"])) == 2


# ---------------------------------------------------------------------------------------------------- classifier


def test_classifier_round_trip(tmp_path):
    torch.manual_seed(0)
    clf = ImageClassifier(ClassifierConfig(width=4, stages=2, image_size=16), ["a", "b", "c"]).eval()
    clf.features[0][1].running_mean.uniform_()  # non-trivial BatchNorm statistics survive too
    path = clf.save(tmp_path / "clf.safetensors")
    loaded = load_classifier(path)
    assert loaded.labels == ["a", "b", "c"] and loaded.config == clf.config and not loaded.training
    x = torch.rand(5, 3, 16, 16)
    torch.testing.assert_close(loaded(x), clf.half().float()(x), atol=1e-4, rtol=0)
    assert loaded(torch.rand(2, 3, 32, 32)).shape == (2, 3)  # other sizes are resized
    assert loaded.predict(x) == [clf.labels[i] for i in loaded(x).argmax(1)]


def test_classifier_bad_files(tmp_path):
    from safetensors.torch import save_file

    clf = ImageClassifier(ClassifierConfig(width=4, stages=2, image_size=16), ["a", "b"])
    with pytest.raises(ValueError, match="no classifier file"):
        load_classifier(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="end in .safetensors"):
        clf.save(tmp_path / "clf.pt")
    good = clf.save(tmp_path / "clf.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_classifier(tmp_path / "cut.safetensors")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an erasekit classifier"):
        load_classifier(tmp_path / "other.safetensors")
    header = {"format_version": 1, "config": {"width": 8, "stages": 2, "image_size": 16}, "labels": ["a", "b"]}
    save_file(
        dict(clf.state_dict()), str(tmp_path / "mismatch.safetensors"), {"erasekit_classifier": json.dumps(header)}
    )
    with pytest.raises(ValueError, match="do not match the config"):
        load_classifier(tmp_path / "mismatch.safetensors")
    with pytest.raises(ValueError, match="distinct strings"):
        ImageClassifier(ClassifierConfig(), ["a", "a"])
    with pytest.raises(ValueError, match="unknown classifier config keys"):
        ClassifierConfig.from_dict({"width": 8, "depth": 3})


# ---------------------------------------------------------------------------------------------------- pieces


def test_caption_bank_insertion_keeps_the_caption_words():
    from erasekit.models.tokenizer import clip_tokenizer

    tok = clip_tokenizer()
    bank = CaptionBank(tok, ["{style} style, {object}."], 16, torch.device("cpu"))
    s, o = torch.tensor([STYLES.index("Pop Art")] * 8), torch.tensor([OBJECTS.index("apple")] * 8)
    plain = bank.sample(s, o, torch.Generator().manual_seed(0))
    assert tok.decode(plain[0], skip_special_tokens=True) == "pop art style , apple ."
    noisy = bank.sample(s, o, torch.Generator().manual_seed(0), insert_prob=1.0)
    original = [t for t in plain[0].tolist() if t != 49407]
    for row in noisy.tolist():
        words = [t for t in row if t != 49407]
        assert len(words) - len(original) in (1, 2) and row.count(49407) >= 1
        it = iter(words)
        assert all(t in it for t in original)  # the caption survives in order, fillers in between
    dropped = bank.sample(s, o, torch.Generator().manual_seed(0), drop_prob=1.0)
    assert (dropped == bank.empty).all()


# ------------------------------------------------------------------------------ benchmark scripts on the quick world


def _bench(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_benchmark_scores_every_target_and_times_one(world, tmp_path):
    out = tmp_path / "eval.json"
    _bench("minicanvas_eval").main(
        ["--world", str(world), "--seeds", "0", "--threads", str(torch.get_num_threads()), "--out", str(out)]
    )
    result = json.loads(out.read_text())
    sanity = result["base_sanity"]
    assert len(sanity["per_target"]) == len(STYLES) + len(OBJECTS)
    assert isinstance(sanity["passes"], bool) and result["settings"]["seeds"] == [0]
    assert sanity["passes"] == (not sanity["failing_targets"])  # an untrained world may pass or fail; it must say
    assert result["speed"]["images"] > len(STYLES) * len(OBJECTS) and result["speed"]["seconds"] > 0
    assert result["environment"]["versions"]["torch"]


def test_unlearning_benchmark_runs_resumes_and_measures_distance_to_gold(world, tmp_path):
    bench = _bench("minicanvas_unlearning")
    out, md = tmp_path / "u.json", tmp_path / "u.md"
    argv = [
        "--world",
        str(world),
        "--methods",
        "uce",
        "--targets",
        "style:Photo",
        "--seeds",
        "0",
        "--threads",
        str(torch.get_num_threads()),
    ]
    with pytest.raises(SystemExit, match="no gold standard for style:Photo: it excludes"):
        bench.main([*argv, "--gold", f"style:Photo={world}", "--out", str(out)])  # the quick world lacks Ink
    gold = tmp_path / "gold"  # a stand-in: the same world, its manifest saying it was trained without Photo
    shutil.copytree(world, gold)
    manifest = json.loads((gold / "manifest.json").read_text())
    (gold / "manifest.json").write_text(json.dumps({**manifest, "exclude": ["style:Photo"]}))
    argv += ["--gold", f"style:Photo={gold}", "--out", str(out), "--md", str(md)]
    bench.main(argv)
    result = json.loads(out.read_text())
    assert result["settings"]["gold_worlds"]["style:Photo"]["exclude"] == ["style:Photo"]
    methods = [r["method"] for r in result["reference"] + result["runs"]]
    assert methods == ["gold", "base", "uce"]
    base = result["reference"][1]
    assert base["kl_to_gold"]["mean"] == pytest.approx(0.0, abs=1e-6)  # the gold here is the same world
    run = result["runs"][0]
    assert 0 <= run["metrics"]["ua"] <= 1 and run["kl_to_gold"]["mean"] >= 0 and run["peak_rss_mb"] > 0
    assert run["config"]["preserve"] and "Photo style" not in run["config"]["preserve"]
    assert "| uce | style:Photo |" in md.read_text() and "uce/style" in result["summary"]
    created = manifest["created"]  # every KL names the gold world it was taken against
    assert result["reference"][0]["created"] == created and run["kl_to_gold"]["gold_created"] == created
    bench.main([*argv, "--resume"])  # nothing left to do: the run is not repeated
    assert json.loads(out.read_text())["runs"] == result["runs"]  # the same row, its timestamps included
    # a retrained gold world on resume (re-measured beside the first): the stubbed control-flow test in
    # tests/benchmarks/test_benchmarks.py


def test_unlearning_benchmark_prompt_plans():
    from erasekit.presets import resolve_erasure

    bench = _bench("minicanvas_unlearning")
    cfg = {"prompts": {}}
    concept, anchor, extra = bench.method_inputs("salun", "style", "Ink", cfg)
    assert (concept, anchor, extra) == ("Ink style", None, {})  # the prompt lists arrive through the world's preset
    extra = resolve_erasure("salun", "minicanvas", concept).config.to_dict()
    assert len(extra["forget_prompts"]) == len(OBJECTS)
    assert all("Ink" in p for p in extra["forget_prompts"]) and not any("Ink" in p for p in extra["retain_prompts"])
    assert extra["pair_misaligned"]  # each forget prompt maps to the same object in the plain style
    assert extra["misaligned_prompts"] == [p.replace("Ink", "Photo") for p in extra["forget_prompts"]]
    concept, _, _ = bench.method_inputs("doco", "object", "apple", cfg)
    extra = resolve_erasure("doco", "minicanvas", concept).config.to_dict()
    assert extra["concept_kind"] == "object" and len(extra["concept_prompts"]) == len(extra["anchor_prompts"])
    pairs = zip(extra["concept_prompts"], extra["anchor_prompts"], strict=True)
    assert all("apple" in c and "apple" not in a for c, a in pairs)
    gold = {"style": torch.tensor([[1.0, 0.0]]), "object": torch.tensor([[0.5, 0.5]])}
    other = {"style": torch.tensor([[0.5, 0.5]]), "object": torch.tensor([[0.5, 0.5]])}
    kl = bench.kl_to_gold(gold, other)
    assert kl["style"] == pytest.approx(0.693, abs=2e-3) and kl["object"] == pytest.approx(0.0, abs=1e-6)


def test_generate_benchmark_times_the_cli(world, tmp_path):
    out = tmp_path / "g.json"
    argv = [
        "--model",
        f"minicanvas:{world}",
        "--seeds",
        "0",
        "--repeats",
        "1",
        "--threads",
        str(torch.get_num_threads()),
        "--out",
        str(out),
    ]
    _bench("minicanvas_generate").main([*argv, "--steps", "1"])
    result = json.loads(out.read_text())
    assert result["images"] == 16 and result["best_seconds"] > 0 and "generate" in result["command"]
    assert result["command"].endswith("--steps 1")


def test_quickstart_on_a_world_evaluates_before_and_after(world, tmp_path, capsys):
    from erasekit.cli.main import main

    out = tmp_path / "qs"
    argv = ["quickstart", "--model", f"minicanvas:{world}", "--method", "salun", "--target", "style:photo"]
    argv += ["--seeds", "0", "--set", "steps=2", "--set", "num_forget=2", "--set", "num_retain=2"]
    argv += ["--set", "sample_steps=1"]  # the forget and retain samples: 1 sampler step, like the evaluation's
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["before_after.png", "patch.safetensors", "report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "style:Photo" and report["config"]["steps"] == 2
    assert len(report["config"]["forget_prompts"]) == len(OBJECTS)  # the world's prompt plan
    assert report["before"]["run"]["patch"] is None and report["after"]["run"]["patch"]["method"] == "salun"
    assert "| ua |" in capsys.readouterr().out and "| ira |" in (out / "report.md").read_text()
