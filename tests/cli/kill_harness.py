"""A fork server for tests/cli/test_kill_resume.py, and the toy world recipe it kills.

Run as a script, it imports the CLI once (torch, diffusers: seconds of CPU) and then, for each JSON request on
stdin, forks a child that runs one call as a fresh ``erasekit`` process would, with its own environment (the
``ERASEKIT_TEST_KILL_AT`` kill point) and its output in a log file; the child may also be SIGKILLed after a delay.
It answers one JSON line per request: the child's exit code (``-9`` when killed) and its wall time. The server
itself never computes with torch, so every child starts from the same clean state.

Request: ``{"target": "module:function", "args": [...], "env": {...}, "log": PATH, "kill_after": seconds|null}``.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path

# ---- the toy world recipe ---------------------------------------------------------------------------------------
TOY_FILES = {"judge": "judge.bin", "encoder": "encoder/weights.bin", "decoder": "decoder.bin"}


def toy_world(out: str, work: str) -> int:
    """Write a three-stage toy world through the recipe framework; each stage writes its file in two halves with a
    kill point (``toy-train:<stage>``) between them, so a kill leaves a half-written file in the build folder."""
    import hashlib

    import torch

    from erasekit._killpoints import kill_point
    from erasekit_worlds.common import verify_world
    from erasekit_worlds.recipes.framework import Stage, WorldRecipe, describe, write_world

    stages = tuple(Stage(name, files=(path.split("/")[0],)) for name, path in TOY_FILES.items())
    recipe = WorldRecipe("toy", "Toy", "toy-v1", stages, ("seed",), lambda root: verify_world(root, ()))

    class Config:
        quick = True

        def to_dict(self):
            return {"seed": 0}

    def train(build):
        for stage in stages:

            def run(stage=stage):
                path = build.tmp / TOY_FILES[stage.name]
                path.parent.mkdir(parents=True, exist_ok=True)
                data = hashlib.sha256(stage.name.encode()).digest() * 4096
                with open(path, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                    kill_point(f"toy-train:{stage.name}")
                    f.write(data[len(data) // 2 :])
                with open(Path(work).parent / "trained.log", "a") as log:
                    log.write(stage.name + "\n")
                return {"seconds": 0.0}

            build.run(stage, run)
        return describe(build, Config(), 0, [], torch.device("cpu"), {}, {})

    write_world(recipe, out, train, overwrite=True, work=work, identity={"seed": 0})
    return 0


# ---- the fork server --------------------------------------------------------------------------------------------
def _child(request: dict) -> None:
    try:
        os.environ.pop("ERASEKIT_TEST_KILL_AT", None)
        os.environ.update(request.get("env", {}))
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        module, _, name = request["target"].partition(":")
        code = getattr(importlib.import_module(module), name)(*request.get("args", []))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code or 0))
    except BaseException:  # noqa: BLE001 - a child must never return into the server loop
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(70)


def _wait(pid: int, kill_after: float | None) -> int:
    deadline = None if kill_after is None else time.monotonic() + kill_after
    while True:
        done, status = os.waitpid(pid, os.WNOHANG if deadline is not None else 0)
        if done:
            return os.waitstatus_to_exitcode(status)
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = None
        else:
            time.sleep(0.002)


def serve() -> None:
    import torch

    import erasekit.cli.main  # noqa: F401 - the imports every child shares
    import erasekit.methods  # noqa: F401
    import erasekit_worlds.recipes.framework  # noqa: F401
    from erasekit.models.tiny import tiny_sd_pipeline

    torch.set_num_threads(1)
    tiny_sd_pipeline()  # diffusers and transformers import their model classes on first use; the tokenizer is cached
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(request)
        code = _wait(pid, request.get("kill_after"))
        print(json.dumps({"code": code, "seconds": time.perf_counter() - started}), flush=True)


if __name__ == "__main__":
    serve()
