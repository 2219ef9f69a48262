"""`dymu-eval bench <benchmark>`: timing benchmarks (one sub-command per dymu_eval.bench module)."""
from __future__ import annotations

import argparse

from .. import bench


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="timing benchmarks, measured side by side in one run")
    inner = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for module in bench.available().values():
        module.register(inner)
