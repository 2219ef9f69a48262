"""FastV (Chen et al., ECCV'24): after decoder layer K, keep the image tokens the last token attends
to most (the pruner is ``language.fastv.FastV``); nothing is merged in the encoder."""
from __future__ import annotations

from typing import Any

from ...vocabulary import FASTV_K, FASTV_RATIO, check_fastv
from .. import parse
from ..registry import METHODS, Arg, MethodSpec


def build(context: Any, values: dict[str, Any]):
    from ...language.fastv import FastV
    from ...vlm.reduction import Reduction

    check_fastv(values["fastv_k"], values["fastv_ratio"], context.decoder_layers)
    return Reduction("fastv", pruner=FastV(values["fastv_k"], values["fastv_ratio"]))


def reproduce(ctx: Any) -> list:
    """FastV at its paper setting (K=2, R=50%)."""
    from ..reproduce import MatrixRun

    args = {"fastv_k": str(FASTV_K), "fastv_ratio": f"{FASTV_RATIO:g}"}
    return [MatrixRun(f"fastv_k{FASTV_K}_r{FASTV_RATIO:g}", args)]


METHODS.register("fastv", MethodSpec(
    label="FastV",
    summary="method=fastv (it prunes in the LLM, nothing is merged; fastv_k= and fastv_ratio= set it)",
    build=build,
    table_order=30,
    args={"fastv_k": Arg(FASTV_K, parse.integer, f"FastV: decoder layer after which image tokens are pruned "
                                                  f"(default {FASTV_K})"),
          "fastv_ratio": Arg(FASTV_RATIO, parse.number, "FastV: fraction of image tokens dropped, 0 <= R < 1 "
                                                        f"(default {FASTV_RATIO})")},
    check=lambda given, values: check_fastv(values["fastv_k"], values["fastv_ratio"]),
    amount=lambda v: f"K{parse.number_text(v['fastv_k'])} R{parse.number_text(v['fastv_ratio'])}",
    needs=frozenset({"prune"}),
    reproduce=reproduce,
))
