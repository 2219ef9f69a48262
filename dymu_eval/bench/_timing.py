"""The timing loops every benchmark shares: interleaved repeats, so drift and warm caches spread
evenly over the variants, and lockstep decoding, a step of each variant in turn. On CUDA a call
is timed with CUDA events (the GPU's own clock, kernels queued asynchronously included) and its
peak memory is recorded; on CPU with the wall clock. Ratios between variants are taken per repeat
and then summarised (``paired_ratios``)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def device_sync(device: str) -> Callable[[], None]:
    """What to call before reading the clock: CUDA's synchronize, or nothing on CPU."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def timed(fn: Callable[[], T], sync: Callable[[], None], device: str = "cpu") -> tuple[float, T]:
    """(seconds one call of ``fn`` takes (CUDA events on a CUDA device), what it returned)."""
    if device.startswith("cuda"):
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        sync()
        start.record()
        value = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000, value
    sync()
    start_s = time.perf_counter()
    value = fn()
    sync()
    return time.perf_counter() - start_s, value


class PeakMemory:
    """Per variant, the largest CUDA memory peak (bytes) seen over its calls; None on CPU."""

    def __init__(self, device: str):
        self.device = device if device.startswith("cuda") else None
        self.peak: dict[str, int] = {}

    def around(self, name: str, measure: Callable[[], float]) -> float:
        if self.device is None:
            return measure()
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)
        value = measure()
        self.peak[name] = max(self.peak.get(name, 0), int(torch.cuda.max_memory_allocated(self.device)))
        return value

    def mib(self, name: str) -> float | None:
        return None if name not in self.peak else self.peak[name] / 2 ** 20


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, warmup: int, sync: Callable[[], None],
                measure: Callable[[Callable[[], object]], float] | None = None, device: str = "cpu",
                memory: PeakMemory | None = None) -> dict[str, list[float]]:
    """name -> one value per repeat. Each repeat runs every variant once, starting one later than
    the previous repeat. ``measure`` turns a variant into its value (default: its time);
    ``memory`` (optional) records each variant's peak."""
    measure = measure or (lambda fn: timed(fn, sync, device)[0])
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    values: dict[str, list[float]] = {k: [] for k in variants}
    keys = list(variants)
    for rep in range(repeats):
        for k in keys[rep % len(keys):] + keys[: rep % len(keys)]:
            fn = variants[k]
            values[k].append(memory.around(k, lambda: measure(fn)) if memory is not None else measure(fn))
    return values


def lockstep(starts: dict[str, Callable[[], Callable[[], bool]]], repeats: int, warmup: int,
             sync: Callable[[], None], device: str = "cpu") -> dict[str, list[float]]:
    """name -> seconds of each of its steps, over the repeats. ``starts[name]()`` sets a variant up
    (a prefill, untimed) and returns its step, which says whether another follows. Every round
    runs one step of each live variant, starting one later than the round before: decoding is
    bound by memory bandwidth, which drifts over seconds on a shared machine, so a step of one
    variant is timed a step away from the same step of the others instead of a whole generation
    away. A step that says none follows (the last token's pick, no decoder call) is not counted."""
    values: dict[str, list[float]] = {k: [] for k in starts}
    for rep in range(warmup + repeats):
        steps = {k: start() for k, start in starts.items()}
        live, turn = list(steps), 0
        while live:
            first = turn % len(live)
            for k in live[first:] + live[:first]:
                seconds, more = timed(steps[k], sync, device)
                if not more:
                    live.remove(k)
                elif rep >= warmup:
                    values[k].append(seconds)
            turn += 1
    return values


def paired_ratios(values: dict[str, list[float]], base: str) -> dict[str, float]:
    """name -> the median, over repeats, of its value divided by ``base``'s value in the same repeat
    (or lockstep round). The calls of one repeat run seconds apart, so a drift of the machine's speed
    that is slower than a repeat cancels out of each ratio instead of landing on whichever variant
    it happened to slow down."""
    if any(len(v) != len(values[base]) for v in values.values()):
        raise ValueError("paired_ratios: every variant needs one value per repeat of the base")
    return {k: statistics.median(a / b for a, b in zip(v, values[base])) for k, v in values.items()}
