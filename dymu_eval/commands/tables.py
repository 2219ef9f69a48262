"""`dymu-eval tables RUN_DIR...`: comparison tables and plots from lmms-eval output folders."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tables",
        help="build comparison tables (Markdown, CSV, LaTeX) and plots from lmms-eval output folders",
        description="Reads lmms-eval --output_path folders (results JSON, samples JSONL, dymu_stats/) "
                    "and writes one table per model family, with the paper's reported rows apart.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="lmms-eval --output_path folder(s)")
    p.add_argument("--out", default="results/tables", help="output folder (default: results/tables)")
    p.add_argument("--format", default="md,csv,latex", help="comma list of md,csv,latex (default: all)")
    p.add_argument("--reference", default="paper", choices=["paper", "none"],
                   help="add the paper's reported rows (in their own section) or not")
    p.add_argument("--reference-backbone", default=None,
                   help="reference rows to show when the checkpoint name does not say (e.g. llava-1.5-7b)")
    p.add_argument("--allow-failed", action="store_true",
                   help="skip failed runs, and keep runs whose per-sample stats miss samples (marked "
                        "[incomplete stats]), with a warning instead of stopping")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report.build import make_report
    from ..report.render import to_markdown
    from .options import check_output_folder

    check_output_folder("--out", args.out)
    report = make_report(args.run_dirs, args.out, [f.strip() for f in args.format.split(",") if f.strip()],
                         reference=args.reference, reference_backbone=args.reference_backbone,
                         allow_failed=args.allow_failed, plots=not args.no_plots)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(to_markdown(report.tables))
    for path in report.written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
