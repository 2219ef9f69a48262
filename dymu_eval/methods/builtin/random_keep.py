"""Random pruning: a seeded random subset of the patch tokens per image (``merge.select.RandomKeep``),
kept tokens at their original positions."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...vocabulary import RANDOM_KEEP
from .. import parse
from ..registry import METHODS, Arg, MethodSpec


def build(context: Any, values: dict[str, Any]):
    from ...merge.select import RandomKeep
    from ...vlm.reduction import Reduction

    selector = RandomKeep(values["keep"], values["seed"])
    context.runner.check_selector(selector)
    return Reduction("random", selector=selector, original_positions=True)


def amount(values: Mapping[str, str]) -> str:
    """``k64 s0`` (a count) or ``25% s0`` (a fraction, written with a point)."""
    keep = str(values["keep"]).strip()
    try:
        number = float(keep)
    except ValueError:
        text = keep
    else:
        fraction = any(c in keep for c in ".eE") and number <= 1
        text = f"{number * 100:g}%" if fraction else f"k{int(number)}"
    return f"{text} s{parse.number_text(values['seed'])}"


def budget(target: Any) -> dict[str, str]:
    """B tokens -> keep=B (a fraction budget: that fraction of the model's patches)."""
    return {"keep": str(target.tokens)}


def reproduce(ctx: Any) -> list:
    """The matrix's budgets (LLaVA-1.5: 192/128/64 tokens per image), seed 0."""
    return ctx.budget_runs("random")


def demo(ctx: Any) -> list:
    """A quarter of the tokens, seed 0, in the main section."""
    from ..reproduce import MatrixRun

    return [MatrixRun("Random-0.25", {"keep": "0.25", "seed": "0"})] if ctx.main else []


METHODS.register("random", MethodSpec(
    label="Random",
    summary="method=random (its budget is keep=, its subset seed=; kept tokens stay at their original "
            "positions, so there is no VTU)",
    build=build,
    table_order=10,
    args={"keep": Arg(RANDOM_KEEP, parse.count_or_fraction,
                      f"random: visual tokens kept per image, a count (64) or a fraction in (0, 1] "
                      f"(default {RANDOM_KEEP})"),
          "seed": Arg(0, parse.integer, "random: seed of the subsets; the same seed keeps the same tokens of an "
                                        "image (default 0)")},
    amount=amount,
    needs=frozenset({"select"}),
    reproduce=reproduce,
    demo=demo,
    baseline=True,
    budget=budget,
))
