"""`dymu-eval reproduce` (what ``make reproduce`` runs): the DyMU paper's matrices (LLaVA-1.5,
LLaVA-OneVision) through the stock lmms-eval CLI; ``--dry-run`` prints every command. See
:mod:`dymu_eval.runs.reproduce`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..runs.reproduce import baseline_methods
from ..vocabulary import DEFAULT_THRESHOLDS, LEVELS


def register(sub: argparse._SubParsersAction) -> None:
    from ..runs import reproduce

    p = sub.add_parser("reproduce",
                       help="the DyMU paper's matrices through lmms-eval (what `make reproduce` runs)",
                       description=reproduce.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="llava",
                   help="llava (LLaVA-1.5, Tables 2, 5-7), onevision (Table 4 and video) or next "
                        "(LLaVA-NeXT-7B, the peer tables' 640/320/160 tokens); default llava")
    p.add_argument("--pretrained", default="", help="checkpoint: hub id or folder (default: the family's 7B model)")
    p.add_argument("--tasks", default="", help="comma list of lmms-eval tasks (default: the family's benchmarks)")
    p.add_argument("--levels", default=",".join(LEVELS), help="comma list of levels to run")
    p.add_argument("--baselines", default="all",
                   help=f"all (default), or a comma list of the fixed-budget baselines "
                        f"({','.join(baseline_methods())}) to run beside the paper's matrix (empty: none)")
    p.add_argument("--limit", default="", help="samples per task (default all)")
    p.add_argument("--out", default="runs/reproduce", help="folder of the lmms-eval output folders and the tables")
    p.add_argument("--num-gpus", type=int, default=1)
    p.add_argument("--calib-images", default="", help="image folder to calibrate missing llava_instruct thresholds")
    p.add_argument("--pixmo-images", default="", help="image folder to calibrate missing pixmo_cap thresholds "
                   "(get one with `dymu-eval fetch-images pixmo_cap --num 1000 --out DIR`)")
    p.add_argument("--dry-run", action="store_true", help="print every command, run nothing")
    p.add_argument("--force", action="store_true", help="rerun runs that already have results")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..runs.reproduce import PIXMO, Settings, reproduce

    images = {DEFAULT_THRESHOLDS: args.calib_images, PIXMO: args.pixmo_images}
    return reproduce(Settings(
        family=args.family, pretrained=args.pretrained, tasks=args.tasks,
        levels=tuple(lv.strip() for lv in args.levels.split(",") if lv.strip()),
        baselines=None if args.baselines.strip() == "all" else
        tuple(b.strip() for b in args.baselines.split(",") if b.strip()), limit=args.limit or None,
        out=Path(args.out), num_gpus=args.num_gpus, images={k: v for k, v in images.items() if v},
        dry_run=args.dry_run, force=args.force,
    ))
