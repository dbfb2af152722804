"""Smoke tests of the benchmark scripts at tiny scale (no timing is asserted)."""

import importlib.util
import json
import re
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]
BENCH = ROOT / "benchmarks"
# the maintained benchmarks: each has a test here or in tests/worlds/, and its results are named after it
MAINTAINED = {
    "minicanvas_all_targets",
    "minicanvas_data_check",
    "minicanvas_eval",
    "minicanvas_fidelity",
    "minicanvas_generate",
    "minicanvas_multi_concept",
    "minicanvas_robustness",
    "minicanvas_unlearning",
    "minifaces_all_targets",
    "minifaces_pair_probe",
    "minifaces_unlearning",
    "sd15_cpu",
    "sd_scale",
}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_holds_the_maintained_scripts_and_results_named_by_what_they_measure():
    assert {p.stem for p in BENCH.glob("*.py")} == MAINTAINED
    results = [p for p in (BENCH / "results").rglob("*") if p.is_file()] + list((ROOT / "docs" / "results").glob("*"))
    dated = re.compile(r"\d{4}-\d{2}-\d{2}|sess\w*\d", re.IGNORECASE)  # a date or a numbered work period
    names = [p.relative_to(ROOT).as_posix() for p in results]
    assert not [n for n in names if dated.search(n)]
    writers = tuple(f"{name.split('_')[0]}_" for name in MAINTAINED)  # minicanvas_, minifaces_, sd_
    assert not [p.name for p in results if p.parent.name == "results" and not p.name.startswith(writers)]


@pytest.mark.parametrize("name", sorted(MAINTAINED))
def test_every_benchmark_answers_help_and_writes_under_results_by_default(name, capsys):
    module = _load(name)
    with pytest.raises(SystemExit) as done:
        module.parse_args(["--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage:")
    if name != "sd_scale":  # sd_scale takes --out always: its numbers belong to the machine that ran it
        out = module.parse_args([]).out
        assert out is None or Path(out).as_posix().endswith(f"benchmarks/results/{name}.json")


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


def test_minicanvas_unlearning_resume_measures_only_what_is_missing(tmp_path, monkeypatch):
    """The control flow of a resumed benchmark (evaluation and erasure stubbed: no model is run); the real run on a
    quick world is tests/worlds/test_minicanvas_recipe.py's."""
    import types

    import erasekit
    import erasekit.models
    import erasekit_worlds.minicanvas.suite

    bench = _load("minicanvas_unlearning")
    calls = []

    def fake_evaluate(handle, suite, target, patch, seeds, args, n_seeds):
        calls.append(("base" if patch is None else patch.method, target))
        metrics = {"ua": 0.5, "ua_heldout": 0.5, "ira": 0.9, "cra": 0.9, "erase_seconds": None}
        dists = {kind: torch.tensor([[0.5, 0.5]]) for kind in ("style", "object")}
        return {"metrics": metrics, "sampling_seconds": {"total": 0.0}}, dists

    def fake_erase(handle, method, concept, anchor=None, **config):
        return types.SimpleNamespace(method=method, metadata={"config": config})

    monkeypatch.setattr(bench, "evaluate_run", fake_evaluate)
    monkeypatch.setattr(erasekit, "erase", fake_erase)
    monkeypatch.setattr(erasekit_worlds.minicanvas.suite, "minicanvas_suite", lambda world: None)
    monkeypatch.setattr(erasekit.models, "load_pipeline", lambda *a, **k: None)
    monkeypatch.setattr(erasekit.models, "DiffusionHandle", lambda pipe: None)
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    common = ["--seeds", "0", "--out", str(out), "--md", str(md), "--targets", "object:apple", "style:Ink"]

    bench.main([*common, "--methods", "uce"])
    assert calls == [("base", "object:apple"), ("uce", "object:apple"), ("base", "style:Ink"), ("uce", "style:Ink")]
    calls.clear()
    bench.main([*common, "--methods", "uce", "--resume"])
    assert calls == []  # everything measured: nothing is evaluated again
    bench.main([*common, "--methods", "uce", "esd", "--resume"])
    assert calls == [("esd", "object:apple"), ("esd", "style:Ink")]  # the unpatched rows are kept, not re-measured
    result = json.loads(out.read_text())
    assert sorted((r["method"], r["target"]) for r in result["runs"]) == [
        ("esd", "object:apple"),
        ("esd", "style:Ink"),
        ("uce", "object:apple"),
        ("uce", "style:Ink"),
    ]
    assert [r["method"] for r in result["reference"]] == ["base", "base"] and "| uce | style:Ink |" in md.read_text()
    with pytest.raises(SystemExit, match="seeds=\\[0\\]"):  # rows sampled with other seeds are not comparable
        bench.main([*common[2:], "--seeds", "0-1", "--methods", "doco", "--resume"])
    assert calls == [("esd", "object:apple"), ("esd", "style:Ink")]
    # a narrower resumed invocation keeps what the earlier ones recorded for their rows (gold worlds included)
    result["settings"]["gold"] = {"style:Ink": "/gone/no_ink"}
    result["settings"]["gold_worlds"] = {"style:Ink": {"exclude": ["style:Ink"]}}
    out.write_text(json.dumps(result))
    bench.main(
        ["--seeds", "0", "--out", str(out), "--md", str(md), "--targets", "style:Ink", "--methods", "esd", "--resume"]
    )
    result = json.loads(out.read_text())
    settings = result["settings"]
    assert sorted(result["summary"]) == ["esd/object", "esd/style", "uce/object", "uce/style"]  # not esd's alone
    assert settings["methods"] == ["esd", "uce"] and settings["targets"] == ["style:Ink", "object:apple"]
    assert settings["gold"] == {"style:Ink": "/gone/no_ink"} and settings["gold_worlds"]["style:Ink"]["exclude"]
    # a retrained gold world on resume: the gold row and the runs are measured again, the first gold row stays and
    # the new world's scores sit beside it
    gold, out = tmp_path / "gold", tmp_path / "g.json"
    gold.mkdir()
    manifest = {"exclude": ["style:Ink"], "created": "first"}
    (gold / "manifest.json").write_text(json.dumps(manifest))
    argv = ["--seeds", "0", "--out", str(out), "--md", str(md), "--targets", "style:Ink", "--methods", "uce"]
    argv += ["--gold", f"style:Ink={gold}"]
    calls.clear()
    bench.main(argv)
    assert calls == [("base", "style:Ink")] * 2 + [("uce", "style:Ink")]  # gold (unpatched), base, uce
    (gold / "manifest.json").write_text(json.dumps({**manifest, "created": "later"}))
    bench.main([*argv, "--resume"])
    assert calls[3:] == []  # nothing left to measure: the gold world is not evaluated again
    result = json.loads(out.read_text())
    result["runs"] = []
    out.write_text(json.dumps(result))
    bench.main([*argv, "--resume"])
    assert calls[3:] == [("base", "style:Ink"), ("uce", "style:Ink")]  # the gold world, then the missing run
    result = json.loads(out.read_text())
    gold_row = result["reference"][0]
    assert gold_row["created"] == "first" and [m["created"] for m in gold_row["remeasured"]] == ["later"]
    assert result["runs"][0]["kl_to_gold"]["gold_created"] == "later"


def test_minicanvas_robustness_resume_adds_robust_rows_beside_plain_ones(tmp_path, monkeypatch):
    """The control flow of the robustness table (erasure and attacks stubbed: no model is run; the attacks
    themselves are tested in tests/attacks/): plain rows, robust rows with their options, resume and its checks."""
    bench = _load("minicanvas_robustness")
    calls = []

    def fake_row(method, target, args, configs, gold, seeds, options=None):
        calls.append((method, target, dict(options or {})))
        rates = {"patched": 0.1, "base": 1.0}
        return {
            "method": method,
            "variant": "robust" if options else "plain",
            "options": options or {},
            "target": target,
            "erase_seconds": 1.0,
            "summary": {"quantize": {"measure": "highest concept rate over formats", **rates}},
            "report": {"run": {"plain_rates": rates, "wall_seconds": {"total": 2.0}}},
        }

    monkeypatch.setattr(bench, "attack_row", fake_row)
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    common = ["--out", str(out), "--md", str(md), "--faces", "--targets", "style:Ink", "--attacks", "quantize"]
    bench.main([*common, "--methods", "uce", "salun"])
    assert calls == [("uce", "style:Ink", {}), ("salun", "style:Ink", {})]
    calls.clear()
    bench.main([*common, "--methods", "uce", "salun", "--robust", "--robust-set", "robust_every=5", "--resume"])
    assert calls == [("salun", "style:Ink", {"robust_every": 5})]  # uce has no robust training
    result = json.loads(out.read_text())
    assert [(r["method"], r["variant"]) for r in result["rows"]] == [
        ("uce", "plain"),
        ("salun", "plain"),
        ("salun", "robust"),
    ]
    assert result["settings"]["robust"] == {"robust_every": 5} and len(result["runs"]) == 2
    table = md.read_text()
    assert "| salun (robust) | style:Ink | 10 (100) | - | 10 (100) | 1 | 2 |" in table
    with pytest.raises(SystemExit, match="robust_every"):  # robust rows erased otherwise are not comparable
        bench.main([*common, "--methods", "doco", "--robust", "--resume"])
    with pytest.raises(SystemExit, match="seeds"):
        bench.main([*common, "--methods", "doco", "--seeds", "0-1", "--resume"])
    with pytest.raises(SystemExit, match="robust training on"):
        bench.main([*common, "--methods", "doco", "--robust", "--robust-set", "robust_every=0"])
    bench.main([*common, "--methods", "uce", "--resume"])  # a narrower invocation keeps the others' settings
    assert json.loads(out.read_text())["settings"]["methods"] == ["uce", "salun"]
    assert calls == [("salun", "style:Ink", {"robust_every": 5})]
    diagnosis = {"int8": {"median_ratio": 2.0, "per_tensor": {"unet.w": {}}}}
    report = bench.compact({"attacks": {"quantize": {"results": {"delta_vs_bin": diagnosis}}}})
    assert report["attacks"]["quantize"]["results"]["delta_vs_bin"] == {"int8": {"median_ratio": 2.0}}


def test_environment_records_the_machine_and_its_current_speed():
    from erasekit._env import cpu_matmul_gflops, environment

    env = environment("cpu")
    assert env["device"] == "cpu" and env["versions"]["torch"] and env["torch_threads"] >= 1
    assert "cpu_model" in env and env["cpu_matmul_gflops"] > 0
    assert cpu_matmul_gflops(size=64, seconds=0.0) > 0  # one timed repeat at least, even with no time budget


def test_results_record_paths_inside_the_repository_relative_to_it(tmp_path):
    from erasekit._env import recorded_path

    assert recorded_path(tmp_path / "worlds" / "w", tmp_path) == "worlds/w"  # no machine's home in a results file
    assert recorded_path(tmp_path / "w", tmp_path / "repo") == str((tmp_path / "w").resolve())  # outside: absolute


def test_minicanvas_unlearning_overrides_parse_like_set_and_fail_before_any_work():
    import pytest

    bench = _load("minicanvas_unlearning")
    args = bench.parse_args(["--methods", "doco", "--targets", "style:Ink", "--set", "doco.lr=1e-5", "doco.steps=3"])
    assert bench.load_config(args)["overrides"]["doco"] == {"lr": 1e-5, "steps": 3}  # YAML alone reads "1e-5" as str
    for bad, message in [("doco.lr=fast", "lr must be float"), ("doco.nope=1", "Unknown option 'nope'")]:
        args = bench.parse_args(["--methods", "doco", "--targets", "style:Ink", "--set", bad])
        with pytest.raises(SystemExit, match=message):
            bench.load_config(args)
    with pytest.raises(SystemExit, match="METHOD.KEY=VALUE"):
        bench.load_config(bench.parse_args(["--targets", "style:Ink", "--set", "lr=1e-5"]))


def test_minifaces_unlearning_on_the_quick_world_writes_rows_and_resumes(minifaces_world, tmp_path):
    bench = _load("minifaces_unlearning")
    out = tmp_path / "r.json"
    common = [
        "--world",
        str(minifaces_world),
        "--seeds",
        "0-3",
        "--no-fid",
        "--out",
        str(out),
        "--threads",
        str(torch.get_num_threads()),
    ]
    fast = ["--set", "steps=1", "batch_size=2", "progress=false"]
    assert bench.main([*common, "--targets", "glasses", *fast, "--patches", str(tmp_path / "p")]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["target"] == "glasses" and row["steps_run"] == 1 and row["patch_bytes"] > 0
    assert set(row["meets"]) == {
        "drawn_before_ge_10pct",
        "rate_after_le_2pct",
        "others_within_3pts",
        "erase_within_5min",
    }
    assert result["run"]["seeds"] == [0, 1, 2, 3] and result["run"]["environment"]["versions"]["torch"]
    assert "| glasses |" in out.with_suffix(".md").read_text()
    # --resume keeps the glasses row and erases only the new target
    assert bench.main([*common, "--targets", "glasses", "a smiling face", *fast, "--resume"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["target"] for r in rows] == ["glasses", "smile"] and rows[0] == row
    try:
        bench.main([*common, "--targets", "glasses", "--set", "steps=2", "--resume"])
    except SystemExit as e:
        assert "other seeds or overrides" in str(e)
    else:
        raise AssertionError("a resume with other overrides must be refused")
    # --set-for: one target's own options on top of --set, recorded on its row and in the table
    per = tmp_path / "per.json"
    argv = [
        *common[:-4],
        "--threads",
        str(torch.get_num_threads()),
        "--out",
        str(per),
        "--targets",
        "glasses",
        "smile",
        *fast,
    ]
    assert bench.main([*argv, "--set-for", "a smiling face", "steps=2", "lr=0.003"]) == 0
    rows = json.loads(per.read_text())["rows"]
    assert [r["steps_run"] for r in rows] == [1, 2] and rows[1]["config"]["lr"] == 0.003
    assert rows[0]["overrides"] == {"steps": 1, "batch_size": 2, "progress": False}
    assert "smile: {'steps': 2, 'lr': 0.003}" in per.with_suffix(".md").read_text()
    for bad, message in [(["smile", "lr=1"], "--targets does not erase"), (["lr=1"], "a target then KEY=VALUE")]:
        try:
            bench.main([*common[:-4], "--out", str(per), "--targets", "glasses", *fast, "--set-for", *bad])
        except SystemExit as e:
            assert message in str(e)
        else:
            raise AssertionError(f"--set-for {bad} must be refused")
    # --retain-others: each target keeps every other attribute, as the captions say them
    assert bench.other_attributes("glasses")[:2] == ["a smile", "a hat"]
    assert bench.other_attributes("hat")[-1] == "black hair | brown hair | blond hair | red hair"
    assert not any("hair" in a for a in bench.other_attributes("hair_red"))
    kept = tmp_path / "kept.json"
    argv = [
        *common[:-4],
        "--threads",
        str(torch.get_num_threads()),
        "--out",
        str(kept),
        "--targets",
        "beard",
        *fast,
        "--retain-others",
    ]
    assert bench.main(argv) == 0
    (row,) = json.loads(kept.read_text())["rows"]
    assert "a beard" not in row["config"]["retain"] and "a smile" in row["config"]["retain"]
    assert "retain = every other attribute" in kept.with_suffix(".md").read_text()


def test_minifaces_pair_probe_measures_a_world_continues_it_and_reads_checkpoints(minifaces_world, tmp_path):
    from erasekit_worlds.minifaces.data import BINARY_ATTRIBUTES

    probe = _load("minifaces_pair_probe")
    out, saved = tmp_path / "p.json", tmp_path / "g.safetensors"
    common = [
        "--world",
        str(minifaces_world),
        "--pairs",
        "3",
        "--samples",
        "6",
        "--threads",
        str(torch.get_num_threads()),
    ]
    argv = [*common, "--steps", "2", "--set", "batch_size=4", "--set", "flip_weights={earrings: 3}"]
    argv += ["--set", "region_weight=1"]
    assert probe.main([*argv, "--set", "pair_distance=mse", "--out", str(out), "--save-generator", str(saved)]) == 0
    result = json.loads(out.read_text())
    for when in ("before", "after"):
        assert set(result[when]["pair_response"]) == set(BINARY_ATTRIBUTES)
        assert all(0 <= r["agreement"] <= 1 for r in result[when]["pair_response"].values())
        assert set(result[when]["mapping_norms"]["attributes"]) == set(BINARY_ATTRIBUTES)
        assert 0 <= result[when]["max_frequency_difference_points"] <= 100
    assert result["config"]["flip_weights"] == {"earrings": 3.0} and result["config"]["pair_distance"] == "mse"
    assert result["config"]["region_weight"] == 1.0
    assert result["config"]["steps"] == 2 and saved.stat().st_size > 0 and result["environment"]["versions"]
    # --checkpoint measures a training checkpoint's EMA generator against the world's judge

    from erasekit_worlds.recipes.minifaces.train_gan import GanTrainConfig, train_gan

    manifest = json.loads((minifaces_world / "manifest.json").read_text())
    cfg = GanTrainConfig(**{**manifest["config"]["gan"], "steps": 3, "batch_size": 4})
    ckpt = tmp_path / "gan.checkpoint.safetensors"
    train_gan(None, cfg, 0, torch.device("cpu"), checkpoint=ckpt, checkpoint_every=2)
    assert probe.main([*common, "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    measured = json.loads(out.read_text())
    assert measured["checkpoint"]["steps_done"] == 2 and set(measured["before"]["pair_response"]) == set(
        BINARY_ATTRIBUTES
    )
    try:
        probe.main([*common, "--steps", "1", "--set", "flip_weights={earings: 3}"])
    except ValueError as e:
        assert "unknown attribute" in str(e)
    else:
        raise AssertionError("a misspelt attribute must be refused")


def test_sd_scale_builds_sdxl_base_and_sd3_medium_at_full_size():
    """The published architectures' parameter counts, built on the meta device (nothing is allocated)."""

    sd_scale = _load("sd_scale")

    def count(module):
        return sum(p.numel() for p in module.parameters())

    sdxl = sd_scale.sdxl_components("meta", torch.bfloat16)
    assert {k: count(m) for k, m in sdxl.items()} == {
        "unet": 2_567_463_684,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
    }
    assert sdxl["unet"].config.cross_attention_dim == 768 + 1280  # both encoders' widths
    sd3 = sd_scale.sd3_components("meta", torch.bfloat16)
    assert {k: count(m) for k, m in sd3.items()} == {
        "transformer": 2_028_328_000,
        "vae": 83_819_683,
        "text_encoder": 123_650_304,
        "text_encoder_2": 694_659_840,
        "text_encoder_3": 4_762_310_656,
    }
    assert sd3["transformer"].config.pooled_projection_dim == 768 + 1280
    assert sd_scale.sd3_components("meta", torch.bfloat16, t5=False)["text_encoder_3"] is None


@pytest.mark.parametrize("scale", ["tiny-sdxl", "tiny-sd3"])
def test_sd_scale_smoke_on_tiny_sdxl_and_sd3(scale, tmp_path):
    sd_scale = _load("sd_scale")
    out = tmp_path / "r.json"
    argv = ["--scale", scale, "--methods", "esd", "--warmup", "1", "--measure", "2", "--batches", "1"]
    result = sd_scale.main([*argv, "--no-reference", "--out", str(out)])
    assert result["erasure"]["esd"]["erasekit"]["flops_per_step"] > 0 and result["run"]["scale"] == scale
    assert result["sampling"][0]["tflops"] > 0


def test_all_target_rows_measured_under_another_preset_or_plan_are_measured_again():
    """A row stays in the all-target JSON only while it shows what the world's defaults give now."""
    from erasekit.presets import resolve_erasure

    canvas = _load("minicanvas_all_targets")
    resolved = resolve_erasure("salun", "minicanvas", "Ink style")
    settings = resolved.preset.settings("style")
    row = {"method": "salun", "target": "style:Ink", "concept": "Ink style", "anchor": resolved.anchor}
    row.update(preset="minicanvas/salun", config={**settings, "seed": 0})  # a row from before rows kept the record
    assert canvas.measured_with_current_preset(row, "minicanvas")
    assert not canvas.measured_with_current_preset({**row, "config": {**settings, "lr": 1.0}}, "minicanvas")
    assert canvas.measured_with_current_preset({**row, "preset_record": resolved.record()}, "minicanvas")


def test_all_targets_variant_rows_carry_their_options_and_their_distance_to_the_baseline(tmp_path, monkeypatch):
    """``--set`` reaches every erasure of its method, is recorded, keeps its rows apart from other options', and
    ``--baseline`` puts each row's distance to the presets' row in the row, its checks and the table."""
    canvas = _load("minicanvas_all_targets")
    seen = []

    def erase_row(handle, spec, method, target, args, options=None):
        seen.append((method, target, options))
        row = {"method": method, "target": target, "concept": f"{target} concept", "anchor": None}
        row.update(preset="minicanvas/salun", preset_record={}, config={}, erase_seconds=90.0, cpu_matmul_gflops=200)
        return row, None

    metrics = {"ua": 0.99, "ua_heldout": 0.98, "ira": 0.95, "cra": 0.97}
    monkeypatch.setattr(canvas, "erase_row", erase_row)
    monkeypatch.setattr(canvas, "evaluate_row", lambda *a: dict(metrics))
    monkeypatch.setattr(canvas, "measured_with_current_preset", lambda row, spec: True)
    base = {"settings": {"seeds": [0], "steps": 25, "guidance": 7.5}, "rows": []}
    base["rows"].append({"method": "salun", "target": "style:Ink", "metrics": {"ua": 1.0, "ira": 0.99, "cra": 0.97}})
    (tmp_path / "base.json").write_text(json.dumps(base))
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    argv = ["--methods", "salun", "--targets", "style:Ink", "object:cup", "--seeds", "0"]
    argv += ["--set", "salun.robust_every=10", "--baseline", str(tmp_path / "base.json")]
    canvas.main([*argv, "--out", str(out), "--md", str(md)])
    assert seen == [("salun", "style:Ink", {"robust_every": 10}), ("salun", "object:cup", {"robust_every": 10})]
    result = json.loads(out.read_text())
    assert result["settings"]["overrides"] == {"salun": {"robust_every": 10}}
    ink, cup = result["rows"]
    assert ink["vs_baseline"] == {"ua": -0.01, "ira": -0.04, "cra": 0.0} and "vs_baseline" not in cup
    assert ink["meets"]["ua_within_2_of_baseline"] and not ink["meets"]["ira_within_2_of_baseline"]
    table = md.read_text()
    assert "salun.robust_every=10" in table and "| -1.0 / -4.0 / +0.0 |" in table
    with pytest.raises(SystemExit, match="robust_every"):  # rows of other options belong in another file
        canvas.main([*argv[:-4], "--set", "salun.robust_every=5", "--out", str(out), "--md", str(md)])
    with pytest.raises(SystemExit, match="no_such_option"):  # an unknown option fails before any erasure
        canvas.main([*argv[:-4], "--set", "salun.no_such_option=1", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="METHOD.KEY"):
        canvas.main([*argv[:-4], "--set", "doco.steps=1", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="no such file"):
        canvas.main([*argv[:-1], str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.json")])


def test_multi_concept_set_reaches_every_erasure_is_recorded_and_keeps_its_rows_apart(tmp_path, monkeypatch):
    multi = _load("minicanvas_multi_concept")
    seen = []

    def erase(handle, spec, method, targets, mode, options=None):
        seen.append((method, mode, options))
        return types.SimpleNamespace(metadata={"config": {"method": method, **(options or {})}}), 60.0

    by_class = {"Watercolor": 0.0, "Ink": 0.02, "Pixel": 0.0, "Sketch": 0.9, "Neon": 0.94}
    monkeypatch.setattr(multi, "erase", erase)
    monkeypatch.setattr(multi, "_evaluate", lambda *a: {"style_accuracy_by_class": by_class, "cra": 0.93})
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    argv = ["--methods", "doco", "--modes", "at_once", "--seeds", "0", "--set", "doco.num_anchor=48"]
    multi.main([*argv, "--out", str(out), "--md", str(md)])
    assert seen == [("doco", "at_once", {"num_anchor": 48})]
    result = json.loads(out.read_text())
    assert result["settings"]["overrides"] == {"doco": {"num_anchor": 48}}
    (row,) = result["rows"]
    assert row["metrics"]["ua"]["style:Ink"] == 0.98 and row["metrics"]["ira"] == 0.92 and row["meets"]
    assert "doco.num_anchor=48" in md.read_text()
    with pytest.raises(SystemExit, match="num_anchor"):  # rows of other options belong in another file
        multi.main([*argv[:-1], "doco.num_anchor=32", "--out", str(out), "--md", str(md)])
    with pytest.raises(SystemExit, match="METHOD.KEY"):
        multi.main([*argv[:-1], "salun.steps=1", "--out", str(tmp_path / "x.json")])


def test_minifaces_all_targets_set_reaches_every_erasure_is_recorded_and_keeps_its_rows_apart(tmp_path, monkeypatch):
    """``--set`` adds its options to every erasure on top of the world's preset, is recorded and named in the table,
    keeps its rows apart from other options' and fails on an unknown option before any erasure (erasure and
    evaluation stubbed)."""
    from erasekit.presets import resolve_erasure

    faces = _load("minifaces_all_targets")
    rows = faces._rows_module()
    seen = []

    def run_target(spec, suite, concept, seeds, overrides, options):
        seen.append((concept, overrides))
        resolved = resolve_erasure("text_to_unlearn", spec, concept, overrides=overrides)
        row = {"target": suite.parse_targets(concept)[0], "concept": concept, "config": {}, "anchor": resolved.anchor}
        return {**row, "preset": resolved.record(), "meets": {"rate_after_le_2pct": True}}

    stub = types.SimpleNamespace(
        BARS=rows.BARS, parse_overrides=rows.parse_overrides, markdown=lambda result: "| rows |", run_target=run_target
    )
    monkeypatch.setattr(faces, "_rows_module", lambda: stub)
    monkeypatch.setattr(faces, "cpu_matmul_gflops", lambda: 200.0)
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    argv = ["--targets", "glasses", "brown hair", "--seeds", "0", "--set", "steps=900", "retain_weight=0.2"]
    faces.main([*argv, "--out", str(out), "--md", str(md)])
    options = {"steps": 900, "retain_weight": 0.2}
    assert seen == [("glasses", {"progress": False, **options}), ("brown hair", {"progress": False, **options})]
    assert json.loads(out.read_text())["run"]["overrides"] == options
    assert "`steps=900, retain_weight=0.2`" in md.read_text()
    faces.main([*argv, "--out", str(out), "--md", str(md)])  # resumed with the same options: nothing to run again
    assert len(seen) == 2
    with pytest.raises(SystemExit, match="steps"):  # rows of other options belong in another file
        faces.main([*argv[:-2], "steps=800", "--out", str(out), "--md", str(md)])
    with pytest.raises(SystemExit, match="no_such_option"):
        faces.main([*argv[:-2], "no_such_option=1", "--out", str(tmp_path / "x.json"), "--md", str(md)])
    assert len(seen) == 2
