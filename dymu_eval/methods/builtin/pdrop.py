"""PyramidDrop (Xing et al., CVPR'25): at each stage layer, keep the image tokens the last
instruction token attends to most, ranked with that layer's own query and keys (the pruner is
``language.pdrop.PyramidDrop``); kept tokens are renumbered contiguously; nothing is merged in the encoder."""
from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .. import parse
from ..registry import METHODS, Arg, MethodSpec

LAYERS, RATIOS = "8/16/24", "0.5/0.25/0.125"  # the official scripts' layer_list and image_token_ratio_list


def check_pdrop(layers: tuple[int, ...], ratios: tuple[float, ...], decoder_layers: int | None = None) -> None:
    """One ratio per stage layer, strictly decreasing; every stage layer below the decoder's depth (when known)."""
    if len(ratios) != len(layers):
        raise ConfigError(f"pdrop_ratios={'/'.join(parse.number_text(r) for r in ratios)}: give one ratio per "
                          f"stage layer of pdrop_layers ({len(layers)} layers, {len(ratios)} ratios)")
    if any(b >= a for a, b in zip(ratios, ratios[1:])):
        raise ConfigError(f"pdrop_ratios={'/'.join(parse.number_text(r) for r in ratios)}: ratios must strictly "
                          "decrease (each is the fraction of the original image tokens kept after its stage)")
    if decoder_layers is not None and layers[-1] >= decoder_layers:
        raise ConfigError(f"pdrop_layers={'/'.join(str(v) for v in layers)}: stage layers must be in "
                          f"1..{decoder_layers - 1} for this {decoder_layers}-layer decoder")


def build(context: Any, values: dict[str, Any]):
    from ...language.pdrop import PyramidDrop
    from ...vlm.reduction import Reduction

    check_pdrop(values["pdrop_layers"], values["pdrop_ratios"], context.decoder_layers)
    return Reduction(pruner=PyramidDrop(values["pdrop_layers"], values["pdrop_ratios"]))


BUDGET_LAYERS = (2, 10, 20)  # stages of a 32-layer decoder for budget= (a third-party 128-token script's)


def budget(target: Any) -> dict[str, str]:
    """B tokens as a layer average, as the peer tables count PDrop's (its repository publishes no
    192/128/64 configuration): stages at layers 2/10/20 of 32 (scaled to the decoder's depth) keeping
    r, r/2, r/4 of the image tokens, r chosen so that the average over layers is B (LLaVA-1.5-7B:
    192/128/64 -> r = 0.542/0.319/0.097; the third-party script's 128-token setting is 0.32/0.16/0.08)."""
    layers = target.decoder_layers
    stages: list[int] = []
    for base in BUDGET_LAYERS:
        stages.append(max(stages[-1] + 1 if stages else 1, round(base * layers / 32)))
    if stages[-1] >= layers:
        raise ConfigError(f"budget={target.budget}: PDrop's three stages need a decoder of at least 4 layers "
                          f"(this one has {layers})")
    bounds = [*stages, layers]
    weight = sum((b - a) * 0.5 ** i for i, (a, b) in enumerate(zip(bounds, bounds[1:])))
    ratio = (layers * target.fraction - stages[0]) / weight
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"budget={target.budget}: PDrop's pyramid (stages {'/'.join(map(str, stages))}, "
                          "ratios r, r/2, r/4) cannot average that many image tokens; give pdrop_ratios=")
    ratios = [ratio * 0.5 ** i for i in range(len(stages))]
    return {"pdrop_layers": "/".join(map(str, stages)), "pdrop_ratios": "/".join(f"{r:.6g}" for r in ratios)}


def reproduce(ctx: Any) -> list:
    """PDrop at its official setting (8/16/24, 0.5/0.25/0.125) and at the matrix's budgets."""
    from ..reproduce import MatrixRun

    return [MatrixRun("pdrop_l8-16-24", {"pdrop_layers": LAYERS, "pdrop_ratios": RATIOS}),
            *ctx.budget_runs("pdrop")]


METHODS.register("pdrop", MethodSpec(
    label="PDrop",
    summary="method=pdrop (it prunes in the LLM at several stages; pdrop_layers= and pdrop_ratios= set it)",
    build=build,
    table_order=32,
    args={"pdrop_layers": Arg(LAYERS, parse.layer_list, "PyramidDrop: '/'-separated stage layers, each the first "
                                                        f"decoder layer on its reduced rows (default {LAYERS})"),
          "pdrop_ratios": Arg(RATIOS, parse.fraction_list, "PyramidDrop: '/'-separated fractions of the original "
                                                          "image tokens kept after each stage, decreasing "
                                                          f"(default {RATIOS})")},
    check=lambda given, values: check_pdrop(values["pdrop_layers"], values["pdrop_ratios"]),
    amount=lambda v: f"L{v['pdrop_layers']} R{v['pdrop_ratios']}",
    needs=frozenset({"prune"}),
    budget=budget,
    reproduce=reproduce,
))
