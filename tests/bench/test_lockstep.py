"""The lockstep timing loop of the decode bench: a step of each variant in turn, the first one
rotating, warm-up repeats and each variant's closing step (no decoder call) left uncounted; and
the ratios taken within a repeat."""
from __future__ import annotations

import pytest

from dymu_eval.bench._timing import lockstep, paired_ratios


def _variants(lengths: dict[str, int], calls: list[str]):
    """Variants that log each step and have ``n`` counted steps (a closing step says none follows)."""
    def start(name: str, n: int):
        calls.append(f"start {name}")
        left = [n]

        def step() -> bool:
            calls.append(name)
            left[0] -= 1
            return left[0] >= 0
        return step
    return {name: (lambda name=name, n=n: start(name, n)) for name, n in lengths.items()}


def test_rounds_rotate_and_only_decoder_steps_of_timed_repeats_count():
    calls: list[str] = []
    values = lockstep(_variants({"a": 2, "b": 2, "c": 2}, calls), repeats=1, warmup=1, sync=lambda: None)
    assert {k: len(v) for k, v in values.items()} == {"a": 2, "b": 2, "c": 2}
    assert all(s >= 0 for v in values.values() for s in v)
    one_repeat = ["start a", "start b", "start c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert calls == one_repeat * 2


def test_a_variant_that_ends_first_leaves_the_others_stepping():
    calls: list[str] = []
    values = lockstep(_variants({"short": 1, "long": 3}, calls), repeats=2, warmup=0, sync=lambda: None)
    assert {k: len(v) for k, v in values.items()} == {"short": 2, "long": 6}
    assert calls[:8] == ["start short", "start long", "short", "long", "long", "short", "long", "long"]


def test_paired_ratios_divide_within_each_repeat_and_take_the_median():
    # the machine runs at 1x, 2x, then 1.5x its speed; b takes 0.25 of a's time throughout
    speed = [1.0, 0.5, 2 / 3]
    # c's own time swings against a's: ratios 1, 0.25, 2/3
    values = {"a": [4.0 / s for s in speed], "b": [1.0 / s for s in speed], "c": [4.0, 2.0, 4.0]}
    ratios = paired_ratios(values, "a")
    assert ratios["a"] == 1.0 and ratios["b"] == pytest.approx(0.25)
    assert ratios["c"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="one value per repeat"):
        paired_ratios({"a": [1.0, 2.0], "b": [1.0]}, "a")
