"""`dymu-eval paths tasks|thresholds|reference|cache`: print a data folder (for --include_path)."""
from __future__ import annotations

import argparse

from .. import paths

_WHICH = {
    "tasks": paths.tasks_dir,
    "thresholds": paths.thresholds_dir,
    "reference": paths.reference_dir,
    "cache": paths.user_cache_dir,
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("paths", help="print where a data folder lives, e.g. for lmms-eval --include_path")
    p.add_argument("which", choices=sorted(_WHICH))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(_WHICH[args.which]())
    return 0
