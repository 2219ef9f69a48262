"""SparseVLM (Zhang et al., ICML'25; official code v1.5): text raters pick the image tokens kept after
three decoder layers, the best dropped ones come back as cluster means, positions continue
contiguously (the pruner is ``language.sparsevlm.SparseVLM``); nothing is merged in the encoder."""
from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .. import parse
from ..registry import METHODS, Arg, MethodSpec

LAYERS = (2, 6, 15)  # the official pruning_loc (modelling_sparse_llama.py)
RETAIN_TOKN = {192: (300, 200, 110), 128: (303, 110, 36), 64: (66, 30, 17)}  # score.py's sparse_token_dict
PAPER_LAYERS = 32  # the depth LAYERS and RETAIN_TOKN were set for (LLaVA-1.5-7B)


def _join(values: tuple[int, ...]) -> str:
    return "/".join(map(str, values))


def layer_list(name: str, value: Any) -> tuple[int, ...]:
    """``2/6/15`` -> (2, 6, 15): strictly increasing layer numbers >= 0 (layer 0's attention may score)."""
    parts = [p for p in str(value).replace(" ", "").split("/") if p]
    out = tuple(parse.integer(name, p) for p in parts) if parts else ()
    if not out or list(out) != sorted(set(out)):
        raise ConfigError(f"model_arg {name}={value!r} must be '/'-separated increasing layer numbers, e.g. 2/6/15")
    return out


def count_list(name: str, value: Any) -> tuple[int, ...]:
    """``300/200/110`` -> (300, 200, 110): strictly decreasing counts >= 1."""
    parts = [p for p in str(value).replace(" ", "").split("/") if p]
    out = tuple(parse.positive_int(name, p) for p in parts) if parts else ()
    if not out or any(b >= a for a, b in zip(out, out[1:])):
        raise ConfigError(f"model_arg {name}={value!r} must be '/'-separated decreasing token counts, e.g. 300/200/110")
    return out


def check_sparsevlm(layers: tuple[int, ...], keep: tuple[int, ...], decoder_layers: int | None = None) -> None:
    """One count per scoring layer; each scoring layer leaves a later layer to cut at (when the depth is known)."""
    if len(keep) != len(layers):
        raise ConfigError(f"sparsevlm_keep={_join(keep)}: give one count per scoring layer of sparsevlm_layers "
                          f"({len(layers)} layers, {len(keep)} counts)")
    if decoder_layers is not None and layers[-1] + 1 >= decoder_layers:
        raise ConfigError(f"sparsevlm_layers={_join(layers)}: scoring layers must be in 0..{decoder_layers - 2} "
                          f"for this {decoder_layers}-layer decoder (the cut follows each)")


def build(context: Any, values: dict[str, Any]):
    from ...language.sparsevlm import SparseVLM
    from ...vlm.reduction import Reduction

    check_sparsevlm(values["sparsevlm_layers"], values["sparsevlm_keep"], context.decoder_layers)
    return Reduction(pruner=SparseVLM(values["sparsevlm_layers"], values["sparsevlm_keep"],
                                      values["sparsevlm_recycle"]))


def scaled_layers(decoder_layers: int) -> tuple[int, ...]:
    """The official scoring layers 2/6/15 at the same depth fractions of a ``decoder_layers``-deep decoder."""
    out: list[int] = []
    for base in LAYERS:
        out.append(max(out[-1] + 1 if out else 0, round(base * decoder_layers / PAPER_LAYERS)))
    if out[-1] + 1 >= decoder_layers:
        raise ConfigError(f"budget=: SparseVLM's three stages need a decoder of at least 4 layers "
                          f"(this one has {decoder_layers})")
    return tuple(out)


def recycled_counts(n_dropped: int) -> tuple[int, int]:
    """(dropped entries recycled, clusters they form): the official ``int(0.3 n) + 1`` and ``int(m / 10) + 1``."""
    n_merge = min(int(n_dropped * 0.3) + 1, n_dropped)
    return n_merge, int(n_merge / 10) + 1


def stage_entries(patches: int, keep: tuple[int, ...], recycle: bool = True) -> list[int]:
    """Image entries after each stage: the kept ones (at most all but one) plus the recycled clusters."""
    out, n = [], patches
    for k in keep:
        kept = min(k, n - 1)
        n = kept + (recycled_counts(n - kept)[1] if recycle and n > kept else 0)
        out.append(n)
    return out


def layer_average(layers: tuple[int, ...], keep: tuple[int, ...], patches: int, decoder_layers: int) -> float:
    """Image tokens averaged over the layers as the official code counts them (its ``num_token``: the
    count after each layer, so a scoring layer counts with its stage): ``patches`` before the first
    scoring layer, then each stage's entries, clusters included (the 192 row gives 192.0 on LLaVA-1.5)."""
    bounds = [*layers, decoder_layers]
    counts = stage_entries(patches, keep)
    return (layers[0] * patches + sum(c * (b - a) for c, a, b in zip(counts, bounds, bounds[1:]))) / decoder_layers


def budget(target: Any) -> dict[str, str]:
    """192/128/64: the official RETAIN_TOKN rows (its layer averages, as it counts them, are about the
    budget). Another budget (a fraction, or a count read as a fraction of the patches): the 192 row's
    shape scaled so that this layer average is fraction x patches."""
    layers = scaled_layers(target.decoder_layers)
    if target.paper is not None and target.patches == 576:
        keep = RETAIN_TOKN[target.paper]
    else:
        keep = _scaled_row(layers, target.fraction * target.patches, target.patches, target.decoder_layers)
        if keep is None:
            raise ConfigError(f"budget={target.budget}: SparseVLM's stages (layers {_join(layers)}) cannot average "
                              f"that many image tokens of {target.patches}; give sparsevlm_keep=")
    return {"sparsevlm_layers": _join(layers), "sparsevlm_keep": _join(keep)}


def _scaled_row(layers: tuple[int, ...], goal: float, patches: int, decoder_layers: int) -> tuple[int, ...] | None:
    """The 192 row's shape, scaled (bisection on the scale, the clusters included) until its layer
    average is ``goal``; None when no scale reaches it with decreasing counts below ``patches``."""
    def row(scale: float) -> tuple[int, ...]:
        return tuple(max(1, round(scale * k * patches / 576)) for k in RETAIN_TOKN[192])

    lo, hi = 0.0, 576 / RETAIN_TOKN[192][0]
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if layer_average(layers, row(mid), patches, decoder_layers) < goal else (lo, mid)
    keep = row(hi)
    ok = keep[0] < patches and all(b < a for a, b in zip(keep, keep[1:]))
    return keep if ok and abs(layer_average(layers, keep, patches, decoder_layers) - goal) <= 1.0 else None


def reproduce(ctx: Any) -> list:
    """SparseVLM at the matrix's budgets (LLaVA-1.5: the official 192/128/64 rows)."""
    return ctx.budget_runs("sparsevlm")


METHODS.register("sparsevlm", MethodSpec(
    label="SparseVLM",
    summary="method=sparsevlm (text raters prune in the LLM at three layers and recycle; sparsevlm_keep= sets it)",
    build=build,
    table_order=36,
    args={"sparsevlm_layers": Arg(_join(LAYERS), layer_list,
                                  "SparseVLM: '/'-separated scoring layers; each one's attention ranks and the cut "
                                  f"takes effect from the next layer (default {_join(LAYERS)}, official pruning_loc)"),
          "sparsevlm_keep": Arg(_join(RETAIN_TOKN[192]), count_list,
                                "SparseVLM: '/'-separated image tokens kept per request at each stage, decreasing "
                                f"(default {_join(RETAIN_TOKN[192])}, the official 192 row)"),
          "sparsevlm_recycle": Arg(True, parse.boolean, "SparseVLM: re-insert cluster means of the best 30% of the "
                                                        "dropped tokens (default true)")},
    check=lambda given, values: check_sparsevlm(values["sparsevlm_layers"], values["sparsevlm_keep"]),
    amount=lambda v: f"K{v['sparsevlm_keep']}" + ("" if parse.boolean("sparsevlm_recycle", v["sparsevlm_recycle"])
                                                  else " norecycle"),
    needs=frozenset({"prune"}),
    budget=budget,
    reproduce=reproduce,
))
