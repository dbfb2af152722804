"""SIGKILL anywhere: ``erasekit erase`` (with checkpoints), ``erasekit apply --out`` and a world recipe's stages are
killed at named moments (``ERASEKIT_TEST_KILL_AT``, see ``erasekit/_killpoints.py``) and after seeded random delays,
then run again (``--resume`` for erase). The result must equal an uninterrupted run bit for bit, the output path
must never hold a partial file, and the rerun must leave no temporary file behind.

The runs are real CLI calls in processes forked from one server (tests/cli/kill_harness.py) that imported the CLI
once, so each costs its work, not torch's import. ``-m slow`` adds the exhaustive variant (every point, every
count, chains of kills, many random delays).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill harness forks (POSIX only)")

HARNESS = Path(__file__).with_name("kill_harness.py")
KILLED = -9
STEPS = 4
ERASE = [
    "erase", "--model", "tiny-sd", "--method", "salun", "--concept", "a cat",
    "--set", f"steps={STEPS}", "--set", "checkpoint_every=1", "--set", "num_forget=2", "--set", "num_retain=2",
    "--set", "sample_steps=2", "--set", "batch_size=2", "--set", "sample_batch_size=1", "--set", "progress=false",
]  # fmt: skip
# per-run fields of a patch's metadata: when it was made and what the run cost; and of its config, where the run kept
# its checkpoint (beside its --out) and whether it resumed
VOLATILE, RUN_OPTIONS = ("created", "stats"), ("checkpoint_dir", "resume")


class Runner:
    """Sends calls to the fork server; each returns ``(exit code, log text)``."""

    def __init__(self, root: Path):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path]), "OMP_NUM_THREADS": "1"}
        env.pop("ERASEKIT_TEST_KILL_AT", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(HARNESS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}
        self.root, self.count = root, 0

    def call(self, target: str, *args, kill_at: str | None = None, kill_after: float | None = None):
        self.count += 1
        log = self.root / f"run{self.count}.log"
        env = {"ERASEKIT_TEST_KILL_AT": kill_at} if kill_at else {}
        request = {"target": target, "args": list(args), "env": env, "log": str(log), "kill_after": kill_after}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        self.last_seconds = reply["seconds"]
        return reply["code"], log.read_text() if log.exists() else ""

    def cli(self, *argv, **kill):
        return self.call("erasekit.cli.main:main", list(argv), **kill)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    r = Runner(tmp_path_factory.mktemp("kill-logs"))
    yield r
    r.close()


@pytest.fixture(scope="module")
def reference(runner, tmp_path_factory):
    """An uninterrupted erasure and the pipeline folder its patch gives (made once)."""
    folder = tmp_path_factory.mktemp("reference")
    code, log = runner.cli(*ERASE, "--out", str(folder / "p.safetensors"))
    assert code == 0, log
    erase_seconds = runner.last_seconds
    code, log = runner.cli("apply", "--model", "tiny-sd", "--patch", str(folder / "p.safetensors"), "--out",
                           str(folder / "erased"))  # fmt: skip
    assert code == 0, log
    return {"patch": folder / "p.safetensors", "pipeline": folder / "erased", "erase_seconds": erase_seconds}


# ---- comparing outputs ------------------------------------------------------------------------------------------
def patch_parts(path: Path) -> tuple[dict, bytes]:
    """A patch file as (header without the per-run metadata, tensor bytes), read without erasekit."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__")
    erasekit = json.loads(meta.pop("erasekit_patch"))
    run = erasekit["metadata"]
    for key in VOLATILE:
        run.pop(key)
    assert not set(RUN_OPTIONS) & set(run["config"])  # how to run is not recorded, only what was computed
    return {"tensors": header, "meta": meta, "erasekit": erasekit}, raw[8 + n :]


def assert_same_patch(path: Path, reference: Path) -> None:
    assert path.is_file(), f"no patch at {path}"
    header, data = patch_parts(path)
    ref_header, ref_data = patch_parts(reference)
    assert data == ref_data, "the tensor bytes differ from the uninterrupted run"
    assert header == ref_header


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders (hidden names) anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def assert_complete_or_absent(path: Path, reference: Path) -> None:
    """The output path holds nothing, or the complete result: never a partial file."""
    if path.exists():
        assert_same_patch(path, reference)


# ---- erase ------------------------------------------------------------------------------------------------------
ERASE_POINTS = [
    ("sample:3", None),  # generating the frozen model's samples: no checkpoint yet
    ("step:3", "resumed salun from step 2"),  # inside step 3: backward done, optimizer step not taken
    ("write:checkpoint.safetensors:2", "resumed salun from step 1"),  # the second checkpoint written, not renamed
    ("write:p.safetensors:1", f"resumed salun from step {STEPS - 1}"),  # the patch written, not renamed
    ("written:p.safetensors:1", f"resumed salun from step {STEPS - 1}"),  # the patch in place, checkpoint not removed
]


def kill_then_resume(runner, folder: Path, reference: Path, kills: list[dict]) -> list[str]:
    """Run the erasure once per entry of ``kills`` (each killed), then to the end with ``--resume``; check the
    output path after every kill and the result at the end. Returns the logs of the runs."""
    out, logs = folder / "p.safetensors", []
    for i, kill in enumerate(kills):
        code, log = runner.cli(*ERASE, "--out", str(out), *(["--resume"] if i else []), **kill)
        logs.append(log)
        if code == 0:  # a random delay longer than the run
            break
        assert code == KILLED, log
        assert_complete_or_absent(out, reference)
    code, log = runner.cli(*ERASE, "--out", str(out), "--resume")
    logs.append(log)
    assert code == 0, log
    assert_same_patch(out, reference)
    assert sorted(p.name for p in folder.iterdir()) == ["p.safetensors"], "checkpoint or temporaries left behind"
    return logs


@pytest.mark.parametrize(("kill_at", "resumed"), ERASE_POINTS, ids=[p for p, _ in ERASE_POINTS])
def test_erase_killed_at_a_named_point_resumes_to_the_same_patch(runner, reference, tmp_path, kill_at, resumed):
    code, log = runner.cli(*ERASE, "--out", str(tmp_path / "p.safetensors"), kill_at=kill_at)
    assert code == KILLED, f"{kill_at} was never reached:\n{log}"
    assert_complete_or_absent(tmp_path / "p.safetensors", reference["patch"])
    if kill_at.startswith("write:"):  # the killed writer's temporary is there; the next write sweeps it
        assert any(name.endswith(".tmp") for name in leftovers(tmp_path)), leftovers(tmp_path)
    logs = kill_then_resume(runner, tmp_path, reference["patch"], [])
    if resumed:
        assert resumed in logs[-1], logs[-1]
    else:
        assert "resumed" not in logs[-1]


def test_erase_killed_after_a_random_delay_resumes_to_the_same_patch(runner, reference, tmp_path):
    delay = random.Random(32).uniform(0.0, reference["erase_seconds"])
    kill_then_resume(runner, tmp_path, reference["patch"], [{"kill_after": delay}])


def test_resume_refuses_a_checkpoint_of_another_run(runner, tmp_path):
    out = str(tmp_path / "p.safetensors")
    assert runner.cli(*ERASE, "--out", out, kill_at="step:3")[0] == KILLED
    code, log = runner.cli(*ERASE, "--set", "lr=0.5", "--out", out, "--resume")
    assert code == 2 and "was made by a different run (config differ)" in log, log
    code, log = runner.cli(*ERASE, "--dtype", "bf16", "--out", out, "--resume")
    assert code == 2 and "the base model's weights differ" in log, log
    assert "Traceback" not in log and not Path(out).exists()
    checkpoint = tmp_path / "p.ckpt" / "checkpoint.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # a damaged checkpoint (not one erasekit wrote)
    code, log = runner.cli(*ERASE, "--out", out, "--resume")
    assert code == 2 and "cannot be read" in log and "delete it" in log, log


# ---- apply --out ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kill_at", ["write:erased:1", "swap:erased:1", "written:erased:1"])
def test_apply_killed_leaves_no_partial_folder_and_reruns_to_the_same_pipeline(runner, reference, tmp_path, kill_at):
    out = tmp_path / "erased"
    apply = ["apply", "--model", "tiny-sd", "--patch", str(reference["patch"]), "--out", str(out), "--overwrite"]
    if kill_at.startswith("swap:"):  # replacing an earlier folder: killed between moving it aside and moving in
        out.mkdir()
        (out / "old.txt").write_text("an earlier output")
    code, log = runner.cli(*apply, kill_at=kill_at)
    assert code == KILLED, log
    if out.exists():  # the earlier folder, or the complete new one; never a mixture
        assert tree(out) in (
            {"old.txt": hashlib.sha256(b"an earlier output").hexdigest()},
            tree(reference["pipeline"]),
        )
    code, log = runner.cli(*apply)
    assert code == 0, log
    assert tree(out) == tree(reference["pipeline"])
    assert leftovers(tmp_path) == []


# ---- a world recipe ---------------------------------------------------------------------------------------------
def world(runner, folder: Path, **kill):
    return runner.call("kill_harness:toy_world", str(folder / "world"), str(folder / "work"), **kill)


@pytest.fixture(scope="module")
def reference_world(runner, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference-world")
    code, log = world(runner, folder)
    assert code == 0, log
    return tree(folder / "world")


@pytest.mark.parametrize(
    ("kill_at", "retrained"),
    [
        ("toy-train:encoder:1", ["encoder", "decoder"]),  # half the encoder's file written; the judge is stored
        ("write:encoder:1", ["encoder", "decoder"]),  # storing the finished encoder in the work folder
        ("write:world:1", []),  # every stage stored; the world folder complete but not renamed
    ],
)
def test_world_recipe_killed_reruns_only_unfinished_stages(runner, reference_world, tmp_path, kill_at, retrained):
    code, log = world(runner, tmp_path, kill_at=kill_at)
    assert code == KILLED, log
    assert not (tmp_path / "world").exists()
    (tmp_path / "trained.log").unlink()
    code, log = world(runner, tmp_path)
    assert code == 0, log
    trained = tmp_path / "trained.log"
    assert (trained.read_text().split() if trained.exists() else []) == retrained
    files = tree(tmp_path / "world")
    manifest = files.pop("manifest.json")
    assert manifest and files == {k: v for k, v in reference_world.items() if k != "manifest.json"}
    assert leftovers(tmp_path) == []


# ---- exhaustive -------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_erase_survives_chains_of_random_kills(runner, reference, tmp_path, seed):
    """Up to three kills in a row, each at a random named point or after a random delay, then a clean resume."""
    rng = random.Random(seed)
    points = ["sample", "step", "write:checkpoint.safetensors", "write:p.safetensors", "written:p.safetensors"]
    kills = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:
            kills.append({"kill_after": rng.uniform(0.0, reference["erase_seconds"])})
        else:
            point = rng.choice(points)
            limit = {"sample": 6, "step": STEPS, "write:checkpoint.safetensors": STEPS - 1}.get(point, 1)
            kills.append({"kill_at": f"{point}:{rng.randint(1, limit)}"})
    kill_then_resume(runner, tmp_path, reference["patch"], kills)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_apply_survives_random_kills(runner, reference, tmp_path, seed):
    out = tmp_path / "erased"
    apply = ["apply", "--model", "tiny-sd", "--patch", str(reference["patch"]), "--out", str(out), "--overwrite"]
    delay = random.Random(seed).uniform(0.0, 2.0)
    code, log = runner.cli(*apply, kill_after=delay)
    assert code in (0, KILLED), log
    if out.exists():
        assert tree(out) == tree(reference["pipeline"])
    assert runner.cli(*apply)[0] == 0
    assert tree(out) == tree(reference["pipeline"]) and leftovers(tmp_path) == []


METHODS = {  # other loop methods: ESD samples inside its steps, DoCo checkpoints a discriminator and its optimiser
    "esd": ["--set", "ddim_steps=3"],
    "doco": ["--set", "batch_size=1", "--set", "warmup_steps=1", "--set", "num_anchor=1", "--set", "sample_steps=2"]
    + ["--set", "disc_channels=4"],
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("kill_at", ["step:3", "write:checkpoint.safetensors:2", "write:p.safetensors:1"])
def test_other_loop_methods_resume_to_the_same_patch(runner, tmp_path, method, kill_at):
    argv = ["erase", "--model", "tiny-sd", "--method", method, "--concept", "a cat", *METHODS[method]]
    argv += ["--set", f"steps={STEPS}", "--set", "checkpoint_every=1", "--set", "progress=false"]
    (tmp_path / "ref").mkdir()
    (tmp_path / "run").mkdir()
    assert runner.cli(*argv, "--out", str(tmp_path / "ref" / "p.safetensors"))[0] == 0
    code, log = runner.cli(*argv, "--out", str(tmp_path / "run" / "p.safetensors"), kill_at=kill_at)
    assert code == KILLED, log
    code, log = runner.cli(*argv, "--out", str(tmp_path / "run" / "p.safetensors"), "--resume")
    assert code == 0 and f"resumed {method} from step" in log, log
    assert_same_patch(tmp_path / "run" / "p.safetensors", tmp_path / "ref" / "p.safetensors")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["p.safetensors"]


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["write:clip:1", "write:gan:1", "write:world:1", "delay"])
def test_the_minifaces_recipe_killed_reruns_to_the_same_world(runner, tmp_path_factory, kill_at):
    """The real recipe (``erasekit world train minifaces --quick --work``): killed while storing a stage or the
    world folder, or after a random delay, the rerun gives the same model files."""
    root = tmp_path_factory.mktemp("minifaces")

    def train(name: str, **kill):
        folder = root / name
        argv = ["world", "train", "minifaces", "--quick", "--out", str(folder / "world"), "--work", str(folder / "w")]
        return runner.cli(*argv, **kill)

    assert train("ref")[0] == 0
    seconds = runner.last_seconds
    kill = {"kill_after": random.Random(7).uniform(0, seconds)} if kill_at == "delay" else {"kill_at": kill_at}
    code, log = train("run", **kill)
    assert code in ((0, KILLED) if kill_at == "delay" else (KILLED,)), log
    code, log = train("run")
    assert code == 0, log
    ref, run = tree(root / "ref" / "world"), tree(root / "run" / "world")
    for volatile in ("manifest.json",):
        ref.pop(volatile), run.pop(volatile)
    assert run == ref
    assert leftovers(root / "run") == []
