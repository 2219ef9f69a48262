"""model_args of the lmms-eval models: parsed, typed and checked before anything loads.

lmms-eval hands model_args over as keyword arguments after its own light parsing ("true" ->
True, "4" -> 4, "0.5" -> 0.5) and adds ``batch_size`` (a string from the CLI), ``device`` and
``max_batch_size``. Everything is validated here so that a typo or a contradiction fails at
construction with a message that lists the valid arguments, instead of an hour into a run.

Which reduction arguments a method accepts, and their defaults, come from
``dymu_eval.vocabulary.METHOD_SPECS``; this module only types them (``_PARSERS``) and applies
the two rules that span arguments (level vs r, and the FastV bounds).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..errors import ConfigError
from ..vocabulary import (
    AUTO_DTYPE,
    BASELINE,
    CUSTOM_LEVEL,
    DEFAULT_MERGE_ORDER,
    DEFAULT_SCHEDULE,
    DEFAULT_THRESHOLDS,
    DTYPES,
    LEVEL_CHOICES,
    LLAVA_15,
    MERGE_ORDERS,
    METHOD_SPECS,
    METHODS,
    MODEL_DEFAULTS,
    REDUCTION_ARGS,
    SCHEDULES,
    check_fastv,
    default_method,
)

MODEL_DTYPES = (AUTO_DTYPE, *DTYPES)

# name -> one-line help (the error message for an unknown argument prints this table)
VALID_ARGS: dict[str, str] = {
    "pretrained": f"LLaVA-1.5 checkpoint: hub id or local directory (default {LLAVA_15})",
    "method": f"{' | '.join(METHODS)} (default: dymu for dymu_llava, tome for tome_llava, fastv for fastv_llava)",
    "level": f"{' | '.join(LEVEL_CHOICES)} (none = the unreduced baseline; default low for dymu)",
    "thresholds": f"DyMU thresholds: cache key (calibration dataset name) or a JSON file (default {DEFAULT_THRESHOLDS})",
    "schedule": f"{' | '.join(SCHEDULES)}: merges per layer over depth (default {DEFAULT_SCHEDULE})",
    "merge_order": f"{' | '.join(MERGE_ORDERS)}: token order after each encoder merge, the official code's "
                   f"(default {DEFAULT_MERGE_ORDER}) or original position; dymu uses thresholds calibrated in it",
    "r": "merges per encoder layer: ToMe's r; for dymu it selects the threshold entry calibrated with this r",
    "vtu": "true | false: virtual token unmerging in the LLM (default true for dymu, false for tome)",
    "fastv_k": f"FastV: decoder layer after which image tokens are pruned (default {METHOD_SPECS['fastv'].args['fastv_k']})",
    "fastv_ratio": "FastV: fraction of image tokens dropped, 0 <= R < 1 "
                   f"(default {METHOD_SPECS['fastv'].args['fastv_ratio']})",
    "device_map": "cpu | cuda | cuda:N | auto (default cuda:<local rank> when a GPU is present, else cpu)",
    "dtype": f"{' | '.join(MODEL_DTYPES)} (default auto: the checkpoint's dtype on GPU, float32 on CPU)",
    "attn_implementation": "passed to from_pretrained (eager | sdpa ...); reduced runs use dymu-eval's own attention",
    "batch_size": "requests per forward pass (int; requests of different lengths are padded)",
    "max_batch_size": "accepted for lmms-eval compatibility, unused",
    "device": "accepted for lmms-eval compatibility: used as device_map when device_map is not given",
    "stats_dir": "where the per-sample stats JSONL goes (default <--output_path>/dymu_stats)",
}


@dataclass(frozen=True)
class ModelArgs:
    """The resolved settings of one model instance (what ran, for stats and tables)."""

    pretrained: str
    method: str
    level: str
    thresholds: str | None
    schedule: str
    r: int | None
    vtu: bool
    fastv_k: int | None
    fastv_ratio: float | None
    device_map: str | None
    dtype: str
    attn_implementation: str | None
    batch_size: int
    stats_dir: str | None
    merge_order: str | None = None  # ToMe / DyMU: vocabulary.MERGE_ORDERS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _valid_list() -> str:
    return "\n".join(f"  {k}: {v}" for k, v in VALID_ARGS.items())


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"model_arg {name}={value!r} must be true or false")


def _int(name: str, value: Any, minimum: int = 0) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"model_arg {name}={value!r} must be an integer >= {minimum}") from None
    if out < minimum:
        raise ConfigError(f"model_arg {name}={value!r} must be an integer >= {minimum}")
    return out


def _float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"model_arg {name}={value!r} must be a number") from None


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).lower()
    if text not in choices:
        raise ConfigError(f"unknown {name}={value!r}; choose one of: {', '.join(choices)}")
    return text


# how each reduction argument is typed (every name in vocabulary.REDUCTION_ARGS)
_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "level": lambda n, v: _choice(n, v, LEVEL_CHOICES),
    "r": _int,
    "thresholds": lambda n, v: str(v),
    "schedule": lambda n, v: _choice(n, v, SCHEDULES),
    "merge_order": lambda n, v: _choice(n, v, MERGE_ORDERS),
    "vtu": _bool,
    "fastv_k": _int,
    "fastv_ratio": _float,
}


def _given(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The model_args actually set (lmms-eval passes unset ones as None or "")."""
    unknown = sorted(set(kwargs) - set(VALID_ARGS))
    if unknown:
        raise ConfigError(f"unknown model_args {', '.join(unknown)}; valid model_args are:\n{_valid_list()}")
    return {k: v for k, v in kwargs.items() if v is not None and v != ""}


def _method(given: dict[str, Any], preset: str) -> str:
    """The method to run: ``method=`` or the model's own, ``none`` whenever either side asks for the baseline."""
    method = _choice("method", given.get("method", preset), METHODS)
    if "method" in given and preset != "dymu" and method not in (preset, BASELINE):
        raise ConfigError(
            f"method={method} contradicts this model (a {preset} preset); use --model dymu_llava with method={method}"
        )
    level = _choice("level", given["level"], LEVEL_CHOICES) if "level" in given else None
    if method == BASELINE and level not in (None, BASELINE):
        raise ConfigError(f"method=none (the unreduced baseline) contradicts level={level}")
    if level == BASELINE and "method" in given and method != BASELINE:
        raise ConfigError(f"level=none (the unreduced baseline) contradicts method={method}")
    return BASELINE if level == BASELINE else method


def _reduction_values(given: dict[str, Any], method: str) -> dict[str, Any]:
    """The method's own arguments, typed, with its defaults; refuses another method's arguments."""
    spec = METHOD_SPECS[method]
    foreign = [n for n in REDUCTION_ARGS if n in given and n not in spec.args]
    if foreign:
        raise ConfigError(f"model_args {', '.join(foreign)} do not apply to {spec.forbidden_why}")
    values = {name: given.get(name, default) for name, default in spec.args.items()}
    return {name: None if v is None else _PARSERS[name](name, v) for name, v in values.items()}


def _merge_amount(given: dict[str, Any], method: str, values: dict[str, Any]) -> None:
    """ToMe and DyMU take a level or r (DyMU defaults to level low); r alone records level custom."""
    if "r" in given and "level" in given:
        why = " (r selects thresholds calibrated with that r)" if method == "dymu" else ""
        raise ConfigError(f"give either level= or r= for method={method}, not both{why}")
    if "r" in given:
        values["level"] = CUSTOM_LEVEL
    elif values["level"] is None and method == "dymu":
        values["level"] = "low"
    elif values["level"] is None:
        raise ConfigError(f"method={method} needs r= (merges per layer) or level=low|mid|high")


def parse_model_args(kwargs: dict[str, Any], model: str = "dymu_llava") -> ModelArgs:
    """Check and resolve raw model_args for the lmms-eval model ``model`` (its defaults: vocabulary.MODEL_DEFAULTS)."""
    given = _given(kwargs)
    method = _method(given, default_method(model))
    values = _reduction_values(given, method)
    if method in ("dymu", "tome"):
        _merge_amount(given, method, values)
    if method == "fastv":
        check_fastv(values["fastv_k"], values["fastv_ratio"])
    device_map = given.get("device_map") or given.get("device")
    return ModelArgs(
        pretrained=str(given.get("pretrained", MODEL_DEFAULTS.get(model, {}).get("pretrained", LLAVA_15))),
        method=method,
        level=values.get("level") or BASELINE,
        thresholds=values.get("thresholds"),
        schedule=values.get("schedule") or DEFAULT_SCHEDULE,
        r=values.get("r"),
        vtu=bool(values.get("vtu", False)),
        fastv_k=values.get("fastv_k"),
        fastv_ratio=values.get("fastv_ratio"),
        device_map=str(device_map) if device_map else None,
        dtype=_choice("dtype", given.get("dtype", AUTO_DTYPE), MODEL_DTYPES),
        attn_implementation=given.get("attn_implementation"),
        batch_size=_int("batch_size", given.get("batch_size", 1), minimum=1),
        stats_dir=given.get("stats_dir"),
        merge_order=values.get("merge_order"),
    )
