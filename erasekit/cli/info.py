"""``erasekit info``: show a patch file's metadata."""

from __future__ import annotations

import json

from .common import subparser

EXAMPLES = """  erasekit info p.safetensors
  erasekit info p.safetensors --json
"""


def add_parser(sub) -> None:
    p = subparser(
        sub, "info", "show a patch's metadata", "Print what a patch file holds and how it was made.", EXAMPLES
    )
    p.add_argument("patch", help="patch file")
    p.add_argument("--json", action="store_true", help="print the raw header as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..patch import load_patch

    patch = load_patch(args.patch)
    meta = patch.metadata
    if args.json:
        print(json.dumps(meta, indent=2, default=str))
        return 0
    kinds = sorted({d.kind for d in patch.deltas.values()})
    stats = meta.get("stats", {})
    rows = [
        ("method", meta.get("method")),
        ("concept", meta.get("concept")),
        ("anchor", meta.get("anchor")),
        ("base model", meta.get("base_model")),
        ("created", meta.get("created")),
        ("erasekit", meta.get("erasekit_version")),
        ("tensors", f"{len(patch)} ({', '.join(kinds)}) in {', '.join(patch.components)}"),
        ("values changed", f"{patch.num_changed:,}"),
        ("size", f"{patch.nbytes / 1e6:.3f} MB"),
        ("erase time", f"{stats['erase_seconds']} s on {stats.get('device')}" if "erase_seconds" in stats else None),
    ]
    for key, value in rows:
        if value is not None:
            print(f"{key:15s} {value}")
    if meta.get("config"):
        print("config:")
        for key, value in meta["config"].items():
            print(f"  {key} = {value!r}")
    return 0
