"""LLaVA-PruMerge and PruMerge+ (Shang et al., 2024) without fine-tuning: the IQR outliers of the
attention each patch gets, each absorbing its nearest tokens, at the layer the VLM reads
(``merge.prumerge``). Adaptive: how many tokens an image keeps depends on the image, so neither
method takes ``budget=`` (docs/prumerge.md)."""
from __future__ import annotations

from typing import Any

from .. import parse
from ..registry import METHODS, Arg, MethodSpec

_VTU = Arg(False, parse.boolean, "true | false: each kept row stands for its own patch and the extra row for "
                                 "every other patch under VTU (default false)")


def _builder(plus: bool):
    def build(context: Any, values: dict[str, Any]):
        from ...merge.prumerge import PruMerge
        from ...vlm.reduction import Reduction

        selector = PruMerge(plus=plus)
        context.runner.check_selector(selector)
        return Reduction("prumerge_plus" if plus else "prumerge", selector=selector, vtu=values["vtu"])

    return build


def _reproducer(name: str):
    def reproduce(ctx: Any) -> list:
        """Its default setting (adaptive, no VTU), on every family: the official code has no other knob."""
        from ..reproduce import MatrixRun

        return [MatrixRun(name, {})]

    return reproduce


for _name, _plus, _label, _summary, _order in (
    ("prumerge", False, "PruMerge", "method=prumerge (adaptive: the IQR outliers of the attention each patch "
                                    "gets, about 32 of 576 on LLaVA-1.5; no budget)", 45),
    ("prumerge_plus", True, "PruMerge+", "method=prumerge_plus (adaptive: PruMerge's outliers plus spatially "
                                         "uniform samples, about 144 of 576 on LLaVA-1.5; no budget)", 46),
):
    METHODS.register(_name, MethodSpec(
        label=_label,
        summary=_summary,
        build=_builder(_plus),
        table_order=_order,
        args={"vtu": _VTU},
        needs=frozenset({"select"}),
        reproduce=_reproducer(_name),
        baseline=True,
    ))
