"""`dymu-eval demo` (what ``make demo`` runs): the whole pipeline offline on the micro LLaVA and OneVision.
The steps are described in :mod:`dymu_eval.runs.demo`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    from ..runs import demo

    p = sub.add_parser("demo", help="the whole pipeline offline on the micro LLaVA and OneVision (`make demo`)",
                       description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/demo", help="tables, plots and merge maps (default results/demo)")
    p.add_argument("--runs", default="runs/demo", help="lmms-eval output folders (default runs/demo)")
    p.add_argument("--limit", type=int, help="samples per task in every section (even, for the MME-style task); "
                   "default: each section's own, which keeps the demo within 35 minutes on 2 cores")
    p.add_argument("--full", action="store_true", help="every sample of every task (about twice as long)")
    p.add_argument("--force", action="store_true", help="recalibrate and rerun everything")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..runs.demo import demo

    if args.limit is not None and (args.limit < 2 or args.limit % 2):
        raise ConfigError(f"--limit must be an even number >= 2 (the MME-style task scores pairs), got {args.limit}")
    if args.full and args.limit is not None:
        raise ConfigError("--full and --limit: give one (--full runs every sample, --limit N the first N)")
    demo(Path(args.out), Path(args.runs), args.limit, args.force, args.full)
    return 0
