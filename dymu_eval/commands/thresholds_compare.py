"""`dymu-eval thresholds compare`: thresholds of one encoder calibrated on different datasets."""
from __future__ import annotations

import argparse
import sys

from ..vocabulary import DEFAULT_SCHEDULE, LEVELS, SCHEDULES


def register(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser(
        "compare",
        help="per-layer thresholds of several calibration datasets side by side, token counts, plot",
        description="Looks up one cache entry per dataset for the encoder; with --images also counts the visual "
                    "tokens each set of thresholds gives on those images (runs the encoder).",
    )
    p.add_argument("--encoder", required=True, help="encoder name or alias as stored in the cache (e.g. a LLaVA id)")
    p.add_argument("--datasets", required=True, help="comma list, e.g. llava_instruct,pixmo_cap")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--level", choices=LEVELS, help="default mid")
    amount.add_argument("--r", type=int, help="merges per layer instead of a level")
    p.add_argument("--schedule", default=DEFAULT_SCHEDULE, choices=SCHEDULES)
    p.add_argument("--dir", action="append", help="search this cache folder instead (repeatable)")
    p.add_argument("--images", help="evaluation image folder: count tokens under each set of thresholds")
    p.add_argument("--model", help="weights to run for --images (folder or hub id; default: --encoder)")
    p.add_argument("--num-images", type=int, help="use the first N evaluation images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="folder for CSV tables and the plot")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report.threshold_compare import compare, format_text

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    comp = compare(args.encoder, datasets, level=args.level, r=args.r, schedule=args.schedule, dirs=args.dir,
                   images=args.images, model_path=args.model, num_images=args.num_images,
                   batch_size=args.batch_size, device=args.device, out=args.out, progress=not args.no_progress)
    print(format_text(comp))
    for path in comp.written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
