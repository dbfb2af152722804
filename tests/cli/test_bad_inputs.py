"""Bad configs and CLI misuse: each case must exit with status 2 and one line that names the fix, print no
traceback, and leave nothing at the output path.

``test_outcome_tables`` writes every case and the line it printed as Markdown tables (``configs.md``, ``cli.md``)
into the folder named by ``ERASEKIT_BAD_INPUT_DIR`` (``make test`` points it at ``docs/reference/bad-inputs/``).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from erasekit.cli.main import main

ESD = ["--method", "esd", "--concept", "a cat", "--set", "steps=1", "--set", "ddim_steps=2", "--set", "progress=false"]


@dataclass
class Case:
    name: str
    argv: Callable[[Path], list[str]]  # tmp folder -> argv
    expected: str  # a regex the error line must match (it names the fix)
    output: str | None = "out.safetensors"  # the path, under tmp, that must not exist afterwards


def _erase(*extra: str, out: str = "out.safetensors") -> Callable[[Path], list[str]]:
    return lambda tmp: ["erase", "--model", "tiny-sd", *ESD, *extra, "--out", str(tmp / out)]


def _yaml(text: str) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        (tmp / "c.yaml").write_text(text, encoding="utf-8")
        return [
            "erase",
            "--model",
            "tiny-sd",
            *ESD,
            "--config",
            str(tmp / "c.yaml"),
            "--out",
            str(tmp / "out.safetensors"),
        ]

    return argv


CONFIG_CASES = [
    Case(
        "unknown method",
        lambda t: ["erase", "--method", "esdd", "--concept", "a cat", "--out", str(t / "out.safetensors")],
        r"Unknown method 'esdd'.*available",
    ),
    Case("unknown option (typo)", _erase("--set", "stpes=3"), r"Unknown option 'stpes'.*Did you mean 'steps'"),
    Case("--set without '='", _erase("--set", "steps"), r"KEY=VALUE|key=value"),
    Case("--set value of the wrong type", _erase("--set", "steps=many"), r"steps must be int"),
    Case("steps = 0", _erase("--set", "steps=0"), r"steps must be a positive integer"),
    Case("negative learning rate", _erase("--set", "lr=-1e-5"), r"lr must be > 0"),
    Case("batch_size = 0", _erase("--set", "batch_size=0"), r"batch_size must be a positive integer"),
    Case("unknown mixed precision", _erase("--set", "mixed_precision=fp8"), r"mixed_precision must be one of"),
    Case("unknown ESD variant", _erase("--set", "variant=z"), r"variant must be one of"),
    Case("unknown target preset", _erase("--set", "target=attention_everywhere"), r"preset|target"),
    Case(
        "target regex that matches nothing",
        _erase("--set", "target=re:nothing_matches_this"),
        r"matches no parameter|matched no",
    ),
    Case("invalid target regex", _erase("--set", "target=re:[unclosed"), r"regex|regular expression"),
    Case("sync_every = 0", _erase("--set", "sync_every=0"), r"sync_every"),
    Case(
        "YAML file missing",
        lambda t: [
            "erase",
            "--model",
            "tiny-sd",
            *ESD,
            "--config",
            str(t / "none.yaml"),
            "--out",
            str(t / "out.safetensors"),
        ],
        r"none\.yaml",
    ),
    Case("YAML syntax error", _yaml("steps: [1, 2\n"), r"YAML|yaml"),
    Case("YAML top level is a list", _yaml("- steps\n- 2\n"), r"mapping|dict"),
    Case("YAML unknown key", _yaml("stepz: 3\n"), r"Unknown option 'stepz'"),
    Case("YAML wrong type", _yaml("steps: [1, 2]\n"), r"steps"),
    Case("YAML for another method", _yaml("method: salun\n"), r"for method 'salun' but 'esd'"),
    Case(
        "empty concept",
        lambda t: [
            "erase",
            "--model",
            "tiny-sd",
            "--method",
            "esd",
            "--concept",
            "  ",
            "--out",
            str(t / "out.safetensors"),
        ],
        r"concept",
    ),
    Case("negative checkpoint_every", _erase("--set", "checkpoint_every=-1"), r"must be >= 0"),
    Case("negative seed", _erase("--set", "seed=-3"), r"seed must be >= 0"),
    Case("uce with a loop option", _erase("--method", "uce", "--set", "nonsense_opt=1"), r"no training loop"),
]


def _model_file(tmp: Path) -> Path:
    path = tmp / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    return path


_PATCH: dict[str, bytes] = {}


def _patch_file(tmp: Path) -> Path:
    """A valid tiny-sd patch (erased once per test run, copied for each case)."""
    path = tmp / "p.safetensors"
    if "bytes" not in _PATCH:
        assert main(["erase", "--model", "tiny-sd", *ESD, "--out", str(path)]) == 0
        _PATCH["bytes"] = path.read_bytes()
    path.write_bytes(_PATCH["bytes"])
    return path


def _read_only(tmp: Path) -> Path:
    folder = tmp / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return folder


CLI_CASES = [
    Case(
        "missing model folder",
        lambda t: ["erase", "--model", str(t / "nowhere"), *ESD, "--out", str(t / "out.safetensors")],
        r"no folder at|Unknown model",
    ),
    Case(
        "folder that is not a pipeline",
        lambda t: ["erase", "--model", str(t), *ESD, "--out", str(t / "out.safetensors")],
        r"model_index\.json",
    ),
    Case(
        "pickled checkpoint without --trust-pickle",
        lambda t: [
            "erase",
            "--model",
            str(_pickle(t)),
            "--model-config",
            "sd15",
            *ESD,
            "--out",
            str(t / "out.safetensors"),
        ],
        r"--trust-pickle",
    ),
    Case(
        "single file without --model-config",
        lambda t: ["erase", "--model", str(_model_file(t)), *ESD, "--out", str(t / "out.safetensors")],
        r"neither an erasekit StyleGAN2 generator.*nor a single-file",
    ),
    Case(
        "unknown architecture name",
        lambda t: [
            "erase",
            "--model",
            str(_ldm_file(t)),
            "--model-config",
            "sd99",
            *ESD,
            "--out",
            str(t / "out.safetensors"),
        ],
        r"Unknown architecture 'sd99'",
    ),
    Case(
        "--out not .safetensors",
        lambda t: ["erase", "--model", "tiny-sd", *ESD, "--out", str(t / "out.bin")],
        r"must end in \.safetensors",
        "out.bin",
    ),
    Case(
        "--out in a missing folder",
        lambda t: ["erase", "--model", "tiny-sd", *ESD, "--out", str(t / "no" / "such" / "out.safetensors")],
        r"does not exist; create it first",
        "no/such/out.safetensors",
    ),
    Case(
        "--out in a read-only folder",
        lambda t: ["erase", "--model", "tiny-sd", *ESD, "--out", str(_read_only(t) / "out.safetensors")],
        r"not writable",
        "ro/out.safetensors",
    ),
    Case(
        "reversed seed range",
        lambda t: ["generate", "--model", "tiny-sd", "--prompt", "a cat", "--seeds", "5-1", "--out", str(t / "g.png")],
        r"low to high",
        "g.png",
    ),
    Case(
        "eval: --json in a missing folder",
        lambda t: ["eval", "--model", "minicanvas", "--target", "style:Ink", "--json", str(t / "no" / "r.json")],
        r"does not exist; create it first",
        "no/r.json",
    ),
    Case(
        "unknown world folder",
        lambda t: ["erase", "--model", f"minicanvas:{t / 'nowhere'}", *ESD, "--out", str(t / "out.safetensors")],
        r"erasekit world train minicanvas",
    ),
    Case(
        "StyleGAN2 world for a diffusion method",
        lambda t: ["erase", "--model", "minifaces", *ESD, "--out", str(t / "out.safetensors")],
        r"StyleGAN|stylegan|diffusion",
    ),
    Case("info on a missing patch", lambda t: ["info", str(t / "none.safetensors")], r"none\.safetensors", None),
    Case(
        "info on a file that is not a patch",
        lambda t: ["info", str(_model_file(t))],
        r"not an erasekit patch|erasekit_patch|re-create",
        None,
    ),
    Case(
        "apply: patch for another base model",
        lambda t: ["apply", "--model", "minicanvas", "--patch", str(_patch_file(t)), "--out", str(t / "out_dir")],
        r"fingerprint|another (base model|architecture)|--force",
        "out_dir",
    ),
    Case(
        "apply: --lora-format without --lora",
        lambda t: ["apply", "--patch", str(_patch_file(t)), "--out", str(t / "o"), "--lora-format", "kohya"],
        r"--lora-format applies to --lora",
        "o",
    ),
    Case(
        "apply: --rank 0",
        lambda t: ["apply", "--patch", str(_patch_file(t)), "--lora", str(t / "l.safetensors"), "--rank", "0"],
        r"rank must be >= 1",
        "l.safetensors",
    ),
    Case(
        "apply: --out exists",
        lambda t: ["apply", "--patch", str(_patch_file(t)), "--out", str(_non_empty(t))],
        r"--overwrite",
        None,
    ),
    Case(
        "apply: --single-file not .safetensors",
        lambda t: ["apply", "--patch", str(_patch_file(t)), "--single-file", str(t / "m.ckpt")],
        r"must end in \.safetensors",
        "m.ckpt",
    ),
    Case(
        "generate without a prompt",
        lambda t: ["generate", "--model", "tiny-sd", "--out", str(t / "g.png")],
        r"--prompt",
        "g.png",
    ),
    Case(
        "bad seed list",
        lambda t: ["generate", "--model", "tiny-sd", "--prompt", "a cat", "--seeds", "a-b", "--out", str(t / "g.png")],
        r"seed",
        "g.png",
    ),
    Case(
        "eval: unknown suite",
        lambda t: ["eval", "--model", "tiny-sd", "--suite", "nosuch", "--json", str(t / "r.json")],
        r"Unknown suite 'nosuch'",
        "r.json",
    ),
    Case(
        "eval: unknown target",
        lambda t: ["eval", "--model", "minicanvas", "--target", "style:Monet", "--json", str(t / "r.json")],
        r"choose one of",
        "r.json",
    ),
    Case(
        "eval: malformed target",
        lambda t: ["eval", "--model", "minicanvas", "--target", "Monet", "--json", str(t / "r.json")],
        r"style:NAME or object:NAME",
        "r.json",
    ),
    Case(
        "eval unlearncanvas without data",
        lambda t: ["eval", "--model", "tiny-sd", "--suite", "unlearncanvas", "--json", str(t / "r.json")],
        r"--data DIR and --classifiers DIR",
        "r.json",
    ),
    Case("list: unknown method", lambda t: ["list", "nosuch"], r"Unknown method 'nosuch'", None),
]


def _pickle(tmp: Path) -> Path:
    path = tmp / "model.ckpt"
    torch.save({"state_dict": {}}, path)
    return path


def _ldm_file(tmp: Path) -> Path:
    path = tmp / "ldm.safetensors"
    save_file({"model.diffusion_model.conv_in.weight": torch.zeros(1)}, str(path))
    return path


def _non_empty(tmp: Path) -> Path:
    folder = tmp / "taken"
    folder.mkdir()
    (folder / "x").write_text("x")
    return folder


def _run(case: Case, tmp: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(case.argv(tmp))
    except SystemExit as err:  # argparse's own usage errors exit 2 with their message
        code = err.code
    except Exception as err:  # noqa: BLE001 - recorded as an unexpected outcome, with its type
        return -1, f"Traceback: {type(err).__name__}: {err}"
    return code, capsys.readouterr().err


def _check(case: Case, tmp: Path, code: int, err: str) -> str | None:
    """What is wrong with the outcome, or ``None``."""
    lines = [line for line in err.splitlines() if ": error: " in line]  # progress bars and logs may share stderr
    if code != 2:
        return f"exit status {code}"
    if "Traceback" in err or len(lines) != 1:
        return f"{len(lines)} error lines"
    if not re.search(case.expected, lines[0]):
        return f"message does not match {case.expected!r}"
    if case.output and (tmp / case.output).exists():
        return f"{case.output} exists"
    return None


def _table(title: str, cases: list[Case], tmp_path: Path, capsys) -> tuple[str, list[str]]:
    rows = [
        f"# {title}\n",
        "Generated by `tests/cli/test_bad_inputs.py`.\n",
        "| case | exit | message |",
        "|---|---|---|",
    ]
    problems = []
    for i, case in enumerate(cases):
        tmp = tmp_path / f"case{i}"
        tmp.mkdir(parents=True)
        try:
            code, err = _run(case, tmp, capsys)
        finally:
            for path in tmp.rglob("*"):
                if path.is_dir():
                    path.chmod(stat.S_IRWXU)
        problem = _check(case, tmp, code, err)
        if problem:
            problems.append(f"{case.name}: {problem}: {err.strip()[-300:]}")
        line = (
            " ".join([x for x in err.splitlines() if ": error: " in x][-1:] or err.strip().splitlines()[-1:])
            .replace(str(tmp), "<tmp>")
            .replace("|", "\\|")
        )
        rows.append(f"| {case.name} | {code} | {line if not problem else 'UNEXPECTED: ' + problem} |")
    return "\n".join(rows) + "\n", problems


def _write(name: str, text: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("ERASEKIT_BAD_INPUT_DIR") or tmp_path / "tables")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_output_folder_is_refused(tmp_path, capsys):
    case = next(c for c in CLI_CASES if c.name == "--out in a read-only folder")
    code, err = _run(case, tmp_path, capsys)
    assert _check(case, tmp_path, code, err) is None


def test_outcome_tables(tmp_path, capsys):
    assert len(CONFIG_CASES) >= 20 and len(CLI_CASES) >= 20
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    cli = [c for c in CLI_CASES if not (root and "read-only" in c.name)]  # root writes anywhere
    configs, problems_a = _table("Bad configs, YAML files and --set overrides", CONFIG_CASES, tmp_path / "a", capsys)
    usage, problems_b = _table("CLI misuse", cli, tmp_path / "b", capsys)
    _write("configs.md", configs, tmp_path)
    _write("cli.md", usage, tmp_path)
    assert not problems_a + problems_b, "\n".join(problems_a + problems_b)
