"""Data parallelism: the CLI under `accelerate launch` and `torchrun` with 2 CPU processes (gloo) gives the
single-process result. (accelerate starts multi-process CPU runs itself only through MPI; `--multi_gpu` on a machine
without GPUs launches the processes, and erasekit joins them with gloo.)"""

import os
import socket
import subprocess
import sys

import torch

from erasekit import load_patch
from erasekit.cli.main import main

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
    "batch_size=2",
    "--set",
    "progress=false",
]
LR = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(argv: list[str], tmp_path, launcher: str = "torchrun") -> None:
    """Run the CLI in 2 processes with ``accelerate launch --multi_gpu`` or ``torchrun``."""
    port = str(_free_port())
    if launcher == "accelerate":
        head = [
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            port,
        ]
    else:
        head = ["torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port]
    cmd = [sys.executable, "-m", *head, "-m", "erasekit.cli.main", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


def test_erase_data_parallel_matches_single_process(tmp_path):
    _launch([*ERASE, "--out", str(tmp_path / "dp.safetensors")], tmp_path, launcher="accelerate")
    assert main([*ERASE, "--out", str(tmp_path / "single.safetensors")]) == 0
    dp, single = load_patch(tmp_path / "dp.safetensors"), load_patch(tmp_path / "single.safetensors")
    assert dp.deltas.keys() == single.deltas.keys()
    for key, delta in single.deltas.items():
        # same samples, averaged gradients: equal up to reduction order, which Adam may turn into << lr
        torch.testing.assert_close(dp.deltas[key].to_dense(), delta.to_dense(), rtol=0, atol=0.1 * LR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dp.safetensors", "single.safetensors"]


def test_evaluation_sampling_is_sharded_and_gathered(tmp_path):
    argv = [
        "generate",
        "--prompt",
        "a cat",
        "--prompt",
        "a dog",
        "--seeds",
        "0-2",
        "--steps",
        "2",
        "--batch-size",
        "2",
    ]
    _launch([*argv, "--out", str(tmp_path / "dp.png")], tmp_path)
    assert main([*argv, "--out", str(tmp_path / "single.png")]) == 0
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(tmp_path / "dp.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "single.png"), dtype=np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1
