"""The attack report: every attack's numbers, budgets and run info as JSON, a Markdown summary, an image grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import write_json, write_text

VARIANTS = ("patched", "base", "gold")


def headline(name: str, result: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """``(what is measured, {variant: value})``: the one number per model variant the summary table shows."""
    if name == "quantize":
        rates = result["rates"]
        return "highest concept rate over formats", {
            v: max(x for k, x in r.items() if k != "none") for v, r in rates.items()
        }
    if name == "relearn":
        last = max(int(s) for s in result["rates"]["patched"])
        return f"concept rate after {last} steps", result["final"]
    if name in ("prompt", "inversion"):
        return "attack success rate", result["asr"]
    if name == "probe":
        return "probe accuracy (held out)", result["accuracy"]
    return "", {}


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, float) else "-" if v is None else str(v)


@dataclass
class AttackReport:
    """Result of :func:`erasekit.attack`. ``images`` (per attack, per label) is kept for the grid only."""

    suite: str
    target: str
    results: dict[str, dict[str, Any]]
    configs: dict[str, dict[str, Any]]
    run: dict[str, Any]
    images: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    def __getitem__(self, name: str) -> dict[str, Any]:
        return self.results[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "target": self.target,
            "attacks": {n: {"config": self.configs[n], "results": r} for n, r in self.results.items()},
            "run": self.run,
        }

    def save_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def to_markdown(self) -> str:
        """One row per attack: its headline number on the erased, base and gold models, then each attack's detail."""
        variants = [v for v in VARIANTS if any(v in headline(n, r)[1] for n, r in self.results.items())]
        lines = [f"**{self.suite}**, erased `{self.target}`", ""]
        lines += ["| attack | measure | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
        for name, result in self.results.items():
            measure, values = headline(name, result)
            lines.append(f"| {name} | {measure} | " + " | ".join(_pct(values.get(v)) for v in variants) + " |")
        for name, result in self.results.items():
            lines += ["", f"**{name}** ({_budget(self.configs[name])})", ""]
            lines += _detail(name, result)
        r = self.run
        lines += [
            "",
            f"Judge: {r['judge']}; seeds {r['seeds']}; sampler {r.get('sampler', '-')}, {r.get('steps', '-')} steps, "
            f"guidance {r.get('guidance', '-')}; {r['device']}; CPU time {r['cpu_seconds']['total']:.0f} s.",
        ]
        return "\n".join(lines) + "\n"

    def save_markdown(self, path: str | Path) -> Path:
        return write_text(path, self.to_markdown())

    def save_grid(self, path: str | Path, max_columns: int = 10) -> Path:
        """One row per attacked generation set (attack and model), up to ``max_columns`` images each."""
        from ..images import grid, save_image

        rows, labels = [], []
        for name, sets in self.images.items():
            for label, imgs in sets.items():
                if imgs is None or not len(imgs):
                    continue
                picked = imgs[:max_columns].float().cpu()
                if len(picked) < max_columns:  # pad short rows with blanks
                    picked = torch.cat([picked, torch.ones(max_columns - len(picked), *picked.shape[1:])])
                rows.append(picked)
                labels.append(f"{name} {label}")
        if not rows:
            raise ValueError("This report holds no images (it was loaded from JSON, or no attack generated any).")
        return save_image(grid(torch.cat(rows), max_columns, labels), path)


def _budget(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items() if v not in (None, ""))


def _detail(name: str, result: dict[str, Any]) -> list[str]:
    if name == "quantize":
        rates = result["rates"]
        formats = list(next(iter(rates.values())))
        lines = ["| model | " + " | ".join(formats) + " |", "|---|" + "---|" * len(formats)]
        lines += [f"| {v} | " + " | ".join(_pct(r[f]) for f in formats) + " |" for v, r in rates.items()]
        lines += [
            "",
            "| format | median \\|delta\\|/bin | changed entries under half a bin | entries still changed | share of "
            "delta kept |",
            "|---|---|---|---|---|",
        ]
        for fmt, d in result["delta_vs_bin"].items():
            lines.append(
                f"| {fmt} | {d['median_ratio']:.3g} | {_pct(d['below_half_bin'])} | {_pct(d['entries_moved'])} | "
                f"{_pct(d['delta_retained'])} |"
            )
        return lines
    if name == "relearn":
        steps = list(result["rates"]["patched"])
        lines = ["| model | " + " | ".join(f"{s} steps" for s in steps) + " |", "|---|" + "---|" * len(steps)]
        lines += [f"| {v} | " + " | ".join(_pct(c.get(s)) for s in steps) + " |" for v, c in result["rates"].items()]
        return lines
    if name in ("prompt", "inversion"):
        variants = result["variants"]
        modes = [k for k in next(iter(variants.values())) if isinstance(next(iter(variants.values()))[k], dict)]
        cols = ["plain", *modes] if modes else ["plain", "asr"]
        lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for v, r in variants.items():
            cells = [_pct(r[c]["asr"] if isinstance(r[c], dict) else r[c]) for c in cols]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        if result.get("found_prompts"):
            lines += ["", *[f"- {v}: `{p}`" for v, p in result["found_prompts"].items()]]
        if result.get("token_prompt"):
            lines += ["", f"Prompts with the learned token, e.g. `{result['token_prompt']}`."]
        return lines
    if name == "probe":
        lines = ["| model | probe accuracy | shuffled-label control | majority class |", "|---|---|---|---|"]
        lines += [
            f"| {v} | {_pct(r['accuracy'])} | {_pct(r['control'])} | {_pct(r['majority'])} |"
            for v, r in result["variants"].items()
        ]
        lines += ["", "Linear CKA: " + ", ".join(f"{k} {v:.3f}" for k, v in result["cka"].items())]
        return lines
    return []
