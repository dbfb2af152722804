"""benchmarks/sd15_cpu.py: how it measures a child process, its options and results file, and (slow) a whole run
at toy widths that resumes step by step. No timing is asserted."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("sd15_cpu", ROOT / "benchmarks" / "sd15_cpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load()


def test_measure_reports_the_childs_own_peak_memory_and_exit_status(tmp_path):
    grow = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('done')"
    entry = bench.measure([sys.executable, "-c", grow], tmp_path / "grow.log")
    assert entry["returncode"] == 0 and entry["peak_rss_bytes"] >= 300 * 2**20
    assert (tmp_path / "grow.log").read_text().strip() == "done"
    small = bench.measure([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "small.log")
    assert small["returncode"] == 3 and small["peak_rss_bytes"] < entry["peak_rss_bytes"]


def test_default_results_of_the_full_size_go_to_the_committed_files_and_trials_stay_in_the_workdir(tmp_path):
    full = bench.parse_args([])
    assert Path(full.out).as_posix().endswith("benchmarks/results/sd15_cpu.json")
    assert bench.markdown_path(Path(full.out)) == ROOT / "docs" / "results" / "sd15_cpu.md"
    trial = bench.parse_args(["--arch", "sd15-tiny", "--workdir", str(tmp_path)])
    assert Path(trial.out).parent == tmp_path and bench.markdown_path(Path(trial.out)).suffix == ".md"
    assert bench.parse_args(["--only", "info, salun"]).steps == ["salun", "info"]  # always in dependency order


@pytest.mark.parametrize("argv", [["--only", "salun,nope"], ["--only", ","], ["--resolution", "100"]])
def test_bad_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as err:
        bench.parse_args(argv)
    assert err.value.code == 2 and "error:" in capsys.readouterr().err


def test_results_made_with_other_settings_are_kept_unless_forced(tmp_path):
    out = tmp_path / "r.json"
    args = bench.parse_args(["--arch", "sd15-tiny", "--workdir", str(tmp_path), "--out", str(out)])
    out.write_text(json.dumps({"settings": {"arch": "other"}, "steps": {"salun": {"status": "ok"}}}))
    with pytest.raises(SystemExit, match="other settings; pass --force"):
        bench.load_results(args, out)
    args.force = True
    assert bench.load_results(args, out)["steps"] == {}


def test_bars_are_met_only_by_measured_figures_within_their_limits():
    ok = {"status": "ok", "peak_rss_bytes": 2e9}
    steps = {name: dict(ok) for name in bench.STEPS}
    steps["salun"].update(output_bytes=1.2e9, peak_rss_bytes=17e9)
    steps["python"]["python"] = {"apply_remove_seconds": 3.0, "remove_bit_exact": True}
    bars = bench.bars(steps)
    assert bars["every_step_succeeded"]["met"] is True
    assert bars["peak_rss_bytes"] == {"value": 17e9, "limit": 16e9, "met": False}
    assert bars["salun_patch_bytes"]["met"] is False and bars["apply_remove_seconds"]["met"] is True
    assert bars["remove_bit_exact"]["met"] is True
    steps.pop("python")
    bars = bench.bars(steps)
    assert bars["apply_remove_seconds"]["met"] is None and bars["every_step_succeeded"]["value"] == ["python"]


@pytest.mark.slow
def test_a_toy_width_run_records_every_step_and_resumes(tmp_path, capsys):
    argv = ["--arch", "sd15-tiny", "--resolution", "64", "--workdir", str(tmp_path)]
    result = bench.main(argv)
    assert all(result["steps"][s]["status"] == "ok" for s in bench.STEPS)
    assert result["steps"]["python"]["python"]["remove_bit_exact"] is True
    assert result["steps"]["lora"]["lora"]["exported"] > 0
    assert all(b["met"] for b in result["bars"].values())
    saved = json.loads((tmp_path / "sd15_cpu_sd15-tiny.json").read_text())
    assert saved["steps"].keys() == result["steps"].keys()
    assert (tmp_path / "sd15_cpu_sd15-tiny.md").read_text().startswith("# Stable Diffusion 1.5 size on CPU")
    capsys.readouterr()
    again = bench.main([*argv, "--only", "info"])
    assert "already recorded" in capsys.readouterr().out
    assert again["steps"]["info"] == result["steps"]["info"]
    forced = bench.main([*argv, "--only", "info", "--force"])
    assert forced["steps"]["info"]["status"] == "ok" and forced["steps"]["build"] == result["steps"]["build"]
