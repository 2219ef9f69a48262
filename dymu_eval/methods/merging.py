"""model_args shared by the encoder-merging methods (level or r, schedule, merge order, VTU)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..vocabulary import (
    BASELINE,
    CUSTOM_LEVEL,
    DEFAULT_MERGE_ORDER,
    DEFAULT_SCHEDULE,
    LEVEL_CHOICES,
    LEVELS,
    MERGE_ORDERS,
    SCHEDULES,
)
from . import parse
from .registry import Arg


def merge_args(vtu: bool, r_help: str) -> dict[str, Arg]:
    """level / r / schedule / merge_order / vtu with the given VTU default."""
    return {
        "level": Arg(None, parse.choice(LEVEL_CHOICES),
                     f"{' | '.join(LEVEL_CHOICES)} (none = the unreduced baseline)"),
        "r": Arg(None, parse.integer, r_help),
        "schedule": Arg(DEFAULT_SCHEDULE, parse.choice(SCHEDULES),
                        f"{' | '.join(SCHEDULES)}: merges per layer over depth (default {DEFAULT_SCHEDULE})"),
        "merge_order": Arg(DEFAULT_MERGE_ORDER, parse.choice(MERGE_ORDERS),
                           f"{' | '.join(MERGE_ORDERS)}: token order after each encoder merge, the official code's "
                           f"(default {DEFAULT_MERGE_ORDER}) or original position"),
        "vtu": Arg(vtu, parse.boolean,
                   f"true | false: virtual token unmerging in the LLM (default {str(vtu).lower()})"),
    }


def check_amount(method: str, default_level: str | None):
    """A ``check`` hook: level or r, not both; r alone records level ``custom``."""

    def check(given: dict[str, Any], values: dict[str, Any]) -> None:
        if "r" in given and "level" in given:
            raise ConfigError(f"give either level= or r= for method={method}, not both")
        if "r" in given:
            values["level"] = CUSTOM_LEVEL
        elif values.get("level") is None and default_level is not None:
            values["level"] = default_level
        elif values.get("level") is None:
            raise ConfigError(f"method={method} needs r= (merges per layer) or level=low|mid|high")

    return check


def level_or_r(values: Mapping[str, str]) -> str:
    """The "level" column of a merging run: low|mid|high, or r<merges per layer>."""
    level, r = values.get("level", ""), values.get("r", "")
    if level in LEVELS:
        return level
    if r not in ("", None):
        return f"r{r}"
    return "" if level in (None, BASELINE, CUSTOM_LEVEL) else str(level)


def level_of(values: Mapping[str, Any]) -> str | None:
    """The level to look up in a tower's level table (None for r= or custom)."""
    level = values.get("level")
    return None if level in (None, CUSTOM_LEVEL) else level
