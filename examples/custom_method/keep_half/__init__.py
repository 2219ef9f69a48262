"""``method=keep_half``: an LLM-side pruner registered from outside dymu-eval.

After decoder layer 1 it keeps every second visual row of each request, at its original position.
The spec is torch-free; the pruner (``keep_half.pruner``) is imported when a model is built.
"""
from __future__ import annotations

from typing import Any

from dymu_eval.methods import MethodSpec


def build(context: Any, values: dict[str, Any]):
    from dymu_eval.vlm.reduction import Reduction

    from .pruner import KeepHalf

    return Reduction(pruner=KeepHalf())


def register(methods) -> None:
    """Entry point of ``dymu_eval.methods``: dymu-eval calls it with its method registry."""
    methods.register("keep_half", MethodSpec(
        label="KeepHalf",
        summary="method=keep_half (it keeps every second visual row after decoder layer 1; no arguments)",
        build=build,
        amount=lambda values: "1/2 after L1",
        needs=frozenset({"prune"}),
    ))
