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
))
