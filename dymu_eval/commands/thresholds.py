"""`dymu-eval thresholds list|show|compare`: what the threshold cache holds.

Searched folders, in lookup order: the repository's ``thresholds/``, then the user cache
(``<user cache>/thresholds``). ``compare`` lives in :mod:`dymu_eval.commands.thresholds_compare`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ThresholdCacheError
from . import thresholds_compare


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("thresholds", help="list or show the stored threshold files", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="thresholds_command", metavar="ACTION", required=True)
    lp = tsub.add_parser("list", help="one line per threshold file in the search folders")
    lp.add_argument("--dir", action="append", help="search this folder instead (repeatable)")
    lp.set_defaults(func=run_list)
    sp = tsub.add_parser("show", help="the full contents of one threshold file")
    sp.add_argument("entry", help="a file path or a cache key (the file name without .json)")
    sp.add_argument("--dir", action="append", help="search this folder instead (repeatable)")
    sp.add_argument("--raw", action="store_true", help="print the file's JSON as stored")
    sp.set_defaults(func=run_show)
    thresholds_compare.register(tsub)


def _cache(dirs: list[str] | None):
    from ..thresholds import ThresholdCache

    return ThresholdCache(dirs) if dirs else ThresholdCache()


def resolve_entry(entry: str, dirs: list[str] | None = None):
    """A record from a path, or from a key searched in the cache folders (lookup order)."""
    from ..thresholds import load_record

    path = Path(entry)
    if path.suffix == ".json" and path.exists():
        return load_record(path)
    cache = _cache(dirs)
    stem = entry[:-5] if entry.endswith(".json") else entry
    for d in cache.dirs:
        candidate = d / f"{stem}.json"
        if candidate.is_file():
            return load_record(candidate)
    keys = [p.stem for p in cache.files()]
    raise ThresholdCacheError(
        f"no threshold file {entry!r}; searched {', '.join(str(d) for d in cache.dirs)}. "
        f"Known keys: {', '.join(keys) if keys else 'none'} (see `dymu-eval thresholds list`)"
    )


def run_list(args: argparse.Namespace) -> int:
    cache = _cache(args.dir)
    entries = cache.entries()
    if not entries:
        print(f"no threshold files in {', '.join(str(d) for d in cache.dirs)}")
        return 0
    header = ("key", "encoder", "dataset", "schedule", "amount", "order", "layers", "images", "created", "file")
    rows = []
    for path, rec in entries:
        if isinstance(rec, ThresholdCacheError):
            rows.append((path.stem, f"UNREADABLE: {rec}", "", "", "", "", "", "", "", str(path)))
            continue
        cal = rec.calibration
        amount = f"level {rec.level} (r={cal.get('r')})" if rec.level else f"r={cal.get('r')}"
        rows.append((
            rec.key, rec.encoder.name, rec.dataset.get("name", ""), rec.schedule, amount, rec.merge_order,
            f"{rec.encoder.layers_run}/{rec.encoder.num_layers}", str(rec.dataset.get("num_images") or "?"),
            rec.created or "-", str(path),
        ))
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def run_show(args: argparse.Namespace) -> int:
    rec = resolve_entry(args.entry, args.dir)
    if args.raw:
        print(rec.dumps(), end="")
        return 0
    enc, ds, cal = rec.encoder, rec.dataset, rec.calibration
    print(f"{rec.key}  ({rec.source_path})")
    print(f"encoder   {enc.name}  family={enc.family}  layers run {enc.layers_run} of {enc.num_layers}"
          f"  read layer {enc.read_layer}  cls={enc.has_cls}")
    if enc.aliases:
        print(f"          aliases: {', '.join(enc.aliases)}")
    print(f"          fingerprint: {enc.fingerprint or 'unknown'}")
    if enc.fingerprint_note:
        print(f"          {enc.fingerprint_note}")
    print(f"dataset   {ds.get('name')}  ({ds.get('kind')}: {ds.get('source')})  images={ds.get('num_images')}")
    print(f"settings  level={cal.get('level')} r={cal.get('r')} schedule={rec.schedule} batch={cal.get('batch_size')}"
          f" processes={cal.get('processes')} dtype={cal.get('dtype')} seed={cal.get('seed')}"
          f" merge_order={rec.merge_order}")
    print("layer  r   threshold")
    for i, (r, t) in enumerate(zip(rec.r_per_layer, rec.thresholds)):
        print(f"{i:>5}  {r:<3} {'-' if t is None else f'{t:.6f}'}")
    if rec.token_stats:
        print(f"tokens    {json.dumps(rec.token_stats)}")
    if cal.get("skipped"):
        print(f"skipped   {len(cal['skipped'])} bad images: " + ", ".join(s["image"] for s in cal["skipped"]))
    if rec.provenance:
        print(f"provenance {rec.provenance}")
    print(f"created   {rec.created or '-'}  with dymu-eval {rec.tool_version}")
    return 0
