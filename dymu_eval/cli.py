"""`dymu-eval` command line: one sub-command per module in ``dymu_eval.commands``."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import DymuError

# Each module defines ``register(subparsers)``, which adds its parser and sets ``func``.
COMMAND_MODULES = [
    "paths",
    "tables", "fetch_images",
    "calibrate", "thresholds",
    "tokens", "bench", "flops",
    "demo", "reproduce",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dymu-eval",
        description="Benchmark visual-token reduction (DyMU, ToMe, FastV) in vision-language models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"dymu_eval.commands.{name}").register(sub)
    return parser


# The shell's status for a command ended by SIGINT (128 + 2).
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command: a DymuError is one line and status 2, Ctrl-C one line and status 130."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DymuError as exc:
        print(f"dymu-eval {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dymu-eval {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
