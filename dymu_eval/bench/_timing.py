"""The timing loop every benchmark shares: interleaved repeats, so drift and warm caches spread
evenly over the variants, with a device sync around each measured call."""
from __future__ import annotations

import time
from typing import Callable


def device_sync(device: str) -> Callable[[], None]:
    """What to call before reading the clock: CUDA's synchronize, or nothing on CPU."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """Seconds one call of ``fn`` takes."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, warmup: int, sync: Callable[[], None],
                measure: Callable[[Callable[[], object]], float] | None = None) -> dict[str, list[float]]:
    """name -> one value per repeat. Each repeat runs every variant once, starting one later than
    the previous repeat. ``measure`` turns a variant into its value (default: its wall time)."""
    measure = measure or (lambda fn: timed(fn, sync))
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    values: dict[str, list[float]] = {k: [] for k in variants}
    keys = list(variants)
    for rep in range(repeats):
        for k in keys[rep % len(keys):] + keys[: rep % len(keys)]:
            values[k].append(measure(variants[k]))
    return values
