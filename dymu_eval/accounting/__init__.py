"""Efficiency accounting (docs/plugin.md): model shapes, analytic FLOPs per stage, token views, latency.

Torch-free except ``timing`` (which measures, on whatever device the model runs).
"""
from .flops import (
    FLOPS_PER_MAC,
    PAPER_FLOPS_PER_MAC,
    CutCount,
    LayerRun,
    PerStage,
    StageFlops,
    decode_flops,
    encoder_flops,
    flop_equivalent_tokens,
    fvcore_einsum_macs,
    layer_averaged_rows,
    paper_qk_macs,
    prefill_flops,
    prefill_plan,
    projector_flops,
    ranking_flops,
    table1_mflops,
    tome_counts,
    unmerged_counts,
)
from .request import TOKEN_DEFINITIONS, RequestCounts, efficiency_fields, stage_flops
from .shape import TransformerShape, VisionShape, VlmShape, load_shape, preset_names

__all__ = [
    "FLOPS_PER_MAC",
    "PAPER_FLOPS_PER_MAC",
    "TOKEN_DEFINITIONS",
    "CutCount",
    "LayerRun",
    "PerStage",
    "RequestCounts",
    "StageFlops",
    "TransformerShape",
    "VisionShape",
    "VlmShape",
    "decode_flops",
    "efficiency_fields",
    "encoder_flops",
    "flop_equivalent_tokens",
    "fvcore_einsum_macs",
    "layer_averaged_rows",
    "load_shape",
    "paper_qk_macs",
    "prefill_flops",
    "prefill_plan",
    "preset_names",
    "projector_flops",
    "ranking_flops",
    "stage_flops",
    "table1_mflops",
    "tome_counts",
    "unmerged_counts",
]
