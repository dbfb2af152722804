"""``erasekit attack`` end to end on tiny-sd with a tiny suite, and its bad-input errors."""

import json

import pytest
from eval_fixtures import tiny_suite

import erasekit
from erasekit.cli.main import main
from erasekit.eval import suite as suite_module

SUITE = "tiny_attack_suite"


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(suite_module._SUITES, SUITE, lambda **kw: tiny_suite(with_clip=False))


@pytest.fixture(scope="module")
def patch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("attack") / "ink.safetensors"
    erasekit.erase("tiny-sd", "esd", "Ink style", steps=2, progress=False).save(path)
    return str(path)


def _args(patch_file, out, *extra):
    return [
        "attack", "--model", "tiny-sd", "--device", "cpu", "--patch", patch_file, "--suite", SUITE,
        "--target", "style:Ink", "--steps", "2", "--quiet", "--json", str(out / "r.json"), *extra,
    ]  # fmt: skip


def test_attack_cli_writes_json_markdown_and_grid(registered, patch_file, tmp_path):
    rc = main(
        _args(
            patch_file,
            tmp_path,
            "--attacks",
            "quantize,relearn,inversion",
            "--set",
            "relearn.schedule=[0,1]",
            "--set",
            "relearn.k=2",
            "--set",
            "inversion.steps=1",
            "--set",
            "inversion.k=2",
            "--markdown",
            str(tmp_path / "r.md"),
            "--grid",
            str(tmp_path / "r.png"),
        )  # fmt: skip
    )
    assert rc == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data["attacks"]) == {"quantize", "relearn", "inversion"}
    assert data["attacks"]["relearn"]["config"]["schedule"] == [0, 1]
    assert set(data["attacks"]["relearn"]["results"]["rates"]) == {"patched", "base"}
    assert "| quantize |" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "r.png").stat().st_size > 0
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--attacks", "quantise"], "Unknown attack 'quantise'"),
        (["--attacks", "quantize", "--set", "quantize.bits=4"], "Unknown option 'bits'"),
        (["--attacks", "quantize", "--set", "relearn.k=2"], "not among the attacks run"),
        (["--attacks", "quantize", "--set", "k=2"], "ATTACK.KEY=VALUE"),
        (["--attacks", "quantize", "--target", "style:Nope"], "not in suite"),
    ],
)
def test_attack_cli_bad_input_exits_2_with_one_line(registered, patch_file, tmp_path, capsys, extra, message):
    assert main(_args(patch_file, tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.json").exists()
