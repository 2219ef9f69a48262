"""VisionZip (Yang et al., CVPR'25): dominant tokens by the attention they receive plus contextual
tokens merged from the rest, at the layer the VLM reads (``merge.select.VisionZip``)."""
from __future__ import annotations

from typing import Any

from ...vocabulary import VISIONZIP_CONTEXTUAL, VISIONZIP_DOMINANT
from .. import parse
from ..registry import METHODS, Arg, MethodSpec


def build(context: Any, values: dict[str, Any]):
    from ...merge.select import VisionZip
    from ...vlm.reduction import Reduction

    selector = VisionZip(values["dominant"], values["contextual"])
    context.runner.check_selector(selector)
    return Reduction("visionzip", selector=selector, vtu=values["vtu"])


def budget(target: Any) -> dict[str, str]:
    """Its published LLaVA-1.5 settings 162+30, 108+20, 54+10 for 192/128/64 tokens; any other budget
    split in the same dominant:contextual ratio (27:5), at least one of each."""
    from ...errors import ConfigError
    from ...vocabulary import VISIONZIP_SETTINGS

    k = target.tokens
    if k < 2:
        raise ConfigError(f"budget={target.budget}: VisionZip keeps at least 2 tokens per image (1 dominant, "
                          "1 contextual)")
    d, c = VISIONZIP_SETTINGS[0]
    dominant = min(k - 1, max(1, round(k * d / (d + c))))
    return {"dominant": str(dominant), "contextual": str(k - dominant)}


def reproduce(ctx: Any) -> list:
    """VisionZip at the matrix's budgets (LLaVA-1.5: 162+30, 108+20, 54+10)."""
    return ctx.budget_runs("visionzip")


def demo(ctx: Any) -> list:
    """54 dominant + 10 contextual tokens (a quarter of the micro towers' 256 patches per image or crop)
    where the section has the patch grids for it: LLaVA-1.5 and NeXT's crops."""
    from ..reproduce import MatrixRun

    if not (ctx.main or ctx.family == "llava_next"):
        return []
    return [MatrixRun("VisionZip-54+10", {"dominant": "54", "contextual": "10"})]


METHODS.register("visionzip", MethodSpec(
    label="VisionZip",
    summary="method=visionzip (its budget is dominant= and contextual=)",
    build=build,
    table_order=40,
    args={"dominant": Arg(VISIONZIP_DOMINANT, parse.positive_int,
                          "visionzip: dominant tokens per image, the CLS token included where there is one "
                          f"(default {VISIONZIP_DOMINANT})"),
          "contextual": Arg(VISIONZIP_CONTEXTUAL, parse.positive_int,
                            f"visionzip: contextual (merged) tokens per image (default {VISIONZIP_CONTEXTUAL})"),
          "vtu": Arg(False, parse.boolean, "true | false: merged rows stand for their patches under VTU "
                                           "(default false)")},
    amount=lambda v: f"{parse.number_text(v['dominant'])}+{parse.number_text(v['contextual'])}",
    needs=frozenset({"select"}),
    reproduce=reproduce,
    demo=demo,
    baseline=True,
    budget=budget,
))
