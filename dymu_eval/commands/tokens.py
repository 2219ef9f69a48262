"""`dymu-eval tokens`: how many visual tokens each image keeps under ToMe or DToMe, per layer,
and (with --maps) a PNG per image showing which patches merged."""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..vocabulary import (
    DEFAULT_MERGE_ORDER,
    DEFAULT_SCHEDULE,
    ENCODER_CALLS,
    LEVELS,
    MERGE_ORDERS,
    SCHEDULES,
)
from .options import (
    add_runtime_options,
    check_at_least,
    check_output_file,
    check_output_folder,
    encoder_call_for,
    resolve_device,
    write_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokens",
        help="token counts (and merge maps) for a folder of images",
        description="Run an encoder over images with ToMe (--level/--r), DToMe (--thresholds) or no merging, "
        "and write per-image token counts as JSON.",
    )
    p.add_argument("--encoder", required=True, help="save_pretrained folder of a CLIP/SigLIP/DINOv2 vision model "
                   "or a LLaVA (only its vision tower is loaded)")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--level", choices=LEVELS, help="reduction level (merges per layer for this encoder)")
    how.add_argument("--r", type=int, help="merges per layer")
    p.add_argument("--thresholds", help="DToMe with a dymu-eval thresholds file (written by `dymu-eval calibrate`; "
                   "see `dymu-eval thresholds list` for the cache), instead of --level/--r")
    p.add_argument("--ignore-fingerprint", action="store_true",
                   help="use --thresholds even if they were calibrated on other weights (logs a warning)")
    p.add_argument("--schedule", default=DEFAULT_SCHEDULE, choices=SCHEDULES)
    p.add_argument("--merge-order", choices=MERGE_ORDERS,
                   help="token order after each merge (default: reference for ToMe; for DToMe the order the "
                        "thresholds were calibrated under, which must match when given)")
    p.add_argument("--encoder-call", choices=ENCODER_CALLS,
                   help="DToMe: follow the reference's one-image-per-call path (LLaVA-1.5) or its "
                        "all-crops-in-one-call path (LLaVA-OneVision); default: the checkpoint's family "
                        "(a bare vision model: per_image)")
    p.add_argument("--json", required=True, dest="json_out", help="output JSON file")
    p.add_argument("--maps", help="folder for PNG merge maps, one per image")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, help="input size in pixels (default: the encoder's)")
    p.add_argument("--layers-run", type=int, help="blocks to run (default: what a LLaVA reads, else all)")
    add_runtime_options(p)
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad numbers, contradictions and unwritable outputs before anything loads."""
    if args.thresholds and (args.level or args.r is not None):
        given = f"--level {args.level}" if args.level else f"--r {args.r}"
        raise ConfigError(f"{given} and --thresholds contradict each other: --thresholds runs DToMe with the file's "
                          "thresholds, --level/--r run ToMe; give one")
    if args.ignore_fingerprint and not args.thresholds:
        raise ConfigError("--ignore-fingerprint applies to --thresholds only")
    check_at_least("--r", args.r, 0)
    check_at_least("--batch-size", args.batch_size, 1)
    check_at_least("--image-size", args.image_size, 1)
    check_at_least("--layers-run", args.layers_run, 1)
    check_output_file("--json", args.json_out)
    check_output_folder("--maps", args.maps)


def check_runner(args: argparse.Namespace, runner) -> None:
    """The options that depend on the encoder: an image size of at least one patch, a layer count it has."""
    patch = runner.adapter.patch_size
    if args.image_size is not None and args.image_size < patch:
        raise ConfigError(f"--image-size {args.image_size}: smaller than one {patch}-pixel patch of this encoder")
    if args.layers_run is not None and args.layers_run > runner.num_layers:
        raise ConfigError(f"--layers-run {args.layers_run}: this encoder has {runner.num_layers} blocks")


def build_policy(args: argparse.Namespace, runner) -> tuple[Any, dict[str, Any]]:
    """The merging policy the options ask for, and a description for the JSON."""
    from ..merge import NoMerge, TopR, merges_per_layer

    size = args.image_size or runner.image_size
    r = runner.r_for_level(args.level, size) if args.level else args.r
    r_per_layer = merges_per_layer(r, runner.num_layers, args.schedule) if r is not None else None
    info: dict[str, Any] = {"level": args.level, "r": r, "schedule": args.schedule, "r_per_layer": r_per_layer}
    if args.thresholds:
        from ..thresholds import load_record

        record = load_record(args.thresholds)
        record.validate_for(runner.model, ignore_fingerprint=args.ignore_fingerprint)
        call = args.encoder_call or encoder_call_for(args.encoder)
        policy = record.policy(runner.default_layers_run, call=call, merge_order=args.merge_order)
        info.update(
            method="dtome",
            merge_order=policy.merge_order,
            encoder_call=call,
            thresholds_file=str(args.thresholds),
            thresholds=record.thresholds,
            r_per_layer=record.r_per_layer,
        )
        return policy, info
    if r_per_layer is not None:
        order = args.merge_order or DEFAULT_MERGE_ORDER
        return TopR(r_per_layer, merge_order=order), {**info, "method": "tome", "merge_order": order}
    return NoMerge(), {**info, "method": "none"}


def _image_source(folder: str):
    from ..images import FolderImages

    return FolderImages(folder)


def _load_runner(args: argparse.Namespace):
    """The encoder's runner, running ``--layers-run`` blocks when given (checked against the encoder)."""
    from ..vision.loading import load_runner

    runner = load_runner(args.encoder, device=resolve_device(args.device))
    check_runner(args, runner)
    if args.layers_run is not None:
        runner.default_layers_run = args.layers_run
    return runner


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..vision.maps import merge_map
    from ..vision.preprocess import ImageTransform

    check_args(args)
    source = _image_source(args.images)
    runner = _load_runner(args)
    policy, info = build_policy(args, runner)
    size = args.image_size or runner.image_size
    transform = ImageTransform.for_encoder(runner.family, size, args.encoder)
    grid = runner.adapter.grid(size, size)
    maps_dir = Path(args.maps) if args.maps else None
    per_image: list[dict[str, Any]] = []
    indices = list(range(len(source)))
    batches = [indices[i : i + args.batch_size] for i in range(0, len(indices), args.batch_size)]
    for batch in tqdm(batches, desc="tokens", unit="batch", disable=args.no_progress):
        images = [source.load(i) for i in batch]
        pixels, crops = transform(images)
        out = runner(pixels, policy)
        visual_counts = out.visual_counts()
        for j, i in enumerate(batch):
            total = out.num_tokens(j)
            entry = {
                "image": source.keys[i],  # relative to images_folder
                "width": images[j].width,
                "height": images[j].height,
                "tokens_per_layer": out.counts[j].tolist(),
                "final_tokens": total,
                "visual_tokens": visual_counts[j],
                "patches": grid[0] * grid[1],
            }
            if maps_dir:
                name = source.keys[i].replace("/", "__").rsplit(".", 1)[0] + ".png"
                maps_dir.mkdir(parents=True, exist_ok=True)  # made with its first map: a failed run leaves no empty one
                merge_map(crops[j], out.patch_groups(j), grid).save(maps_dir / name)
                entry["map"] = name  # in maps_folder
            per_image.append(entry)
    visual = [e["visual_tokens"] for e in per_image]
    result = {
        "encoder": str(args.encoder),
        "images_folder": str(args.images),
        "maps_folder": str(maps_dir) if maps_dir else None,
        "family": runner.family,
        "encoder_key": runner.encoder_key,
        "num_layers": runner.num_layers,
        "layers_run": runner.default_layers_run,
        "image_size": size,
        "has_cls": runner.has_cls,
        **info,
        "summary": {
            "images": len(visual),
            "mean_visual_tokens": statistics.fmean(visual),
            "std_visual_tokens": statistics.pstdev(visual),
            "min_visual_tokens": min(visual),
            "max_visual_tokens": max(visual),
        },
        "images": per_image,
    }
    out_path = write_json(args.json_out, result)
    s = result["summary"]
    print(
        f"{s['images']} images, visual tokens {s['mean_visual_tokens']:.1f} ± {s['std_visual_tokens']:.1f} "
        f"(min {s['min_visual_tokens']}, max {s['max_visual_tokens']}) -> {out_path}"
    )
    return 0
