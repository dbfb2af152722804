"""The ``erasekit`` command. ``main(argv)`` runs in-process, so tests call it directly."""

from __future__ import annotations

import argparse
import logging
import sys

from ..plugins import commands
from . import apply, attack, demo, erase, evaluate, generate, info, listing, quickstart

SUBCOMMANDS = (erase, apply, generate, evaluate, attack, listing, info, quickstart, demo)

EPILOG = """examples:
  erasekit list
  erasekit erase --model tiny-sd --method esd --concept "a cat" --set steps=2 --out p.safetensors
  erasekit info p.safetensors
  erasekit generate --model tiny-sd --prompt "a cat" --patch p.safetensors --out cat.png
  erasekit apply --model tiny-sd --patch p.safetensors --lora p_lora.safetensors
  erasekit eval --suite unlearncanvas --data DATA --classifiers CLF --patch p.safetensors --target style:Van_Gogh --json r.json
  erasekit attack --model minicanvas --patch p.safetensors --target style:Watercolor --json attacks.json
  erasekit quickstart
  erasekit world train minicanvas --exclude style:Ink --out worlds/no_ink
  erasekit demo --model-dir worlds/minicanvas
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erasekit",
        description="Erase concepts from image generators and prove they are gone.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    for module in commands():  # plugins' subcommands, e.g. `erasekit world` from erasekit_worlds
        module.add_parser(sub)
    return parser


# Errors that mean "the input is wrong" (a bad option, file, folder or model): one line naming the fix, exit 2.
BAD_INPUT = (ValueError, TypeError, OSError, LookupError)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    if isinstance(err, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        text += " (check the path and its permissions)"
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 success, 1 a run that failed, 2 bad input or usage).

    Bad input prints one line, ``erasekit COMMAND: error: ...`` naming the fix, and no traceback (``--debug`` shows
    it).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.run(args) or 0)
    except BAD_INPUT as err:
        if args.debug:
            raise
        print(f"erasekit {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
