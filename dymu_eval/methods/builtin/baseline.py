"""The unreduced model through the same code path (``method=none`` or ``level=none``)."""
from __future__ import annotations

from typing import Any

from ...vocabulary import BASELINE, LEVEL_CHOICES
from .. import parse
from ..registry import METHODS, Arg, MethodSpec


def build(context: Any, values: dict[str, Any]):
    from ...vlm.reduction import Reduction

    return Reduction()


def reproduce(ctx: Any) -> list:
    from ..reproduce import MatrixRun

    return [MatrixRun("baseline", {"level": BASELINE})]


METHODS.register(BASELINE, MethodSpec(
    label="baseline",
    summary="the unreduced baseline (method=none or level=none)",
    build=build,
    table_order=0,
    args={"level": Arg(None, parse.choice(LEVEL_CHOICES), f"{' | '.join(LEVEL_CHOICES)} (none = the unreduced "
                                                          "baseline; default low for dymu)")},
    model_name=False,
    reproduce=reproduce,
    demo=reproduce,  # the unreduced run, in every section
))
