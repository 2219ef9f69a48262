"""`dymu-eval thresholds compare`: thresholds of one encoder calibrated on different datasets."""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from ..vocabulary import DEFAULT_SCHEDULE, LEVELS, SCHEDULES
from .options import add_runtime_options, check_at_least, check_output_folder, encoder_call_for, resolve_device


def register(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser(
        "compare",
        help="per-layer thresholds of several calibration datasets side by side, token counts, plot",
        description="Looks up one cache entry per dataset for the encoder; with --images also counts the visual "
                    "tokens each set of thresholds gives on those images (runs the encoder).",
    )
    p.add_argument("--encoder", help="vision model or LLaVA weights (folder or hub id), needed for --images")
    p.add_argument("--encoder-name", help="name the entries are filed under in the cache (default: from --encoder)")
    p.add_argument("--datasets", required=True, help="comma list, e.g. llava_instruct,pixmo_cap")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--level", choices=LEVELS, help="default mid")
    amount.add_argument("--r", type=int, help="merges per layer instead of a level")
    p.add_argument("--schedule", default=DEFAULT_SCHEDULE, choices=SCHEDULES)
    p.add_argument("--dir", action="append", help="search this cache folder instead (repeatable)")
    p.add_argument("--images", help="evaluation image folder: count tokens under each set of thresholds")
    p.add_argument("--num-images", type=int, help="use the first N evaluation images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--ignore-fingerprint", action="store_true",
                   help="count with thresholds calibrated on other weights than --encoder's (logs a warning)")
    p.add_argument("--out", help="folder for CSV tables and the plot")
    add_runtime_options(p)
    p.set_defaults(func=run)


def compare(encoder_name: str, datasets: list[str], level: str | None = None, r: int | None = None,
            schedule: str = DEFAULT_SCHEDULE, dirs: list[str] | None = None, images: str | None = None,
            encoder: str | None = None, num_images: int | None = None, batch_size: int = 16,
            device: str = "cpu", out: str | None = None, progress: bool = True, ignore_fingerprint: bool = False):
    """Everything the command shows: the cache entries side by side and, with ``images``, the token
    counts each gives on them with the ``encoder`` weights (DToMe called as the checkpoint's family
    calls its encoder); tables and plot under ``out``. ``ignore_fingerprint``: see ThresholdRecord.validate_for."""
    from ..report.threshold_compare import Comparison, load_records, threshold_table, write

    records = load_records(encoder_name, datasets, level, r, schedule, dirs)
    comp = Comparison(datasets=datasets, thresholds=threshold_table(records, datasets))
    if images:
        comp.tokens, comp.images = _count(encoder or encoder_name, records, datasets, images, num_images,
                                          batch_size, device, progress, ignore_fingerprint)
    if out:
        write(comp, out, f"{encoder_name}: {' vs '.join(datasets)}")
    return comp


def _count(encoder: str, records: list, datasets: list[str], images: str, num_images: int | None,
           batch_size: int, device: str, progress: bool,
           ignore_fingerprint: bool = False) -> tuple[dict[str, list[int]], list[str]]:
    import torch

    from ..images import FolderImages
    from ..vision.count import count_tokens
    from ..vision.loading import load_runner
    from ..vision.preprocess import preprocess_for

    runner = load_runner(encoder, dtype=torch.float32, device=device)
    source = FolderImages(images, name="evaluation")
    if num_images:
        source = source.head(num_images)
    for rec in records:
        rec.validate_for(runner.model, ignore_fingerprint=ignore_fingerprint)
    call = encoder_call_for(encoder)
    policies = {ds: rec.policy(runner.default_layers_run, call=call) for ds, rec in zip(datasets, records)}
    counts = count_tokens(runner, source, policies, preprocess_for(encoder, runner), batch_size, progress)
    return counts, list(source.keys)  # relative to --images: the same on any machine


def run(args: argparse.Namespace) -> int:
    from ..report.threshold_compare import format_text
    from .calibrate import encoder_display_name

    if not (args.encoder or args.encoder_name):
        raise ConfigError("give --encoder (weights) or --encoder-name (the name in the cache)")
    if args.images and not args.encoder:
        raise ConfigError("--images needs --encoder: the weights to count tokens with")
    if args.ignore_fingerprint and not args.images:
        raise ConfigError("--ignore-fingerprint applies to counting tokens with --images only")
    check_at_least("--num-images", args.num_images, 1)
    check_at_least("--batch-size", args.batch_size, 1)
    check_output_folder("--out", args.out)
    name = args.encoder_name or encoder_display_name(args.encoder)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    comp = compare(name, datasets, level=args.level, r=args.r, schedule=args.schedule, dirs=args.dir,
                   images=args.images, encoder=args.encoder, num_images=args.num_images,
                   batch_size=args.batch_size, device=resolve_device(args.device), out=args.out,
                   progress=not args.no_progress, ignore_fingerprint=args.ignore_fingerprint)
    print(format_text(comp))
    for path in comp.written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
