"""The CLI, run in-process through main(argv)."""

import json

import pytest
import torch
from PIL import Image

from erasekit import load_patch
from erasekit.cli.main import build_parser, main

ERASE = [
    "erase",
    "--model",
    "tiny-sd",
    "--method",
    "esd",
    "--concept",
    "a cat",
    "--set",
    "steps=2",
    "--set",
    "ddim_steps=3",
    "--set",
    "progress=false",
]


@pytest.fixture(scope="module")
def patch_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "p.safetensors"
    assert main([*ERASE, "--out", str(out)]) == 0
    return out


def test_erase_writes_a_patch_and_info_shows_metadata(patch_file, capsys):
    patch = load_patch(patch_file)
    assert patch.metadata["method"] == "esd" and patch.metadata["base_model"] == "tiny-sd"
    assert not patch_file.with_suffix(".ckpt").exists()  # the resume checkpoint is cleaned up on success
    assert main(["info", str(patch_file)]) == 0
    out = capsys.readouterr().out
    assert "method          esd" in out and "concept         a cat" in out and "ddim_steps = 3" in out
    assert main(["info", str(patch_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["steps"] == 2


def test_generate_grid_with_and_without_patch(patch_file, tmp_path):
    base = ["generate", "--prompt", "a cat", "--prompt", "a dog", "--seeds", "0,1", "--steps", "2"]
    assert main([*base, "--out", str(tmp_path / "a.png")]) == 0
    assert main([*base, "--patch", str(patch_file), "--scale", "0.5", "--out", str(tmp_path / "b.png")]) == 0
    a, b = Image.open(tmp_path / "a.png"), Image.open(tmp_path / "b.png")
    assert a.size == b.size and a.size[0] > 2 * 32


def test_apply_saves_a_loadable_pipeline_and_exports_lora(patch_file, tmp_path, capsys):
    assert main(["apply", "--patch", str(patch_file), "--out", str(tmp_path / "pipe")]) == 0
    from erasekit import load_pipeline

    pipe = load_pipeline(str(tmp_path / "pipe"), device="cpu")
    patch = load_patch(patch_file)
    key = next(iter(patch.deltas))
    base = load_pipeline("tiny-sd", device="cpu")
    expected = dict(base.unet.named_parameters())[key[5:]] + patch.deltas[key].to_dense()
    torch.testing.assert_close(dict(pipe.unet.named_parameters())[key[5:]], expected, rtol=0, atol=1e-7)
    assert main(["apply", "--patch", str(patch_file), "--out", str(tmp_path / "pipe")]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["apply", "--patch", str(patch_file), "--lora", str(tmp_path / "l.safetensors"), "--rank", "2"]) == 0
    assert "relative_error" in capsys.readouterr().out and (tmp_path / "l.safetensors").is_file()


def test_list_and_method_options(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "esd" in out and "xattn_kv" in out and "tiny-sd" in out
    assert main(["list", "esd"]) == 0
    assert "negative_guidance" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["erase", "--method", "nope", "--concept", "x", "--out", "p.safetensors"], "Unknown method 'nope'"),
        (["erase", "--method", "esd", "--concept", "x", "--set", "stesp=1", "--out", "p.safetensors"], "steps"),
        (["erase", "--method", "esd", "--concept", "x", "--out", "p.pt"], ".safetensors"),
        (["info", "missing.safetensors"], "No patch file"),
        (["generate", "--out", "x.png"], "No prompt given"),
        (["generate", "--prompt", "a", "--seeds", "a-b", "--out", "x.png"], "--seeds"),
    ],
)
def test_bad_input_gives_a_clear_error_and_exit_1(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_every_help_text_ends_with_examples():
    parser = build_parser()
    assert "examples:" in parser.format_help()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert "examples:\n  erasekit" in p.format_help(), name


def test_quickstart_writes_patch_grid_and_summary(tmp_path):
    out = tmp_path / "qs"
    argv = ["quickstart", "--model", "tiny-sd", "--method", "esd", "--concept", "a cat", "--set", "steps=2"]
    assert main([*argv, "--set", "ddim_steps=3", "--seeds", "0,1", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["before_after.png", "patch.safetensors", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "esd" and summary["patch_bytes"] > 0 and summary["config"]["steps"] == 2
    with pytest.raises(SystemExit, match="give the --concept"):
        main(["quickstart", "--model", "tiny-sd", "--out", str(tmp_path / "x")])
