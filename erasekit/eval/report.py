"""The evaluation report: every number plus run info as JSON, a Markdown table, and an image grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import write_json, write_text

HEADLINE = ("ua", "ua_heldout", "ira", "cra", "clip_score", "clip_ua", "fid", "erase_seconds", "patch_bytes")


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, float) else str(v)


@dataclass
class EvalReport:
    """Result of :func:`erasekit.evaluate`. ``images`` (row-major over ``records``) is kept for the grid only."""

    suite: str
    target: str | None
    metrics: dict[str, Any]
    run: dict[str, Any]
    records: list[dict]
    images: torch.Tensor | None = field(default=None, repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "target": self.target,
            "metrics": self.metrics,
            "run": self.run,
            "records": self.records,
        }

    def save_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def to_markdown(self) -> str:
        """Headline numbers, then per-class accuracies (and, without a target, every target's base scores)."""
        m = self.metrics
        title = f"**{self.suite}**, target `{self.target}`" if self.target else f"**{self.suite}**, base model"
        lines = [title, ""]
        head = [(k, m[k]) for k in HEADLINE if m.get(k) is not None]
        if head:
            lines += ["| " + " | ".join(k for k, _ in head) + " |", "|" + "---|" * len(head)]
            lines.append("| " + " | ".join(_cell(k, v) for k, v in head) + " |")
        for kind in ("style", "object"):
            acc = m.get(f"{kind}_accuracy_by_class")
            if acc:
                lines += ["", f"| {kind} | accuracy |", "|---|---|"]
                lines += [
                    f"| {c}{' (target)' if self.target == f'{kind}:{c}' else ''} | {_pct(v)} |" for c, v in acc.items()
                ]
        if m.get("per_target"):
            lines += ["", "| target | UA | IRA | CRA |", "|---|---|---|---|"]
            lines += [
                f"| {t} | {_pct(s['ua'])} | {_pct(s['ira'])} | {_pct(s['cra'])} |" for t, s in m["per_target"].items()
            ]
        s = self.run
        lines += [
            "",
            f"Sampler {s['sampler']['class']}, {s['steps']} steps, guidance {s['guidance']}, "
            f"seeds {s['seeds']}, {s['num_images']} images, {s['device']}.",
        ]
        return "\n".join(lines) + "\n"

    def save_markdown(self, path: str | Path) -> Path:
        return write_text(path, self.to_markdown())

    def save_grid(self, path: str | Path, max_columns: int = 40) -> Path:
        """Rows: the target kind's classes (styles without a target); columns: (other class, seed) pairs;
        the target row is framed in red."""
        from ..images import grid, save_image

        if self.images is None:
            raise ValueError("This report holds no images (it was loaded from JSON); re-run the evaluation.")
        kind = self.target.split(":")[0] if self.target else "style"
        other = "object" if kind == "style" else "style"
        main = [r for r in self.records if "template" not in r]  # the grid; held-out rows have no images here
        rows = list(dict.fromkeys(r[kind] for r in main))
        cols = list(dict.fromkeys((r[other], r["seed"]) for r in main))[:max_columns]
        index = {(r[kind], r[other], r["seed"]): i for i, r in enumerate(main)}
        picks = [index[(row, o, seed)] for row in rows for o, seed in cols]
        target_name = self.target.split(":", 1)[1] if self.target else None
        marked = [i for i, r in enumerate(rows) if r == target_name]
        image = grid(self.images[picks], len(cols), rows, [f"{o} {s}" for o, s in cols], mark_rows=marked)
        return save_image(image, path)


def _cell(key: str, value: Any) -> str:
    if key in ("ua", "ua_heldout", "ira", "cra", "clip_ua"):
        return _pct(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
