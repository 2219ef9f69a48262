"""`dymu-eval bench encoder`: the merging runner against the plain Hugging Face forward.

Variants, timed interleaved in one process (each repeat runs every variant once, in a rotating
order; a time is the median over repeats, a ratio the median of the ratios within a repeat): the
plain HF forward, the runner with no merging (the cost of running block by block; target <=
1.10x), and the runner with DToMe at a level (thresholds found with BatchTopK on the same
photos). Default: real DINOv2-S/14 weights, 336 px, batch 8;
``--shape clip-l-336|siglip-so400m --layers N``: random (seeded) weights at that encoder's widths,
N blocks, at its native resolution. ``--device cuda --dtype bfloat16`` times with CUDA events and
reports each variant's peak memory.
"""
from __future__ import annotations

import argparse
import statistics

from ..commands.options import write_json
from ..vocabulary import DEFAULT_LEVEL, LEVELS
from . import add_shape_options, add_timing_options, check_timing_options, prepacked
from ._timing import PeakMemory, device_sync, interleaved, paired_ratios
from .shapes import ENCODER_SHAPES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encoder", help="runner (no merging, DToMe) vs plain HF forward on the real DINOv2-S")
    p.add_argument("--encoder", help="save_pretrained folder (default: the offline DINOv2-S weights)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, help="default 336, or the --shape encoder's own")
    p.add_argument("--level", default=DEFAULT_LEVEL, choices=LEVELS)
    add_shape_options(p, ENCODER_SHAPES)
    add_timing_options(p)
    p.set_defaults(func=run)


def _photos_batch(n: int):
    from PIL import Image

    from ..offline.assets import sample_photos
    from ..offline.photos import COLOUR_PHOTOS

    photos = sample_photos()
    names = [COLOUR_PHOTOS[i % len(COLOUR_PHOTOS)] for i in range(n)]
    return names, [Image.open(photos[name]).convert("RGB") for name in names]


def _check(args: argparse.Namespace) -> None:
    from ..errors import ConfigError

    if args.shape and args.encoder:
        raise ConfigError("--shape and --encoder: give one (random weights at a real width, or a saved encoder)")
    if args.layers is not None and not args.shape:
        raise ConfigError("--layers needs --shape (it sets the depth of the random-weight encoder)")
    for name in ("batch_size", "image_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    check_timing_options(args)


def _load(args: argparse.Namespace):
    """(vision model on the device in the dtype, label); fills in ``args.image_size``."""
    import torch

    from .shapes import random_model, shape_config, torch_dtype

    _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.shape:
        cfg = shape_config(args.shape, ENCODER_SHAPES, args.layers)
        args.image_size = args.image_size or cfg["image_size"]
        model = random_model(cfg, "AutoModel", args.seed, args.device, args.dtype)
        return model, f"{args.shape} shape, {cfg['num_hidden_layers']} layers, random weights (seed {args.seed})"
    args.image_size = args.image_size or 336
    if args.encoder:
        from ..vision.loading import load_vision_model

        model, label = load_vision_model(args.encoder, device=args.device), args.encoder
    else:
        from ..offline.assets import dinov2_small

        model, label = dinov2_small(image_size=args.image_size).to(args.device), "DINOv2-S/14 (real weights)"
    return model.to(torch_dtype(args.dtype)), label


def run(args: argparse.Namespace) -> int:
    import torch

    from ..accounting import VisionShape, encoder_flops, padded_batch_encoder_flops
    from ..errors import ConfigError
    from ..merge import BatchTopK, NoMerge, Threshold, merges_per_layer
    from ..vision import VisionRunner
    from ..vision.preprocess import ImageTransform
    from ..vision.runner import run_counts

    model, label = _load(args)
    label = prepacked(model, args, label)
    runner = VisionRunner.from_model(model)
    if hasattr(model, "vision_tower") or hasattr(getattr(model, "model", None), "vision_tower"):
        raise ConfigError("--encoder: give a vision model folder; the plain forward is timed on the vision model "
                          "itself")
    names, images = _photos_batch(args.batch_size)
    pixels, _ = ImageTransform.for_encoder(runner.family, args.image_size, args.encoder)(images)
    pixels = pixels.to(device=args.device, dtype=next(model.parameters()).dtype)
    layers = runner.num_layers
    r_per_layer = merges_per_layer(runner.r_for_level(args.level, args.image_size), layers)
    calib = BatchTopK(r_per_layer)
    runner(pixels, calib)
    dtome = Threshold(calib.thresholds, r_per_layer)

    def plain():
        with torch.no_grad():
            return model(pixel_values=pixels)

    variants = {
        "plain HF forward": plain,
        "runner, no merging": lambda: runner(pixels, NoMerge()),
        f"runner, DToMe-{args.level}": lambda: runner(pixels, dtome),
    }
    tokens = {
        "plain HF forward": runner.num_patches(args.image_size) + int(runner.has_cls),
        "runner, no merging": runner.num_patches(args.image_size) + int(runner.has_cls),
        f"runner, DToMe-{args.level}": statistics.fmean(runner(pixels, dtome).counts[:, -1].tolist()),
    }
    shape = VisionShape.from_config(model.config)

    def analytic(policy, padded: bool = False) -> float:
        """FLOPs at each image's own counts, or (``padded``) what the padded batch computes: images
        merging different amounts leave the shorter ones padded, and attention and the matcher run
        at the batch's longest count (the token-wise work skips the padding)."""
        counts, matched = run_counts(runner(pixels, policy), policy)
        if padded:
            return padded_batch_encoder_flops(shape, counts, matched).total
        return sum(encoder_flops(shape, c, matched).total for c in counts)

    full_flops = analytic(NoMerge())
    flop_ratio = {"plain HF forward": 1.0, "runner, no merging": 1.0,
                  f"runner, DToMe-{args.level}": analytic(dtome) / full_flops}
    padded_ratio = {**flop_ratio, f"runner, DToMe-{args.level}": analytic(dtome, padded=True) / full_flops}
    memory = PeakMemory(args.device)
    with torch.no_grad():
        times = interleaved(variants, args.repeats, args.warmup, device_sync(args.device), device=args.device,
                            memory=memory)
    ratio = paired_ratios(times, "plain HF forward")
    rows = []
    print(
        f"encoder bench: {label}, {runner.encoder_key} ({type(model).__name__}), batch {args.batch_size}, "
        f"{args.image_size}px, {layers} layers, device {args.device}, {args.dtype}, threads {torch.get_num_threads()}, "
        f"{args.repeats} interleaved repeats"
    )
    print(f"r per layer for {args.level}: {r_per_layer[0]} (thresholds from BatchTopK on the same {len(names)} photos)")
    print("ratio = time / plain forward's (median over repeats of the ratio within a repeat); FLOP ratio = "
          "analytic FLOPs / the unmerged encoder's (2 per "
          "multiply-add), the floor the time ratio is chasing; padded = what the padded batch computes (attention "
          "and matching at the batch's longest count per layer)")
    print(f"{'variant':28s} {'median ms':>10s} {'min ms':>9s} {'ratio':>7s} {'FLOP ratio':>10s} {'time/FLOP':>9s} "
          f"{'padded':>7s} {'tokens out':>11s} {'peak MiB':>9s}")
    for k in variants:
        med = statistics.median(times[k])
        peak = memory.mib(k)
        rows.append({"variant": k, "median_ms": 1000 * med, "min_ms": 1000 * min(times[k]),
                     "times_ms": [1000 * t for t in times[k]], "ratio": ratio[k],
                     "flop_ratio": flop_ratio[k], "time_over_flop_ratio": ratio[k] / flop_ratio[k],
                     "padded_flop_ratio": padded_ratio[k],
                     "mean_tokens": tokens[k], "peak_mib": peak})
        print(f"{k:28s} {1000 * med:10.1f} {1000 * min(times[k]):9.1f} {ratio[k]:7.3f} {flop_ratio[k]:10.3f} "
              f"{ratio[k] / flop_ratio[k]:9.3f} {padded_ratio[k]:7.3f} {tokens[k]:11.1f} "
              f"{'-' if peak is None else f'{peak:.0f}':>9s}")
    if args.json_out:
        write_json(args.json_out, {
            "encoder": runner.encoder_key, "model": label, "shape": args.shape, "layers": layers,
            "seed": args.seed if args.shape else None, "dtype": args.dtype,
            "batch_size": args.batch_size, "image_size": args.image_size,
            "device": args.device, "cpu_prepack": args.cpu_prepack,
            "prepack_below_rows": args.prepack_below_rows, "threads": torch.get_num_threads(),
            "repeats": args.repeats, "level": args.level, "r_per_layer": r_per_layer, "photos": names, "results": rows,
            "encoder_gflops_unmerged": full_flops / 1e9,
        })
    return 0
