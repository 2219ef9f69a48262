"""One request's counts -> the efficiency fields of its stats row (token views, FLOPs per stage, KV bytes).

The family module fills :class:`RequestCounts` from what actually ran (encoder token counts per
block, unique rows, virtual positions, FastV's kept entries, generated tokens); everything else
is derived here, so a new method or model family only supplies its counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .flops import (
    CutCount,
    PerStage,
    StageFlops,
    decode_flops,
    decode_value_rows,
    encoder_flops,
    flop_equivalent_tokens,
    layer_averaged_rows,
    paper_qk_macs,
    prefill_flops,
    prefill_plan,
    projector_flops,
)
from .shape import VlmShape

# Token definitions, in the words the tables use (docs/plugin.md, per-sample stats).
TOKEN_DEFINITIONS = {
    "encoder_rows": "vision-tower output rows after merging or selection, summed over the request's images "
                    "(CLS included)",
    "llm_rows": "distinct visual rows the LLM processes (the 'tokens' of DyMU and ToMe)",
    "virtual_positions": "visual positions the LLM attends over (VTU: the unmodified count)",
    "layer_avg_rows": "visual rows averaged over decoder layers (FastV's convention)",
    "flop_equiv_tokens": "visual tokens at which the unreduced model spends the same prefill FLOPs",
}


@dataclass
class RequestCounts:
    """What one request ran with. Encoder lists are per image (crop, frame): ``encoder_counts[i][j]``
    tokens entered block j (last entry: tokens out); ``encoder_matched[i][j]``: block j ran the matcher."""

    text_rows: int  # text tokens in the LLM input (prompt, and continuation for loglikelihood)
    visual_rows: int  # unique visual rows given to the LLM (through the projector)
    visual_positions: int  # visual positions of the unmodified sequence
    vtu: bool
    encoder_counts: list[list[int]] = field(default_factory=list)
    encoder_matched: list[list[bool]] = field(default_factory=list)
    new_tokens: int = 0
    head_rows: int = 1  # rows through the LM head at prefill
    cuts: list[CutCount] = field(default_factory=list)  # an LLM-side pruner's cuts, in layer order
    selected: list[int] | None = None  # rows per image a selection kept after the encoder (random, pool, VisionZip)
    projector_rows: int | None = None  # rows through the projector when not the visual rows (OneVision: merged rows)
    selection_flops: float = 0.0  # what a selection after the encoder spent choosing (Selector.score_flops)


def stage_flops(shape: VlmShape, c: RequestCounts) -> tuple[PerStage, list]:
    """(FLOPs per stage, the decoder layer plan) of one request."""
    enc = StageFlops()
    for counts, matched in zip(c.encoder_counts, c.encoder_matched):
        enc = enc + encoder_flops(shape.vision, counts, matched)
    enc = enc + StageFlops(other=c.selection_flops)
    plan = prefill_plan(shape.llm.layers, c.text_rows, c.visual_rows, c.visual_positions, c.vtu, c.cuts)
    pre = prefill_flops(shape.llm, plan, c.head_rows, c.cuts)
    dec = decode_flops(shape.llm, [run.keys for run in plan], max(c.new_tokens - 1, 0),
                       decode_value_rows(shape.llm, plan))
    paper = sum(paper_qk_macs(shape.llm.heads, shape.llm.head_dim, run) for run in plan)
    proj_rows = c.visual_rows if c.projector_rows is None else c.projector_rows
    return PerStage(enc, projector_flops(shape, proj_rows), pre, dec, paper), plan


def efficiency_fields(shape: VlmShape, c: RequestCounts, dtype_bytes: int) -> dict[str, Any]:
    """Stats-row fields: token views, FLOPs per stage (2 per multiply-add), KV-cache bytes after prefill."""
    flops, plan = stage_flops(shape, c)
    kv_row = 2 * shape.llm.kv_width * dtype_bytes
    return {
        "encoder_rows": sum(c.selected) if c.selected is not None else sum(counts[-1] for counts in c.encoder_counts),
        "llm_rows": c.visual_rows,
        "virtual_positions": c.visual_positions if c.vtu else c.visual_rows,
        "layer_avg_rows": layer_averaged_rows(plan, c.text_rows),
        "flop_equiv_tokens": flop_equivalent_tokens(shape.llm, flops.prefill.total, c.text_rows, c.head_rows),
        "encoder_flops": flops.encoder.total,
        "projector_flops": flops.projector.total,
        "prefill_flops": flops.prefill.total,
        "prefill_attn_flops": flops.prefill.attention,
        "decode_flops": flops.decode.total,
        "total_flops": flops.total,
        "paper_prefill_qk_macs": flops.paper_prefill_qk_macs,
        "kv_cache_bytes": kv_row * sum(run.rows for run in plan),
        "kv_full_bytes": kv_row * shape.llm.layers * (c.text_rows + c.visual_positions),
    }
