"""``erasekit demo``: serve the Gradio demo (erase, compare before/after, evaluate) on 127.0.0.1."""

from __future__ import annotations

from .common import subparser

EXAMPLES = """  erasekit demo                                   # http://127.0.0.1:7860, shipped MiniCanvas and tiny-sd
  erasekit demo --port 8080 --model-dir worlds/minicanvas --model-dir /models/sd15
  erasekit demo --host 0.0.0.0                    # reachable from other machines: only on a trusted network
"""


def add_parser(sub) -> None:
    p = subparser(
        sub,
        "demo",
        "serve the Gradio demo (erase, compare, evaluate)",
        "Serve the Gradio demo: pick a model, erase a concept with live progress, download the patch and its LoRA, "
        "compare images before and after with the same seeds, and score the erasure. Needs the demo extra "
        "(pip install 'erasekit[demo]').",
        EXAMPLES,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--model-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a diffusers pipeline folder or a MiniCanvas world folder to offer (repeatable); the browser "
        "only chooses among these",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..demo.app import launch

    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port}: choose a port between 1 and 65535.")
    launch(host=args.host, port=args.port, model_dirs=args.model_dir, device=args.device)
    return 0
