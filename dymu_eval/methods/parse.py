"""Parsers for model_args: each takes (name, raw value) and returns the typed value or raises a
ConfigError that names the argument. lmms-eval has already turned "true"/"4"/"0.5" into Python
values, so each accepts both forms."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

Parser = Callable[[str, Any], Any]


def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"model_arg {name}={value!r} must be true or false")


def integer(name: str, value: Any, minimum: int = 0) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"model_arg {name}={value!r} must be an integer >= {minimum}") from None
    if out < minimum:
        raise ConfigError(f"model_arg {name}={value!r} must be an integer >= {minimum}")
    return out


def positive_int(name: str, value: Any) -> int:
    return integer(name, value, minimum=1)


def number(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"model_arg {name}={value!r} must be a number") from None
    if not math.isfinite(out):
        raise ConfigError(f"model_arg {name}={value!r} must be a finite number")
    return out


def text(name: str, value: Any) -> str:
    return str(value)


def choice(choices: tuple[str, ...]) -> Parser:
    """A parser accepting one of ``choices`` (case-insensitive)."""

    def parse(name: str, value: Any) -> str:
        word = str(value).lower()
        if word not in choices:
            raise ConfigError(f"unknown {name}={value!r}; choose one of: {', '.join(choices)}")
        return word

    return parse


def count_or_fraction(name: str, value: Any) -> float:
    """A count (``64``) or a fraction in (0, 1] (``0.25``); a whole float above 1 is a count."""
    from ..vocabulary import check_keep

    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            raise ConfigError(f"model_arg {name}={value!r} must be a token count or a fraction in (0, 1]") from None
    return check_keep(value, f"model_arg {name}")


def layer_list(name: str, value: Any) -> tuple[int, ...]:
    """``8/16/24`` (or one number) -> (8, 16, 24): strictly increasing integers >= 1."""
    parts = [p for p in str(value).replace(" ", "").split("/") if p]
    try:
        out = tuple(int(float(p)) if float(p).is_integer() else None for p in parts)  # type: ignore[misc]
    except ValueError:
        out = (None,)
    if not out or None in out or any(v < 1 for v in out) or list(out) != sorted(set(out)):
        raise ConfigError(f"model_arg {name}={value!r} must be '/'-separated increasing layer numbers >= 1, "
                          "e.g. 8/16/24")
    return out


def fraction_list(name: str, value: Any) -> tuple[float, ...]:
    """``0.5/0.25`` -> (0.5, 0.25): fractions in (0, 1]."""
    try:
        out = tuple(float(p) for p in str(value).replace(" ", "").split("/") if p)
    except ValueError:
        out = ()
    if not out or any(not (0.0 < v <= 1.0) for v in out):
        raise ConfigError(f"model_arg {name}={value!r} must be '/'-separated fractions in (0, 1], e.g. 0.5/0.25")
    return out


def number_text(value: Any) -> str:
    """A number as tables write it: ``2.0`` -> ``2``, ``0.50`` -> ``0.5``; other text unchanged."""
    try:
        num = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(num)) if num.is_integer() else f"{num:g}"
