"""model_args of the lmms-eval models: parsed, typed and checked before anything loads.

lmms-eval hands model_args over as keyword arguments after its own light parsing ("true" ->
True, "4" -> 4, "0.5" -> 0.5) and adds ``batch_size`` (a string from the CLI), ``device`` and
``max_batch_size``. The model class tells these apart from model_args (``flags``: the ones
lmms-eval added from its own options), so a bad value names the option the user typed.
Everything is validated here so that a typo or a contradiction fails at construction with a
message that lists the valid arguments, instead of an hour into a run.

Which reduction arguments a method accepts, and their defaults, come from
``dymu_eval.vocabulary.METHOD_SPECS``; this module only types them (``_PARSERS``) and applies
the rules that span arguments (level vs r, the FastV bounds).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..errors import ConfigError
from ..vocabulary import (
    AUTO_DTYPE,
    BASELINE,
    CUSTOM_LEVEL,
    DEFAULT_LEVEL,
    DEFAULT_MERGE_ORDER,
    DEFAULT_SCHEDULE,
    DEFAULT_THRESHOLDS,
    DTYPES,
    LAYOUTS,
    LEVEL_CHOICES,
    LLAVA_15,
    MAX_FRAMES,
    MERGE_ORDERS,
    METHOD_SPECS,
    METHODS,
    MODEL_DEFAULTS,
    MULTI_IMAGE_MODES,
    ONEVISION_7B,
    REDUCTION_ARGS,
    SCHEDULES,
    SELECTION_METHODS,
    check_fastv,
    check_keep,
    default_method,
)

MODEL_DTYPES = (AUTO_DTYPE, *DTYPES)

# name -> one-line help (the error message for an unknown argument prints this table)
VALID_ARGS: dict[str, str] = {
    "pretrained": f"checkpoint: hub id or local directory (default {LLAVA_15}; {ONEVISION_7B} for the "
                  "_onevision models)",
    "method": f"{' | '.join(METHODS)} (default: the model's own, e.g. dymu for dymu_llava, "
              "visionzip for visionzip_llava)",
    "level": f"{' | '.join(LEVEL_CHOICES)} (none = the unreduced baseline; default low for dymu)",
    "thresholds": "DyMU thresholds: cache key (calibration dataset name) or a JSON file "
                  f"(default {DEFAULT_THRESHOLDS})",
    "schedule": f"{' | '.join(SCHEDULES)}: merges per layer over depth (default {DEFAULT_SCHEDULE})",
    "merge_order": f"{' | '.join(MERGE_ORDERS)}: token order after each encoder merge, the official code's "
                   f"(default {DEFAULT_MERGE_ORDER}) or original position; dymu uses thresholds calibrated in it",
    "r": "merges per encoder layer: ToMe's r; for dymu it selects the threshold entry calibrated with this r",
    "vtu": "true | false: virtual token unmerging in the LLM (default true for dymu; false for tome, pool, "
           "visionzip; random keeps original positions instead)",
    "fastv_k": "FastV: decoder layer after which image tokens are pruned "
               f"(default {METHOD_SPECS['fastv'].args['fastv_k']})",
    "fastv_ratio": "FastV: fraction of image tokens dropped, 0 <= R < 1 "
                   f"(default {METHOD_SPECS['fastv'].args['fastv_ratio']})",
    "keep": "random: visual tokens kept per image, a count (64) or a fraction in (0, 1] "
            f"(default {METHOD_SPECS['random'].args['keep']})",
    "seed": "random: seed of the subsets; the same seed keeps the same tokens of an image (default 0)",
    "pool_factor": "pool: average-pool the patch grid by this integer factor, 2 -> 2x2 patches per token "
                   f"(default {METHOD_SPECS['pool'].args['pool_factor']})",
    "dominant": "visionzip: dominant tokens per image, the CLS token included where there is one "
                f"(default {METHOD_SPECS['visionzip'].args['dominant']})",
    "contextual": "visionzip: contextual (merged) tokens per image "
                  f"(default {METHOD_SPECS['visionzip'].args['contextual']})",
    "device_map": "cpu | cuda | cuda:N | auto (default cuda:<local rank> when a GPU is present, else cpu)",
    "dtype": f"{' | '.join(MODEL_DTYPES)} (default auto: the checkpoint's dtype on GPU, float32 on CPU)",
    "attn_implementation": "passed to from_pretrained (eager | sdpa ...); reduced runs use dymu-eval's own attention",
    "ignore_fingerprint": "dymu: true uses thresholds calibrated on other weights than these (the weight "
                          "fingerprint check is skipped with a warning; default false)",
    "batch_size": "requests per forward pass: give it as lmms-eval's --batch_size (the lmms-eval CLI always "
                  "passes its own; as a model_arg only through the Python API without batch_size=)",
    "max_batch_size": "accepted for lmms-eval compatibility, unused",
    "device": "accepted for lmms-eval compatibility: used as device_map when device_map is not given",
    "stats_dir": "where the per-sample stats JSONL goes (default <--output_path>/dymu_stats)",
    "max_frames_num": "LLaVA-OneVision: frames sampled uniformly per video, as lmms-eval's llava_hf "
                      f"(default {MAX_FRAMES})",
    "layout": "LLaVA-OneVision: stock (the unmodified model's sequence, default) | official (the DyMU code's: "
              "crops flattened, no unpadding, newlines or video pooling; its own rows in the tables)",
    "multi_image": "LLaVA-OneVision, several images in a request: anyres (each its own AnyRes crops, as "
                   "lmms-eval's llava_hf; default) | single (one crop and one newline each, transformers' "
                   "multi-image mode)",
}
ONEVISION_ARGS = ("max_frames_num", "layout", "multi_image")


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
    keep: float | None  # an int is a count, a float in (0, 1] a fraction
    seed: int | None
    pool_factor: int | None
    dominant: int | None
    contextual: int | None
    device_map: str | None
    dtype: str
    attn_implementation: str | None
    batch_size: int
    stats_dir: str | None
    merge_order: str | None = None  # ToMe / DyMU: vocabulary.MERGE_ORDERS
    max_frames_num: int | None = None  # LLaVA-OneVision only
    layout: str | None = None  # LLaVA-OneVision only
    multi_image: str | None = None  # LLaVA-OneVision only
    ignore_fingerprint: bool = False  # dymu: thresholds of other weights are used (with a warning)

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


def _keep(name: str, value: Any) -> float:
    """A count (``64``) or a fraction (``0.25``); lmms-eval already turned digits into numbers."""
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            raise ConfigError(f"model_arg {name}={value!r} must be a token count or a fraction in (0, 1]") from None
    try:
        return check_keep(value)
    except ConfigError as exc:
        raise ConfigError(f"model_arg {exc}") from None


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
    "keep": _keep,
    "seed": _int,
    "pool_factor": lambda n, v: _int(n, v, minimum=1),
    "dominant": lambda n, v: _int(n, v, minimum=1),
    "contextual": lambda n, v: _int(n, v, minimum=1),
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
        values["level"] = DEFAULT_LEVEL
    elif values["level"] is None:
        raise ConfigError(f"method={method} needs r= (merges per layer) or level=low|mid|high")


def _onevision_values(given: dict[str, Any], model: str) -> tuple[int | None, str | None, str | None]:
    """(max_frames_num, layout, multi_image) of a LLaVA-OneVision model; refused on the others."""
    if MODEL_DEFAULTS.get(model, {}).get("family") == "onevision":
        return (_int("max_frames_num", given.get("max_frames_num", MAX_FRAMES), minimum=1),
                _choice("layout", given.get("layout", LAYOUTS[0]), LAYOUTS),
                _choice("multi_image", given.get("multi_image", MULTI_IMAGE_MODES[0]), MULTI_IMAGE_MODES))
    bad = [k for k in ONEVISION_ARGS if k in given]
    if bad:
        raise ConfigError(f"model_args {', '.join(bad)} apply to LLaVA-OneVision only "
                          "(--model dymu_llava_onevision or its peers: tome_, fastv_, random_, pool_, "
                          "visionzip_llava_onevision)")
    return None, None, None


def _batch_size(given: dict[str, Any], flags: tuple[str, ...]) -> int:
    """Requests per forward pass; a bad value names lmms-eval's --batch_size when it came from there."""
    try:
        return _int("batch_size", given.get("batch_size", 1), minimum=1)
    except ConfigError:
        if "batch_size" not in flags:
            raise
        raise ConfigError(f"--batch_size {given['batch_size']}: dymu-eval models need an integer >= 1 "
                          "(not auto)") from None


def _ignore_fingerprint(given: dict[str, Any], method: str) -> bool:
    if "ignore_fingerprint" not in given:
        return False
    if method != "dymu":
        raise ConfigError(f"model_arg ignore_fingerprint applies to method=dymu (its thresholds), not method={method}")
    return _bool("ignore_fingerprint", given["ignore_fingerprint"])


def parse_model_args(kwargs: dict[str, Any], model: str = "dymu_llava", flags: tuple[str, ...] = ()) -> ModelArgs:
    """Check and resolve raw model_args for the lmms-eval model ``model`` (its defaults: vocabulary.MODEL_DEFAULTS).
    ``flags`` names the kwargs lmms-eval added from its own options (--batch_size, --device), for messages."""
    given = _given(kwargs)
    max_frames, layout, multi_image = _onevision_values(given, model)
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
        level=values.get("level") or (CUSTOM_LEVEL if method in SELECTION_METHODS else BASELINE),
        thresholds=values.get("thresholds"),
        schedule=values.get("schedule") or DEFAULT_SCHEDULE,
        r=values.get("r"),
        vtu=bool(values.get("vtu", False)),
        fastv_k=values.get("fastv_k"),
        fastv_ratio=values.get("fastv_ratio"),
        keep=values.get("keep"),
        seed=values.get("seed"),
        pool_factor=values.get("pool_factor"),
        dominant=values.get("dominant"),
        contextual=values.get("contextual"),
        device_map=str(device_map) if device_map else None,
        dtype=_choice("dtype", given.get("dtype", AUTO_DTYPE), MODEL_DTYPES),
        attn_implementation=given.get("attn_implementation"),
        batch_size=_batch_size(given, flags),
        stats_dir=given.get("stats_dir"),
        merge_order=values.get("merge_order"),
        max_frames_num=max_frames,
        layout=layout,
        multi_image=multi_image,
        ignore_fingerprint=_ignore_fingerprint(given, method),
    )
