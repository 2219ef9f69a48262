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


def reproduce(ctx: Any) -> list:
    """The smallest factor that divides the patch grid (LLaVA-1.5: 2x2, 144 tokens; 27x27: 3x3), with and
    without VTU."""
    import math

    from ..reproduce import MatrixRun

    side = math.isqrt(ctx.patches)
    factor = next(f for f in range(2, side + 1) if side % f == 0)
    return [MatrixRun(f"pool_f{factor}{'_vtu' if vtu else ''}", {"pool_factor": str(factor), **vtu})
            for vtu in ({}, {"vtu": "true"})]


def budget(target: Any) -> dict[str, str]:
    """The integer factor dividing the patch grid whose pooled count is nearest the budget (ties: the
    smaller count); LLaVA-1.5's 24x24 grid: 192 and 128 -> 2x2 (144 tokens), 64 -> 3x3 (64)."""
    import math

    from ...errors import ConfigError

    side = math.isqrt(target.patches)
    if side * side != target.patches:
        raise ConfigError(f"budget={target.budget}: pool needs a square patch grid ({target.patches} patches)")
    factors = [f for f in range(1, side + 1) if side % f == 0]
    best = min(factors, key=lambda f: (abs((side // f) ** 2 - target.tokens), (side // f) ** 2))
    return {"pool_factor": str(best)}


def _display(amount: str) -> str:
    return f" {amount[1:]}x{amount[1:]}" if amount.startswith("f") else f" {amount}"


def demo(ctx: Any) -> list:
    """2x2 pooling in the main section."""
    from ..reproduce import MatrixRun

    return [MatrixRun("Pool-2x2", {"pool_factor": "2"})] if ctx.main else []


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
    reproduce=reproduce,
    demo=demo,
    baseline=True,
    needs=frozenset({"select"}),
    budget=budget,
))
