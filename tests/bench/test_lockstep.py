"""The lockstep timing loop of the decode bench: a step of each variant in turn, the first one
rotating, warm-up repeats and each variant's closing step (no decoder call) left uncounted."""
from __future__ import annotations

from dymu_eval.bench._timing import lockstep


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
