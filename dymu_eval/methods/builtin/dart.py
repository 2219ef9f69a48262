"""DART (Wen et al., EMNLP'25): after decoder layer K-1, keep pivot image tokens and the image
tokens least similar to the pivots, at their original positions (the pruner is
``language.dart.Dart``); nothing is merged in the encoder."""
from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .. import parse
from ..registry import METHODS, Arg, MethodSpec

LAYER, BUDGET = 2, 128  # the official scripts' pruned_layer and max_num_trunction


def check_dart(layer: int, decoder_layers: int | None) -> None:
    if decoder_layers is not None and layer >= decoder_layers:
        raise ConfigError(f"dart_layer={layer}: must be in 1..{decoder_layers - 1} for this {decoder_layers}-layer "
                          "decoder (DART reads layer K-1's keys)")


def build(context: Any, values: dict[str, Any]):
    from ...language.dart import Dart
    from ...vlm.reduction import Reduction

    check_dart(values["dart_layer"], context.decoder_layers)
    return Reduction(pruner=Dart(values["dart_layer"], values["dart_budget"]))


def budget(target: Any) -> dict[str, str]:
    """B tokens per image -> dart_budget=B/N as a fraction of a request's image entries, so B + 4 rows
    are kept from a LLaVA-1.5 image, the pivots included (the official max_num_trunction 192/128/64,
    reduction ratios 0.667/0.778/0.889), and as many per crop or frame elsewhere."""
    return {"dart_budget": f"{target.tokens / target.patches:.6g}"}


def reproduce(ctx: Any) -> list:
    """DART at the matrix's budgets (LLaVA-1.5: 192/128/64), at its default layer K=2."""
    return ctx.budget_runs("dart")


METHODS.register("dart", MethodSpec(
    label="DART",
    summary="method=dart (it prunes in the LLM by duplication; dart_layer= and dart_budget= set it)",
    build=build,
    table_order=34,
    args={"dart_layer": Arg(LAYER, parse.positive_int, "DART: first decoder layer on the kept rows; pivots come "
                                                       f"from layer K-1's keys (default {LAYER})"),
          "dart_budget": Arg(BUDGET, parse.count_or_fraction,
                             "DART: image tokens picked besides the 4 image pivots, so budget+4 are kept: a "
                             f"count per request or a fraction of its image tokens (default {BUDGET})")},
    amount=lambda v: f"K{v['dart_layer']} B{parse.number_text(v['dart_budget'])}",
    needs=frozenset({"prune"}),
    budget=budget,
    reproduce=reproduce,
))
