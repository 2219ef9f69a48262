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


def budget(target: Any) -> dict[str, str]:
    """B tokens as the peer tables count FastV's (VisionZip #22): the average over the decoder's layers,
    K=2 layers on every image token and the rest on k = (L*B - K*N) / (L - K) of them (LLaVA-1.5-7B:
    192/128/64 -> 167/98/30 kept, R = 1 - k/N)."""
    from ...errors import ConfigError

    layers, patches = target.decoder_layers, target.patches
    kept = round((layers * target.tokens - FASTV_K * patches) / max(layers - FASTV_K, 1))
    if layers <= FASTV_K or kept < 1:
        raise ConfigError(f"budget={target.budget}: FastV (K={FASTV_K}) cannot average that few image tokens "
                          f"over this {layers}-layer decoder; give a larger budget or fastv_ratio=")
    return {"fastv_k": str(FASTV_K), "fastv_ratio": f"{1.0 - kept / patches:.6g}"}


def reproduce(ctx: Any) -> list:
    """FastV at its paper setting (K=2, R=50%), and at the matrix's budgets (layer averages)."""
    from ..reproduce import MatrixRun

    args = {"fastv_k": str(FASTV_K), "fastv_ratio": f"{FASTV_RATIO:g}"}
    return [MatrixRun(f"fastv_k{FASTV_K}_r{FASTV_RATIO:g}", args), *ctx.budget_runs("fastv")]


def demo(ctx: Any) -> list:
    """FastV at its paper setting in every section."""
    from ..reproduce import MatrixRun

    return [MatrixRun("FastV", {"fastv_k": str(FASTV_K), "fastv_ratio": f"{FASTV_RATIO:g}"})]


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
    demo=demo,
    budget=budget,
))
