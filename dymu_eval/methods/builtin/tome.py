"""ToMe (Bolya et al., ICLR'23): r merges per encoder layer by bipartite matching (``merge.TopR``);
the paper's ToMe rows run without VTU (Table 6 adds it)."""
from __future__ import annotations

from typing import Any

from ..merging import check_amount, level_of, level_or_r, merge_args
from ..registry import METHODS, MethodSpec


def build(context: Any, values: dict[str, Any]):
    from ...merge import TopR, merges_per_layer
    from ...vlm.reduction import Reduction

    r = values["r"]
    if r is None:
        r = context.runner.r_for_level(level_of(values))
    per_layer = merges_per_layer(int(r), context.runner.num_layers, values["schedule"])
    return Reduction("tome", TopR(per_layer, merge_order=values["merge_order"]), vtu=values["vtu"],
                     r_per_layer=per_layer)


def reproduce(ctx: Any) -> list:
    """Paper Table 2 (and 4): r per level for the family's encoder; Table 6: ToMe-low with VTU."""
    from ..reproduce import MatrixRun

    runs = [MatrixRun(f"tome_r{ctx.tome_r[lv]}", {"r": str(ctx.tome_r[lv])}) for lv in ctx.levels]
    if ctx.paper and "low" in ctx.levels:
        runs.append(MatrixRun(f"tome_r{ctx.tome_r['low']}_vtu", {"r": str(ctx.tome_r["low"]), "vtu": "true"}))
    return runs


def demo(ctx: Any) -> list:
    """ToMe at each level the section runs (no VTU, as the paper's rows)."""
    from ..reproduce import MatrixRun

    return [MatrixRun(f"ToMe-{lv}", {"level": lv}) for lv in ctx.run_levels]


def _display(amount: str) -> str:
    return f" r={amount[1:]}" if amount.startswith("r") and amount[1:].isdigit() else (f"-{amount}" if amount else "")


METHODS.register("tome", MethodSpec(
    label="ToMe",
    summary="method=tome (level= or r= sets the merges per layer)",
    build=build,
    table_order=50,
    args=merge_args(False, "merges per encoder layer (ToMe's r)"),
    check=check_amount("tome", None),
    amount=level_or_r,
    display=_display,
    reproduce=reproduce,
    demo=demo,
    needs=frozenset({"merge"}),
    level_args=("level", "r"),
))
