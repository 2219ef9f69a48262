"""`dymu-eval calibrate`: find DToMe thresholds for an encoder on a calibration image set and
store them in the threshold cache.

Several processes: ``torchrun --nproc_per_node 2 -m dymu_eval.cli calibrate ...`` (or
``accelerate launch -m dymu_eval.cli calibrate ...``); ``--batch-size`` is per process, and the
processes together see exactly the batches one process would see in turn, so the thresholds
do not depend on the number of processes. Under torchrun write ``--merges-per-layer N``
instead of ``--r N`` (torchrun's parser rejects ``--r`` as an ambiguous prefix).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import ConfigError
from ..vocabulary import (
    DEFAULT_LEVEL,
    DEFAULT_MERGE_ORDER,
    DEFAULT_SCHEDULE,
    DTYPES,
    ENCODER_CALLS,
    LEVELS,
    MERGE_ORDERS,
    SCHEDULES,
)
from .options import (
    add_runtime_options,
    check_at_least,
    check_output_file,
    encoder_call_for,
    resolve_device,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="find per-layer DToMe thresholds on a set of images and save them to the threshold cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--encoder", required=True,
                   help="vision model or LLaVA folder (only its vision tower is loaded), or hub id")
    p.add_argument("--encoder-name", help="name stored in the file and used by lookups (default: from --encoder)")
    p.add_argument("--dataset", required=True, help="calibration dataset name, e.g. llava_instruct, pixmo_cap")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images (searched recursively, sorted)")
    src.add_argument("--image-list", help='LLaVA-Instruct style JSON list of {"image": relpath}')
    src.add_argument("--hf-dataset", help="Hugging Face dataset id, folder or json/parquet/csv file")
    src.add_argument("--offline-photos", action="store_true", help="the photos bundled with installed wheels")
    p.add_argument("--image-root", help="folder the --image-list paths (or relative --hf-dataset paths) are under")
    p.add_argument("--image-column", help="image column of --hf-dataset")
    p.add_argument("--split", default="train", help="split of --hf-dataset (default train)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--level", choices=LEVELS, help="reduction level (default low)")
    amount.add_argument("--r", "--merges-per-layer", dest="r", type=int,
                        help="merges per layer on average (instead of --level); under torchrun spell it "
                             "--merges-per-layer (torchrun's own parser finds --r ambiguous)")
    p.add_argument("--schedule", default=DEFAULT_SCHEDULE, choices=SCHEDULES)
    p.add_argument("--merge-order", default=DEFAULT_MERGE_ORDER, choices=MERGE_ORDERS,
                   help="token order after each merge: the official code's (default) or original position; "
                        "recorded in the file, and DToMe always runs these thresholds in it")
    p.add_argument("--encoder-call", choices=ENCODER_CALLS,
                   help="how the VLM calls the encoder, for the token statistics (recorded with them): one image "
                        "per call (LLaVA-1.5) or all crops of a request at once (LLaVA-OneVision); default: the "
                        "checkpoint's family (a bare vision model: per_image)")
    p.add_argument("--batch-size", type=int, required=True, help="images per batch per process")
    p.add_argument("--num-images", type=int, help="use the first N images of the source (all when it has fewer; "
                   "the report says so)")
    p.add_argument("--out", help="output file (default: <user cache>/thresholds/<key>.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip images that cannot be decoded and list them at the end (default: stop at the first)")
    p.add_argument("--stats-images", type=int, default=1000,
                   help="images for the token statistics under the found thresholds (0: none; default 1000)")
    p.add_argument("--workers", type=int, default=0, help="image decoding worker processes (default 0)")
    p.add_argument("--dtype", choices=DTYPES, help="default float32 on CPU, bfloat16 on GPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-image-pixels", type=int, help="decompression-bomb limit (default about 89 megapixels)")
    add_runtime_options(p)
    p.set_defaults(func=run)


def _image_source(args: argparse.Namespace):
    from .. import images

    if args.images:
        return images.FolderImages(args.images, name=args.dataset)
    if args.image_list:
        if not args.image_root:
            raise ConfigError("--image-list needs --image-root (the folder its image paths are relative to)")
        return images.ImageListImages(args.image_list, args.image_root, name=args.dataset)
    if args.hf_dataset:
        if not args.image_column:
            raise ConfigError("--hf-dataset needs --image-column (the column holding the images)")
        return images.HFDatasetImages(args.hf_dataset, args.image_column, split=args.split, name=args.dataset,
                                      image_root=args.image_root)
    from ..offline.photos import OfflineImages

    return OfflineImages(name=args.dataset)


def encoder_display_name(encoder: str) -> str:
    """The name a calibration is filed under: a hub id as given, else the folder's name."""
    path = Path(encoder)
    return path.resolve().name if path.exists() else encoder


def _maybe_init_distributed() -> bool:
    """Join the process group torchrun/accelerate describe in the environment (gloo: only
    small CPU tensors are exchanged). Returns True when this call created it."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group(backend="gloo")
    return True


def check_numbers(args: argparse.Namespace) -> None:
    """Every count the options give, before anything loads (one line naming the flag)."""
    for flag, value, minimum in (("--r", args.r, 0), ("--batch-size", args.batch_size, 1),
                                 ("--num-images", args.num_images, 1), ("--stats-images", args.stats_images, 0),
                                 ("--workers", args.workers, 0), ("--max-image-pixels", args.max_image_pixels, 1)):
        check_at_least(flag, value, minimum)


def check_merges(amount: str, r_per_layer: list[int], runner, schedule: str) -> None:
    """ConfigError naming ``amount`` (``--r N``, ``--level L``) when the schedule merges more tokens in a
    layer than half of those left there (the most one bipartite matching can merge): past that every
    threshold would be 0 and every image would end as a token or two."""
    patches, protected = runner.num_patches(), int(runner.has_cls)
    layer = _first_overfull_layer(r_per_layer[:runner.default_layers_run], patches, protected)
    if layer is None:
        return
    largest = 0
    while _first_overfull_layer(_schedule_of(largest + 1, runner, schedule), patches, protected) is None:
        largest += 1
    raise ConfigError(
        f"{amount}: the {schedule} schedule merges {r_per_layer[layer]} tokens in layer {layer}, more than a "
        f"bipartite matching can merge among the tokens left there ({patches} patches at {runner.image_size} px); "
        f"the largest --r this encoder allows is {largest}"
    )


def _schedule_of(r: int, runner, schedule: str) -> list[int]:
    from ..merge import merges_per_layer

    return merges_per_layer(r, runner.num_layers, schedule)[:runner.default_layers_run]


def _first_overfull_layer(r_per_layer: list[int], patches: int, protected: int) -> int | None:
    """The first layer whose merges exceed half of the tokens left (protected tokens never merge)."""
    n = patches + protected
    for i, r in enumerate(r_per_layer):
        if r > (n - protected) // 2:
            return i
        n -= r
    return None


def run(args: argparse.Namespace) -> int:
    import torch

    from ..calibrate import CalibrationSettings, calibrate
    from ..merge import merges_per_layer
    from ..thresholds import ThresholdCache, record_key
    from ..vision.loading import load_runner
    from ..vision.preprocess import preprocess_for

    check_numbers(args)
    if args.max_image_pixels is not None:
        os.environ["DYMU_EVAL_MAX_IMAGE_PIXELS"] = str(args.max_image_pixels)
    level = args.level if args.r is None else None
    if args.r is None and level is None:
        level = DEFAULT_LEVEL
    created_group = _maybe_init_distributed()
    try:
        rank = int(os.environ.get("RANK", "0"))
        device = resolve_device(args.device)
        dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
        name = args.encoder_name or encoder_display_name(args.encoder)
        cache = ThresholdCache()
        key = record_key(name, args.dataset, args.schedule, level, args.r, args.merge_order)
        out = Path(args.out) if args.out else cache.write_dir / f"{key}.json"
        check_output_file("--out" if args.out else "the cache file", out)
        if out.exists() and not args.overwrite:
            raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
        source = _image_source(args)
        # a LLaVA folder: only its vision tower is built and read (see vision.loading)
        runner = load_runner(args.encoder, dtype=getattr(torch, dtype), device=device)
        preprocess = preprocess_for(args.encoder, runner)
        r = args.r if args.r is not None else runner.r_for_level(level)
        r_per_layer = merges_per_layer(r, runner.num_layers, args.schedule)
        check_merges(f"--r {r}" if args.r is not None else f"--level {level} (r={r})", r_per_layer, runner,
                     args.schedule)
        settings = CalibrationSettings(
            batch_size=args.batch_size, num_images=args.num_images, schedule=args.schedule, level=level, r=r,
            seed=args.seed, skip_bad=args.skip_bad, stats_images=args.stats_images, workers=args.workers,
            progress=not args.no_progress, merge_order=args.merge_order,
            call=args.encoder_call or encoder_call_for(args.encoder),
        )
        record = calibrate(runner, source, r_per_layer, settings, preprocess=preprocess, encoder_name=name)
        if rank == 0:
            path = cache.save(record, out, overwrite=args.overwrite)
            _report(record, path, source)
        return 0
    finally:
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _report(record, path: Path, source) -> None:
    cal = record.calibration
    short = cal["batches"] * cal["batch_size"] - cal["images_used"]  # bad images skipped inside the batches
    in_batches = f" ({short} bad image(s) skipped in them)" if short else ""
    print(f"wrote {path}")
    print(f"  key {record.key} (merge order {record.merge_order}); {cal['images_used']} images in {cal['batches']} "
          f"batches of {cal['batch_size']}{in_batches} on {cal['processes']} process(es); {cal['images_dropped']} "
          "trailing images dropped (partial batch)")
    shown = ", ".join("-" if t is None else f"{t:.4f}" for t in record.thresholds)
    print(f"  thresholds per layer: {shown}")
    stats = record.token_stats
    if stats and stats.get("images"):
        print(f"  visual tokens under these thresholds ({stats['images']} images): mean {stats['mean']:.1f} "
              f"std {stats['std']:.1f} min {stats['min']} max {stats['max']} of {stats['patches']} patches")
    for note in cal.get("notes", []):
        print(f"  note: {note}")
    if cal["skipped"]:
        print(f"  skipped {len(cal['skipped'])} bad image(s):", file=sys.stderr)
        for item in cal["skipped"]:
            where = " (token statistics only)" if item.get("stage") == "token statistics" else ""
            print(f"    {item['image']}{where}: {item['reason']}", file=sys.stderr)
