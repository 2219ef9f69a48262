"""Benchmarks behind `dymu-eval bench <name>`.

Every module in this package is one benchmark: it defines ``register(subparsers)``, which adds a
sub-parser named after the benchmark and sets ``func=<callable(args) -> int>``. Adding a
benchmark means adding a module here and its name to ``BENCHMARKS`` (subcommands register one
way throughout the CLI: a static list). Modules import heavy libraries inside their run function
so that `dymu-eval --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
from types import ModuleType

BENCHMARKS = ("encoder", "language")


def add_timing_options(p: argparse.ArgumentParser, repeats: int = 7) -> None:
    """Options every benchmark shares: interleaved repeats, warm-up, threads, device, JSON output."""
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of every variant first (default 1)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu; cuda times with CUDA events and "
                                                   "records peak memory)")
    p.add_argument("--dtype", default="float32", help="weights and activations: float32 (default), bfloat16, "
                                                      "float16, float64")
    p.add_argument("--cpu-prepack", action="store_true",
                   help="pack every Linear weight once for oneDNN (CPU, float32), in every variant alike: MKL "
                        "otherwise re-packs each weight at every call, a fixed cost that short sequences pay most")
    p.add_argument("--prepack-below-rows", type=int, metavar="N",
                   help="with --cpu-prepack: products of fewer than N rows take the packed copy, longer ones MKL "
                        "(default 512, the crossover on a 2-core Zen 3; measure your CPU's)")
    p.add_argument("--json", dest="json_out", help="also write the numbers to this JSON file")


def add_shape_options(p: argparse.ArgumentParser, shapes: dict) -> None:
    """``--shape`` (a real model's widths, random weights), ``--layers`` and ``--seed``."""
    p.add_argument("--shape", help=f"random weights at a real model's widths: {' | '.join(shapes)} "
                                   "(default: the micro model)")
    p.add_argument("--layers", type=int, help="layers of the --shape model (default: all of the real model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")


def check_timing_options(args: argparse.Namespace) -> None:
    """The shared options checked before anything loads (one line naming the flag); ``args.device``
    becomes the checked device."""
    from ..commands.options import check_at_least, check_output_file, resolve_device
    from ..errors import ConfigError
    from .shapes import torch_dtype

    check_at_least("--repeats", args.repeats, 1)
    check_at_least("--warmup", args.warmup, 0)
    check_at_least("--threads", args.threads, 1)
    check_output_file("--json", args.json_out)
    dtype = torch_dtype(args.dtype)
    args.device = resolve_device(args.device)
    if args.prepack_below_rows is not None:
        if not args.cpu_prepack:
            raise ConfigError("--prepack-below-rows needs --cpu-prepack")
        check_at_least("--prepack-below-rows", args.prepack_below_rows, 1)
    if args.cpu_prepack:
        from ..prepack import PACKED_BELOW_ROWS, check_prepack

        check_prepack(args.device, dtype, "--cpu-prepack")
        args.prepack_below_rows = args.prepack_below_rows or PACKED_BELOW_ROWS


def prepacked(model, args: argparse.Namespace, label: str) -> str:
    """With ``--cpu-prepack``, ``model``'s Linear layers packed; the label says so."""
    if not args.cpu_prepack:
        return label
    from ..prepack import prepack_linears

    count = prepack_linears(model, args.prepack_below_rows)
    return f"{label}, {count} Linear weights prepacked (oneDNN, below {args.prepack_below_rows} rows)"


def available() -> dict[str, ModuleType]:
    """name -> module of every benchmark in ``BENCHMARKS``."""
    return {name: importlib.import_module(f"{__name__}.{name}") for name in BENCHMARKS}
