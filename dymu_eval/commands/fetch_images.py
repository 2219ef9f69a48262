"""`dymu-eval fetch-images pixmo_cap --num N --out DIR`: download and verify calibration images."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .options import check_at_least, check_output_folder

DATASETS = ("pixmo_cap",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch-images",
        help="download calibration images listed by URL and sha256 (Pixmo-Cap), verified and resumable",
        description="Downloads the first N images of the list over http(s) in parallel with timeouts and "
                    "retries, checks each against its sha256 (rows without one are refused unless "
                    "--allow-unverified), skips files already present whose sha256 matches, and writes "
                    "fetch_report.json; exits 1 if any image failed.",
    )
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--num", type=int, required=True, help="how many images (the first N of the list)")
    p.add_argument("--out", required=True, help="folder for the images (usable as a calibration image folder)")
    p.add_argument("--source", default=None,
                   help="local copy of the list (.jsonl/.json/.csv/.parquet with image_url, image_sha256) "
                        "or a hub dataset id (default allenai/pixmo-cap)")
    p.add_argument("--workers", type=int, default=8, help="parallel downloads (default 8)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per connect/read (default 15)")
    p.add_argument("--retries", type=int, default=3, help="retries per image after the first try (default 3)")
    p.add_argument("--backoff", type=float, default=0.5, help="first retry delay in seconds, doubled each time")
    p.add_argument("--max-seconds", type=float, default=120.0, help="give up on one image after this long")
    p.add_argument("--allow-local-files", action="store_true",
                   help="also accept file:// URLs in the list (copies local files); otherwise only http(s)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="fetch rows that have no sha256, unchecked; they are counted as unverified in the "
                        "summary and marked verified=false in fetch_report.json")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    """Refuse values that would silently mean something else (no try at all, a zero pool, no wait)
    and an --out that cannot be a folder, before the list is read."""
    check_output_folder("--out", args.out)
    check_at_least("--retries", args.retries, 0)
    check_at_least("--workers", args.workers, 1)
    check_at_least("--backoff", args.backoff, 0)
    for flag, value in (("--timeout", args.timeout), ("--max-seconds", args.max_seconds)):
        if not value > 0:
            raise ConfigError(f"{flag} must be > 0, got {value:g}")


def run(args: argparse.Namespace) -> int:
    from ..fetch.download import fetch_all, summarise
    from ..fetch.pixmo import HUB_ID, load_items

    _check_args(args)
    out = Path(args.out)
    items = load_items(args.source, args.num, allow_local_files=args.allow_local_files,
                       allow_unverified=args.allow_unverified)
    outcomes = fetch_all(items, out, workers=args.workers, progress=not args.no_progress, timeout=args.timeout,
                         retries=args.retries, backoff=args.backoff, max_seconds=args.max_seconds)
    report = summarise(outcomes, args.source or HUB_ID)
    report_path = out / "fetch_report.json"
    report_path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(_summary_line(report, out, report_path))
    for o in outcomes:
        if o.status == "failed":
            print(f"failed: {o.url}: {o.error}", file=sys.stderr)
    return 1 if report["failed"] else 0


def _summary_line(report: dict, out: Path, report_path: Path) -> str:
    line = (f"{report['downloaded']} downloaded, {report['cached']} already present, {report['failed']} failed "
            f"-> {out} (report: {report_path})")
    if report["unverified"]:
        line += (f"; {report['unverified']} of them NOT verified (no sha256 in the list, --allow-unverified; "
                 f"verified=false in the report)")
    return line
