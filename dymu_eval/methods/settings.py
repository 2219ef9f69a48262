"""A method's model_args, resolved: typed by its spec's parsers, defaults filled in, another method's
arguments refused, cross-argument rules applied. Shared by lmms-eval's model_args and the Python API."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .budget import budget_values
from .registry import METHODS


def method_arg_names() -> tuple[str, ...]:
    """Every argument some registered method accepts, in registration order."""
    return tuple(dict.fromkeys(name for m in METHODS for name in METHODS[m].args))


def method_arg_help() -> dict[str, str]:
    """name -> help for every method argument (methods sharing a name: the first one's help, with all owners)."""
    owners: dict[str, list[str]] = {}
    helps: dict[str, str] = {}
    for m in METHODS:
        for name, arg in METHODS[m].args.items():
            owners.setdefault(name, []).append(m)
            helps.setdefault(name, arg.help)
    return {name: f"[{', '.join(owners[name])}] {helps[name]}" for name in helps}


def resolve_method_args(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """Typed values of ``method``'s arguments from ``given`` (raw, only those set); ConfigError for
    arguments of other methods (quoting the method's summary) or bad values."""
    spec = METHODS[method]
    foreign = [n for n in method_arg_names() if n in given and n not in spec.args]
    if foreign:
        raise ConfigError(f"model_args {', '.join(foreign)} do not apply to {spec.summary}")
    values = {}
    for name, arg in spec.args.items():
        raw = given.get(name, arg.default)
        values[name] = None if raw is None else arg.parse(name, raw)
    values = budget_values(spec, given, values)
    if spec.check is not None:
        spec.check({n: v for n, v in given.items() if n in spec.args}, values)
    return values
