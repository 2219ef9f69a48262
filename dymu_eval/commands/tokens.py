"""`dymu-eval tokens`: how many visual tokens each image keeps under ToMe or DToMe, per layer,
and (with --maps) a PNG per image showing which patches merged."""
from __future__ import annotations

import argparse
import json
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
from .options import add_runtime_options, resolve_device


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
    p.add_argument("--thresholds", help="JSON file with a 'thresholds' list (one per encoder layer): DToMe")
    p.add_argument("--schedule", default=DEFAULT_SCHEDULE, choices=SCHEDULES)
    p.add_argument("--merge-order", choices=MERGE_ORDERS,
                   help="token order after each merge (default: reference for ToMe; for DToMe the order the "
                        "thresholds were calibrated under, which must match when given)")
    p.add_argument("--encoder-call", default=ENCODER_CALLS[0], choices=ENCODER_CALLS,
                   help="DToMe: follow the reference's one-image-per-call path (LLaVA-1.5, default) or its "
                        "all-crops-in-one-call path (LLaVA-OneVision)")
    p.add_argument("--json", required=True, dest="json_out", help="output JSON file")
    p.add_argument("--maps", help="folder for PNG merge maps, one per image")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, help="input size in pixels (default: the encoder's)")
    p.add_argument("--layers-run", type=int, help="blocks to run (default: what a LLaVA reads, else all)")
    add_runtime_options(p)
    p.set_defaults(func=run)


def build_policy(args: argparse.Namespace, runner) -> tuple[Any, dict[str, Any]]:
    """The merging policy the options ask for, and a description for the JSON."""
    from ..merge import NoMerge, TopR, merges_per_layer

    size = args.image_size or runner.image_size
    r = None
    if args.level:
        r = runner.r_for_level(args.level, size)
    elif args.r is not None:
        if args.r < 0:
            raise ConfigError(f"--r must be >= 0, got {args.r}")
        r = args.r
    r_per_layer = merges_per_layer(r, runner.num_layers, args.schedule) if r is not None else None
    info: dict[str, Any] = {"level": args.level, "r": r, "schedule": args.schedule, "r_per_layer": r_per_layer}
    if args.thresholds:
        from ..thresholds import load_record

        record = load_record(args.thresholds)
        record.validate_for(runner.model)
        policy = record.policy(runner.default_layers_run, call=args.encoder_call, merge_order=args.merge_order)
        info.update(
            method="dtome",
            merge_order=policy.merge_order,
            encoder_call=args.encoder_call,
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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..vision.loading import load_runner
    from ..vision.maps import merge_map
    from ..vision.preprocess import ImageTransform

    if args.batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    source = _image_source(args.images)
    runner = load_runner(args.encoder, device=resolve_device(args.device), layers_run=args.layers_run)
    policy, info = build_policy(args, runner)
    size = args.image_size or runner.image_size
    transform = ImageTransform.for_encoder(runner.family, size, args.encoder)
    grid = runner.adapter.grid(size, size)
    maps_dir = Path(args.maps) if args.maps else None
    if maps_dir:
        maps_dir.mkdir(parents=True, exist_ok=True)
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
    out_path = Path(args.json_out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    s = result["summary"]
    print(
        f"{s['images']} images, visual tokens {s['mean_visual_tokens']:.1f} ± {s['std_visual_tokens']:.1f} "
        f"(min {s['min_visual_tokens']}, max {s['max_visual_tokens']}) -> {out_path}"
    )
    return 0
