"""Parity of erasekit's ESD and UCE with the authors' code on MiniCanvas: both sides erase the same targets from the
shipped pipeline with the same settings, both are scored by the same ``erasekit eval`` (seeds, sampler, judges).

The user fetches the authors' code (erasekit ships none of it) and points the script at it:

    git clone https://github.com/rohitgandikota/unified-concept-editing ref/uce
    git clone https://github.com/rohitgandikota/unified-concept-editing ref/uce2023 && git -C ref/uce2023 checkout bd5fb51
    git clone https://github.com/rohitgandikota/erasing ref/esd
    python benchmarks/parity/minicanvas_parity.py --uce-code ref/uce --uce-2023-code ref/uce2023 --esd-code ref/esd

Each erasure runs in its own process (``runner.py``), timed and with its peak memory (resident set on CPU, allocated
memory on CUDA) taken the same way on both sides; the authors' saved weights become an erasekit patch
(``ErasurePatch.from_diff``) and every patch goes through ``erasekit eval --target T --seeds S``. For the UCE rows
the authors' edited weights are also compared with erasekit's, tensor by tensor (max |Δ| / max |W|), next to the
round-off of a float32 solve of the same system; ``--fixture`` records the authors' weights' figures for the
project's test (tests/methods/test_uce.py). Results: one JSON (written after every row, ``--resume`` skips rows
already in it) and a Markdown table.

Rows (``--rows``): uce-authors (current script), uce-authors-2023, uce-last_word, uce-from_last_word, uce-words_eos
(erasekit's ``keys`` values), esd-authors, esd-authors-fp32 (their code with the models kept in fp32 rather than their
bf16: a diagnostic), esd (ESD-x for style targets, ESD-u for object targets). Settings are the
authors' current defaults (UCE: λ 0.5, guide "art" for styles and "" for objects, the other classes preserved; the
2023 release at its preserve scale max(0.1, 1/n) = 0.1 here and erasekit's from_last_word row with the same; ESD:
200 iterations, lr 5e-5, negative guidance 2 in their parameterisation = 1 in erasekit's, CFG 3) except the ESD
sampler steps (``--esd-steps``, 25 by default to halve CPU time; their default is 50).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().with_name("runner.py")
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_TARGETS = ("style:Ink", "object:apple", "style:Mosaic", "object:car")
ROWS = (
    "uce-authors",
    "uce-authors-2023",
    "uce-last_word",
    "uce-from_last_word",
    "uce-words_eos",
    "esd-authors",
    "esd-authors-fp32",
    "esd",
)
# Diagnostic rows run only when named in --rows.
DIAGNOSTIC_ROWS = ("esd-authors-fp32",)
SOURCES = {
    "uce-authors": "rohitgandikota/unified-concept-editing trainscripts/uce_sd_erase.py (commit 28c81ed)",
    "uce-authors-2023": "rohitgandikota/unified-concept-editing train-scripts/train_erase.py (commit bd5fb51)",
    "esd-authors": "rohitgandikota/erasing esd_sd.py (commit 25613d2)",
}
ESD = {"iterations": 200, "lr": 5e-5, "negative_guidance": 2.0, "guidance": 3.0}  # the authors' current defaults
PROJECTIONS = 1  # fixed projections per tensor recorded in the fixture
# The test's bound on max |Δ| / max |W| against the authors' float32 run, per case: twice the float32 round-off of
# that system (how far a float32 solve of it moves from the float64 one), rounded up to one digit. A different
# key choice moves the weights by 0.1-3 max |W|.
ROUNDOFF_MARGIN = 2.0

logger = logging.getLogger("minicanvas_parity")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--uce-code", help="the authors' UCE repository (current code)")
    p.add_argument("--uce-2023-code", help="the same repository checked out at bd5fb51 (the 2023 release)")
    p.add_argument("--esd-code", help="the authors' ESD repository (rohitgandikota/erasing)")
    p.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS), help="style:NAME / object:NAME")
    p.add_argument(
        "--rows",
        nargs="+",
        default=[r for r in ROWS if r not in DIAGNOSTIC_ROWS],
        choices=ROWS,
        help="which rows to run",
    )
    p.add_argument("--seeds", default="0-1", help="evaluation seeds (default 0-1)")
    p.add_argument("--esd-steps", type=int, default=25, help="ESD sampler steps, both sides (authors' default 50)")
    p.add_argument("--esd-seed", type=int, default=0, help="ESD seed, both sides")
    p.add_argument("--device", default="cpu", help="device of every run")
    p.add_argument("--work", default=None, help="folder for weights and patches (default: a temporary folder)")
    p.add_argument("--out", default=str(RESULTS / "minicanvas_parity.json"), help="results JSON")
    p.add_argument("--md", default=None, help="Markdown table (default: the JSON's name with .md)")
    p.add_argument("--fixture", default=None, help="write the authors' UCE weights' figures here (uce-authors rows)")
    p.add_argument(
        "--fixture-only",
        action="store_true",
        help="only run the authors' current UCE on style:Ink and object:apple and write --fixture (no evaluation)",
    )
    p.add_argument("--resume", action="store_true", help="keep the rows already in --out")
    p.add_argument("--note", default="", help="a line about the machine recorded with the results")
    return p.parse_args(argv)


# ---- what each row runs ----------------------------------------------------------------------------------------


def target_plan(target: str) -> dict:
    """Concept, the authors' guide and preserve list for ``target``, phrased as the world phrases it."""
    from erasekit.plugins import get_world

    kind = target.split(":", 1)[0]
    concept, _, overrides = get_world("minicanvas").plan("uce", target)
    return {
        "kind": kind,
        "concept": concept,
        "guide": "art" if kind == "style" else "",  # the authors' defaults for art / objects
        "preserve": list(overrides["preserve"]),
    }


def runner_args(row: str, plan: dict, args, model_dir: str) -> tuple[list[str], dict]:
    """The runner's command line for ``row`` and the options recorded with the result."""
    common = ["--device", args.device, "--concept", plan["concept"]]
    if row.startswith("uce-authors"):
        side = "authors-uce-2023" if row.endswith("2023") else "authors-uce"
        code = args.uce_2023_code if row.endswith("2023") else args.uce_code
        uce = ["--guide", plan["guide"], "--preserve", *plan["preserve"], "--lam", "0.5"]
        ctype = "art" if plan["kind"] == "style" else "object"
        return ["--side", side, "--code", code, "--model", model_dir, "--concept-type", ctype, *uce, *common], {
            "guide": plan["guide"],
            "lam": 0.5,
            "preserve": plan["preserve"],
        }
    if row.startswith("uce-"):
        options = {"keys": row[4:], "lam": 0.5, "guide": plan["guide"], "preserve": plan["preserve"]}
        if row == "uce-from_last_word":
            options["preserve_scale"] = 0.1  # the 2023 release's default here: max(0.1, 1/(1 + n preserved))
        return ["--side", "erasekit", "--method", "uce", "--model", "minicanvas", *common], options
    variant = "x" if plan["kind"] == "style" else "u"
    if row.startswith("esd-authors"):
        esd = ["--variant", variant, "--iterations", str(ESD["iterations"]), "--lr", str(ESD["lr"])]
        esd += ["--negative-guidance", str(ESD["negative_guidance"]), "--steps", str(args.esd_steps)]
        esd += ["--guidance", str(ESD["guidance"]), "--seed", str(args.esd_seed), "--size", str(args.image_size)]
        if row.endswith("fp32"):  # diagnostic: their code with the models kept in fp32 instead of bf16
            esd += ["--force-dtype", "float32"]
        return ["--side", "authors-esd", "--code", args.esd_code, "--model", model_dir, *esd, *common], {
            "variant": variant,
            **ESD,
            "steps": args.esd_steps,
            "seed": args.esd_seed,
        }
    options = {
        "variant": variant,
        "steps": ESD["iterations"],
        "lr": ESD["lr"],
        "negative_guidance": ESD["negative_guidance"] - 1,  # ε(c) − η'(ε(c) − ε(∅)) = ε(∅) − (η' − 1)(ε(c) − ε(∅))
        "start_guidance": ESD["guidance"],
        "ddim_steps": args.esd_steps,
        "seed": args.esd_seed,
        "progress": False,
    }
    return ["--side", "erasekit", "--method", "esd", "--model", "minicanvas", *common], options


def run_side(row: str, target: str, args, model_dir: str, work: Path) -> dict:
    plan = target_plan(target)
    argv, options = runner_args(row, plan, args, model_dir)
    out = work / f"{row}_{target.replace(':', '_')}"
    out.mkdir(parents=True, exist_ok=True)
    if "--side" in argv and argv[argv.index("--side") + 1] == "erasekit":
        config = out / "config.yaml"
        config.write_text(yaml.safe_dump({"method": argv[argv.index("--method") + 1], **options}))
        argv += ["--config", str(config)]
    subprocess.run([sys.executable, str(RUNNER), *argv, "--out", str(out)], check=True, cwd=ROOT)
    result = json.loads((out / "result.json").read_text())
    result.update({"row": row, "target": target, "concept": plan["concept"], "options": options, "out": str(out)})
    return result


# ---- the authors' weights as a patch, and the weights check ---------------------------------------------------


def authors_patch(weights: Path, out: Path):
    """The erasekit patch that turns the shipped pipeline into the authors' edited one."""
    from safetensors.torch import load_file

    import erasekit
    from erasekit.patch import ErasurePatch

    base = erasekit.load_model("minicanvas")
    unet = copy.deepcopy(base.components["unet"])
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    result = unet.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{weights} holds weights the UNet does not have: {result.unexpected_keys[:3]}")
    patch = ErasurePatch.from_diff(
        {"unet": base.components["unet"]}, {"unet": unet}, metadata={"source": str(weights)}
    )
    patch.save(out)
    return out


def uce_weights_check(row: str, result: dict) -> dict:
    """erasekit's in-memory edit with the row's options against the authors' weights, and float32 round-off."""
    from safetensors.torch import load_file

    import erasekit
    import erasekit.methods.uce as uce_module
    from erasekit.ops import uce_closed_form

    handle = erasekit.load_model("minicanvas")
    params = handle.named_parameters()
    systems = {}

    def spy(w0, keys, values, preserve, preserve_values, lam, scale):
        systems[len(systems)] = (keys, values, preserve, lam, scale)
        return uce_closed_form(w0, keys, values, preserve, preserve_values, lam, scale)

    options = dict(result["options"])
    options.update({"keys": "last_word" if row == "uce-authors" else "from_last_word"})
    if row == "uce-authors-2023":
        options["preserve_scale"] = 0.1
    original, uce_module.uce_closed_form = uce_module.uce_closed_form, spy
    try:
        patch = erasekit.erase(handle, "uce", result["concept"], progress=False, **options)
    finally:
        uce_module.uce_closed_form = original
    theirs = load_file(result["weights"])
    worst, roundoff = 0.0, 0.0
    for i, name in enumerate(patch.deltas):
        w0 = params[name].detach().double()
        ours = w0 + patch.deltas[name].to_dense().double()
        ref = theirs[name.split(".", 1)[1]].double()
        worst = max(worst, float((ours - ref).abs().max() / ref.abs().max()))
        keys, values, preserve, lam, scale = systems[i]
        w32 = _float32_solve(w0.float(), keys.float(), values.float(), preserve.float(), lam, scale)
        roundoff = max(roundoff, float((w32.double() - ours).abs().max() / ours.abs().max()))
    return {"keys": options["keys"], "max_rel_diff": worst, "float32_solve_rel_diff": roundoff}


def _float32_solve(w0, keys, values, preserve, lam, scale) -> torch.Tensor:
    """The same closed form solved entirely in float32: the size of float32 round-off on this system."""
    lhs = lam * w0 + values.T @ keys + scale * (preserve @ w0.T).T @ preserve
    gram = lam * torch.eye(w0.shape[1]) + keys.T @ keys + scale * preserve.T @ preserve
    return torch.linalg.solve(gram, lhs.T).T


def fixture_case(result: dict) -> dict:
    """Figures of the authors' edited weights for tests/methods/test_uce.py (never their weights themselves)."""
    from safetensors.torch import load_file

    import erasekit

    params = erasekit.load_model("minicanvas").named_parameters()
    theirs = load_file(result["weights"])
    check = result["weights_check"]
    tensors, base = {}, {}
    for short, w in sorted(theirs.items()):
        name = f"unet.{short}"
        w = w.float().contiguous()
        base[name] = hashlib.sha256(params[name].detach().float().contiguous().numpy().tobytes()).hexdigest()
        tensors[name] = {
            "max_abs": float(w.abs().max()),
            "sha256": hashlib.sha256(w.numpy().tobytes()).hexdigest(),
            "projections": [[float(f"{x:.8g}") for x in row] for row in projections(w, PROJECTIONS).T.tolist()],
        }
    options = {"keys": "last_word", **result["options"]}
    return {
        "target": result["target"],
        "concept": result["concept"],
        "options": options,
        "base_sha256": base,
        "tensors": tensors,
        "measured_max_rel_diff": check["max_rel_diff"],
        "float32_solve_rel_diff": check["float32_solve_rel_diff"],
        "tolerance": _round_up(ROUNDOFF_MARGIN * check["float32_solve_rel_diff"]),
    }


def _round_up(x: float) -> float:
    """``x`` rounded up to one significant digit (4.9e-5 -> 5e-5, 1.34e-4 -> 2e-4)."""
    exponent = math.floor(math.log10(x))
    return math.ceil(x / 10**exponent) * 10**exponent


def write_fixture(path: str, cases: list[dict]) -> None:
    """The fixture as JSON with each number list on one line."""
    from erasekit._io import write_text

    fixture = {"source": SOURCES["uce-authors"], "cases": cases}
    text = json.dumps(fixture, indent=1)
    text = re.sub(
        r"\[\s*([-+0-9.e,\s]+?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text
    )
    write_text(path, text + "\n")


def projections(w: torch.Tensor, n: int) -> torch.Tensor:
    """``w @ v`` for ``n`` fixed ±1/d vectors (|v|₁ = 1: each entry moves by at most max |Δw|)."""
    g = torch.Generator().manual_seed(0)
    v = (torch.randint(0, 2, (w.shape[1], n), generator=g, dtype=torch.float64) * 2 - 1) / w.shape[1]
    return w.double() @ v


# ---- evaluation and tables -------------------------------------------------------------------------------------


def evaluate(patch: Path, target: str, seeds: str, device: str) -> dict:
    report = patch.with_suffix(".eval.json")
    cmd = [sys.executable, "-m", "erasekit.cli.main", "eval", "--model", "minicanvas", "--suite", "minicanvas"]
    cmd += ["--patch", str(patch), "--target", target, "--seeds", seeds, "--json", str(report), "--device", device]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    metrics = json.loads(report.read_text())["metrics"]
    return {k: metrics.get(k) for k in ("ua", "ua_heldout", "ira", "cra")}


def markdown(results: dict) -> str:
    head = "| target | method | side | UA | held-out UA | IRA | CRA | erase s | peak memory MB |\n"
    head += "|---|---|---|---|---|---|---|---|---|\n"
    lines = []
    for r in sorted(results["rows"], key=lambda r: (r["target"], ROWS.index(r["row"]))):
        method, side = _label(r)
        pct = [f"{100 * r[k]:.1f}" if r.get(k) is not None else "-" for k in ("ua", "ua_heldout", "ira", "cra")]
        mem = r["peak_gpu_bytes"] if r.get("peak_gpu_bytes") else r["peak_rss_bytes"]
        lines.append(
            f"| {r['target']} | {method} | {side} | {' | '.join(pct)} | {r['seconds']:.1f} | {mem / 2**20:.0f} |"
        )
    return head + "\n".join(lines) + "\n"


def _label(r: dict) -> tuple[str, str]:
    row = r["row"]
    if row == "uce-authors":
        return "UCE", "authors, current (last word)"
    if row == "uce-authors-2023":
        return "UCE", "authors, 2023 (from last word)"
    if row.startswith("uce-"):
        return "UCE", f"erasekit, keys: {row[4:]}"
    side = {"esd-authors": "authors (bf16, as shipped)", "esd-authors-fp32": "authors, models in fp32 (diagnostic)"}
    return f"ESD-{r['options']['variant']}", side.get(row, "erasekit")


def main(argv: list[str] | None = None) -> int:
    import erasekit
    from erasekit._env import environment
    from erasekit._io import write_json, write_text

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    out = Path(args.out)
    md = Path(args.md) if args.md else out.with_suffix(".md")
    pipe = erasekit.load_model("minicanvas").pipe
    model_dir = str(pipe.name_or_path)
    args.image_size = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    results = json.loads(out.read_text()) if args.resume and out.is_file() else {"rows": []}
    results.update({"environment": environment(args.device), "seeds": args.seeds, "note": args.note})
    results["settings"] = {
        "esd": {**ESD, "steps": args.esd_steps, "seed": args.esd_seed},
        "image_size": args.image_size,
    }
    done = {(r["row"], r["target"]) for r in results["rows"]}
    work = Path(args.work or tempfile.mkdtemp(prefix="parity_"))
    if args.fixture_only:
        if not args.fixture:
            raise SystemExit("--fixture-only needs --fixture PATH.")
        cases = []
        for target in ("style:Ink", "object:apple"):
            result = run_side("uce-authors", target, args, model_dir, work)
            result["weights_check"] = uce_weights_check("uce-authors", result)
            logger.info("%s weights check: %s", target, result["weights_check"])
            cases.append(fixture_case(result))
        write_fixture(args.fixture, cases)
        return 0
    for target in args.targets:
        for row in args.rows:
            if (row, target) in done:
                continue
            logger.info("%s on %s", row, target)
            result = run_side(row, target, args, model_dir, work)
            patch = Path(result["weights"])
            if row in ("esd-authors", "esd-authors-fp32", "uce-authors", "uce-authors-2023"):
                if row.startswith("uce"):
                    result["weights_check"] = uce_weights_check(row, result)
                    logger.info("weights check: %s", result["weights_check"])
                patch = authors_patch(patch, patch.with_name("authors_patch.safetensors"))
            result.update(evaluate(patch, target, args.seeds, args.device))
            logger.info("%s %s: %s", row, target, {k: result[k] for k in ("ua", "ua_heldout", "ira", "cra")})
            results["rows"].append(result)
            write_json(out, results)
            write_text(md, markdown(results))
    if args.fixture:
        cases = [fixture_case(r) for r in results["rows"] if r["row"] == "uce-authors"]
        write_fixture(args.fixture, cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
