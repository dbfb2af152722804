"""A Markdown table of ``minifaces_unlearning.py`` result files (one row per file and target): what each run changed
and what it measured. Used for the Text-to-Unlearn tuning runs in ``benchmarks/results/minifaces_t2u_tuning_*``.

Usage:
    python benchmarks/summarize_minifaces_tuning.py benchmarks/results/minifaces_t2u_tuning_session14/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def rows(path: Path) -> list[str]:
    result = json.loads(path.read_text(encoding="utf-8"))
    run, out = result["run"], []
    for row in result["rows"]:
        m, t = row["metrics"], row["target"]
        # a row's own overrides (--set-for included); files written before rows recorded them: the run's
        changed = [f"{k}={v}" for k, v in row.get("overrides", run["overrides"]).items()]
        if run.get("retain_others"):
            changed.insert(0, "--retain-others")
        settings = " ".join(changed).replace("|", chr(92) + "|") or "defaults"
        moves = ", ".join(f"{k} {v:+.1f}" for k, v in m["other_changes_points"].items() if abs(v) > 3)
        out.append(
            f"| {path.stem} | {t} | {settings} | {100 * m[f'{t}_rate_before']:.1f} → "
            f"{100 * m[f'{t}_rate_after']:.1f} % | {m['max_other_change_points']:.1f} | {moves or '-'} | "
            f"{m['pixel_drift']:.4f} | {row.get('steps_run')} | {row['erase_seconds']:.0f} |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="minifaces_unlearning.py JSON files")
    args = p.parse_args(argv)
    print(
        "| run | target | settings | rate before → after | max other change (pts) | moved > 3 pts | pixel drift | "
        "steps | erase (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path in args.results:
        print("\n".join(rows(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
