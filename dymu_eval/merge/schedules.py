"""How many merges each layer gets: constant, linear (decreasing) or reverse-linear.

Follows the DyMU reference configs: a total of r_total merges over all L layers of the
encoder (the VLM may read an earlier layer; the later entries are then simply not used).
"""
from __future__ import annotations

from ..errors import ConfigError
from ..vocabulary import DEFAULT_SCHEDULE, check_schedule


def _constant(r_total: int, n: int) -> list[int]:
    base, rem = divmod(r_total, n)
    return [base + (1 if i < rem else 0) for i in range(n)]


def _linear(r_total: int, n: int) -> list[int]:
    """r0 = 2M//L decreasing by r0/L per layer while the sum stays below M, then the remainder.

    Example M=384, L=24: [32, 30, 29, ..., 8, 6, 4, 0, 0, 0]. When the ramp cannot reach M within
    L layers (tiny M), what is left is spread one by one from the first layer, so the total
    is always M and the schedule still decreases.
    """
    r0 = (2 * r_total) // n
    step = r0 / n
    out: list[int] = []
    reached = False
    while len(out) < n:
        v = int(r0 - len(out) * step)
        if v <= 0:
            break
        if sum(out) + v >= r_total:
            reached = True
            break
        out.append(v)
    left = r_total - sum(out)
    if reached and len(out) < n:
        out.append(left)
        left = 0
    out += [0] * (n - len(out))
    for i in range(left):  # only when the ramp runs out first: +1 from the first layer on
        out[i % n] += 1
    return out


def merges_per_layer(
    r: int | None, num_layers: int, schedule: str = DEFAULT_SCHEDULE, *, r_total: int | None = None
) -> list[int]:
    """Merges for each of ``num_layers`` layers.

    Give either ``r`` (merges per layer on average, so r_total = r * num_layers) or ``r_total``.
    """
    if (r is None) == (r_total is None):
        raise ConfigError("merges_per_layer: give exactly one of r (per layer) or r_total")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers <= 0:
        raise ConfigError(f"merges_per_layer: num_layers must be a positive integer, got {num_layers!r}")
    total = r * num_layers if r is not None else r_total
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ConfigError(f"merges_per_layer: r must be an integer >= 0, got {r if r is not None else r_total!r}")
    check_schedule(schedule)
    if total == 0:
        return [0] * num_layers
    if schedule == "constant":
        return _constant(total, num_layers)
    ramp = _linear(total, num_layers)
    return ramp if schedule == "linear" else ramp[::-1]
