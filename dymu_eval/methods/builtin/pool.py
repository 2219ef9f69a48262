"""Spatial pooling of the patch grid by an integer factor (``merge.select.GridPool``)."""
from __future__ import annotations

from typing import Any

from ...vocabulary import POOL_FACTOR
from .. import parse
from ..registry import METHODS, Arg, MethodSpec


def build(context: Any, values: dict[str, Any]):
    from ...merge.select import GridPool
    from ...vlm.reduction import Reduction

    selector = GridPool(values["pool_factor"])
    context.runner.check_selector(selector)
    return Reduction("pool", selector=selector, vtu=values["vtu"])


def _display(amount: str) -> str:
    return f" {amount[1:]}x{amount[1:]}" if amount.startswith("f") else f" {amount}"


METHODS.register("pool", MethodSpec(
    label="Pool",
    summary="method=pool (its budget is pool_factor=)",
    build=build,
    table_order=20,
    args={"pool_factor": Arg(POOL_FACTOR, parse.positive_int,
                             f"pool: average-pool the patch grid by this integer factor, 2 -> 2x2 patches per token "
                             f"(default {POOL_FACTOR})"),
          "vtu": Arg(False, parse.boolean, "true | false: a pooled row stands for its patches under VTU "
                                           "(default false)")},
    amount=lambda v: f"f{parse.number_text(v['pool_factor'])}",
    display=_display,
    needs=frozenset({"select"}),
))
