"""Smoke tests of the benchmark scripts at tiny scale (no timing is asserted)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sd_scale_tiny_runs_every_workload_and_records_its_environment(tmp_path):
    sd_scale = _load("sd_scale")
    out = tmp_path / "r.json"
    sd_scale.main(
        ["--scale", "tiny", "--methods", "esd", "--warmup", "1", "--measure", "2", "--batches", "2", "--out", str(out)]
    )
    result = json.loads(out.read_text())
    esd = result["erasure"]["esd"]
    for kind in ("erasekit", "reference"):
        assert esd[kind]["flops_per_step"] > 0 and esd[kind]["ms_per_step"] > 0
    assert esd["reference"]["config"]["optimizer_states"] == "full" and esd["speedup"] > 0
    assert result["sampling"][0]["batch"] == 2 and result["sampling"][0]["tflops"] > 0
    assert result["run"]["versions"]["torch"] and result["run"]["scale"] == "tiny"
    assert "| esd | erasekit |" in out.with_suffix(".md").read_text()
