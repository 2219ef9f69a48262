"""model_args of the lmms-eval models: parsed, typed and checked before anything loads.

lmms-eval hands model_args over as keyword arguments after its own light parsing ("true" ->
True, "4" -> 4, "0.5" -> 0.5) and adds ``batch_size`` (a string from the CLI), ``device`` and
``max_batch_size``. Everything is validated here so that a typo or a contradiction fails at
construction with a message that lists the valid arguments, instead of an hour into a run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

METHODS = ("dymu", "tome", "fastv", "random", "pool", "visionzip", "none")
SELECTION_METHODS = ("random", "pool", "visionzip")  # fixed budgets chosen after the encoder
LEVELS = ("low", "mid", "high", "none")
SCHEDULES = ("constant", "linear", "reverse_linear")
DTYPES = ("auto", "float32", "float16", "bfloat16")

# name -> one-line help (the error message for an unknown argument prints this table)
VALID_ARGS: dict[str, str] = {
    "pretrained": "LLaVA-1.5 checkpoint: hub id or local directory (default llava-hf/llava-1.5-7b-hf)",
    "method": "dymu | tome | fastv | random | pool | visionzip | none (default: the model's own, e.g. dymu for "
              "dymu_llava, visionzip for visionzip_llava)",
    "level": "low | mid | high | none (none = the unreduced baseline; default low for dymu)",
    "thresholds": "DyMU thresholds: cache key (calibration dataset name) or a JSON file (default llava_instruct)",
    "schedule": "constant | linear | reverse_linear: merges per layer over depth (default constant)",
    "r": "merges per encoder layer: ToMe's r; for dymu it selects the threshold entry calibrated with this r",
    "vtu": "true | false: virtual token unmerging in the LLM (default true for dymu; false for tome, pool, "
           "visionzip; random cannot use it)",
    "fastv_k": "FastV: decoder layer after which image tokens are pruned (default 2)",
    "fastv_ratio": "FastV: fraction of image tokens dropped, 0 <= R < 1 (default 0.5)",
    "keep": "random: visual tokens kept per image, a count (64) or a fraction in (0, 1] (0.25) (default 0.25)",
    "seed": "random: seed of the random subsets; the same seed keeps the same tokens of an image (default 0)",
    "pool_factor": "pool: average-pool the patch grid by this integer factor, 2 -> 2x2 patches per token (default 2)",
    "dominant": "visionzip: dominant tokens per image, the CLS token included where there is one (default 54)",
    "contextual": "visionzip: contextual (merged) tokens per image (default 10)",
    "device_map": "cpu | cuda | cuda:N | auto (default cuda:<local rank> when a GPU is present, else cpu)",
    "dtype": "auto | float32 | float16 | bfloat16 (default auto: the checkpoint's dtype on GPU, float32 on CPU)",
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
    keep: int | float | None
    seed: int | None
    pool_factor: int | None
    dominant: int | None
    contextual: int | None
    device_map: str | None
    dtype: str
    attn_implementation: str | None
    batch_size: int
    stats_dir: str | None

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


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).lower()
    if text not in choices:
        raise ConfigError(f"unknown {name}={value!r}; choose one of: {', '.join(choices)}")
    return text


def parse_model_args(kwargs: dict[str, Any], preset: str = "dymu") -> ModelArgs:
    """Check and resolve raw model_args for a model whose default method is ``preset``."""
    unknown = sorted(set(kwargs) - set(VALID_ARGS))
    if unknown:
        raise ConfigError(f"unknown model_args {', '.join(unknown)}; valid model_args are:\n{_valid_list()}")
    given = {k: v for k, v in kwargs.items() if v is not None and v != ""}

    method = _choice("method", given.get("method", preset), METHODS)
    if "method" in given and preset != "dymu" and method not in (preset, "none"):
        raise ConfigError(
            f"method={method} contradicts this model (a {preset} preset); use --model dymu_llava with method={method}"
        )
    level = _choice("level", given["level"], LEVELS) if "level" in given else None
    if method == "none" and level not in (None, "none"):
        raise ConfigError(f"method=none (the unreduced baseline) contradicts level={level}")
    if level == "none" and "method" in given and method != "none":
        raise ConfigError(f"level=none (the unreduced baseline) contradicts method={method}")
    if level == "none" or method == "none":
        method, level = "none", "none"

    def forbid(names: tuple[str, ...], why: str) -> None:
        bad = [n for n in names if n in given]
        if bad:
            raise ConfigError(f"model_args {', '.join(bad)} do not apply to {why}")

    selection_args = ("keep", "seed", "pool_factor", "dominant", "contextual")
    if method not in SELECTION_METHODS:
        forbid(selection_args, f"method={method} (they set random, pool and visionzip)")
    r = _int("r", given["r"]) if "r" in given else None
    schedule = _choice("schedule", given.get("schedule", "constant"), SCHEDULES)
    thresholds = str(given["thresholds"]) if "thresholds" in given else None
    fastv_k = fastv_ratio = None
    selection: dict[str, Any] = dict.fromkeys(("keep", "seed", "pool_factor", "dominant", "contextual"))
    if method == "none":
        forbid(("r", "thresholds", "schedule", "fastv_k", "fastv_ratio"), "the unreduced baseline (level=none)")
        vtu = False
    elif method == "dymu":
        forbid(("fastv_k", "fastv_ratio"), "method=dymu (use method=fastv)")
        if r is not None and level is not None:
            raise ConfigError("give either level= or r= for method=dymu, not both "
                              "(r selects thresholds calibrated with that r)")
        level = level or ("low" if r is None else "custom")
        thresholds = thresholds or "llava_instruct"
        vtu = _bool("vtu", given.get("vtu", True))
    elif method == "tome":
        forbid(("thresholds", "fastv_k", "fastv_ratio"), "method=tome (thresholds are for dymu, fastv_* for fastv)")
        if r is not None and level is not None:
            raise ConfigError("give either level= or r= for method=tome, not both")
        if r is None and level is None:
            raise ConfigError("method=tome needs r= (merges per layer) or level=low|mid|high")
        level = level or "custom"
        vtu = _bool("vtu", given.get("vtu", False))
    elif method in SELECTION_METHODS:
        level, vtu, selection = _selection(method, given, forbid)
    else:  # fastv
        forbid(("r", "thresholds", "schedule", "vtu"), "method=fastv (it prunes in the LLM, nothing is merged)")
        if level is not None:
            raise ConfigError("level= does not apply to method=fastv; "
                              "set fastv_ratio= (fraction of image tokens dropped)")
        level = "none"
        vtu = False
        fastv_k = _int("fastv_k", given.get("fastv_k", 2))
        try:
            fastv_ratio = float(given.get("fastv_ratio", 0.5))
        except (TypeError, ValueError):
            raise ConfigError(f"model_arg fastv_ratio={given['fastv_ratio']!r} must be a number in [0, 1)") from None
        if not 0.0 <= fastv_ratio < 1.0:
            raise ConfigError(f"model_arg fastv_ratio={fastv_ratio} must be in [0, 1) "
                              "(the fraction of image tokens dropped)")

    device_map = given.get("device_map") or given.get("device")
    return ModelArgs(
        pretrained=str(given.get("pretrained", "llava-hf/llava-1.5-7b-hf")),
        method=method,
        level=level,
        thresholds=thresholds if method == "dymu" else None,
        schedule=schedule if method in ("dymu", "tome") else "constant",
        r=r,
        vtu=vtu,
        fastv_k=fastv_k,
        fastv_ratio=fastv_ratio,
        **selection,
        device_map=str(device_map) if device_map else None,
        dtype=_choice("dtype", given.get("dtype", "auto"), DTYPES),
        attn_implementation=given.get("attn_implementation"),
        batch_size=_int("batch_size", given.get("batch_size", 1), minimum=1),
        stats_dir=given.get("stats_dir"),
    )


def _keep(value: Any) -> int | float:
    """A count (``64``) or a fraction (``0.25``); lmms-eval already turned digits into numbers."""
    from ..merge.select import check_keep

    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            raise ConfigError(f"model_arg keep={value!r} must be a token count or a fraction in (0, 1]") from None
    try:
        return check_keep(value)
    except ConfigError as exc:
        raise ConfigError(f"model_arg {exc}") from None


def _selection(method: str, given: dict[str, Any], forbid) -> tuple[str, bool, dict[str, Any]]:
    """(level, vtu, settings) of random / pool / visionzip: the budget is the setting, not a level."""
    forbid(("r", "thresholds", "schedule", "fastv_k", "fastv_ratio", "level"),
           f"method={method} (its budget is set by {_BUDGET[method]})")
    own = {"random": ("keep", "seed"), "pool": ("pool_factor",), "visionzip": ("dominant", "contextual")}[method]
    forbid(tuple(a for a in ("keep", "seed", "pool_factor", "dominant", "contextual") if a not in own),
           f"method={method} (its settings are {', '.join(own)})")
    out: dict[str, Any] = dict.fromkeys(("keep", "seed", "pool_factor", "dominant", "contextual"))
    if method == "random":
        if _bool("vtu", given.get("vtu", False)):
            raise ConfigError("vtu=true does not apply to method=random: dropped tokens leave positions no row "
                              "stands for (random keeps the kept tokens at their original positions)")
        out["keep"] = _keep(given.get("keep", 0.25))
        out["seed"] = _int("seed", given.get("seed", 0))
        return "custom", False, out
    if method == "pool":
        out["pool_factor"] = _int("pool_factor", given.get("pool_factor", 2), minimum=1)
    else:
        out["dominant"] = _int("dominant", given.get("dominant", 54), minimum=1)
        out["contextual"] = _int("contextual", given.get("contextual", 10), minimum=1)
    return "custom", _bool("vtu", given.get("vtu", False)), out


_BUDGET = {"random": "keep=", "pool": "pool_factor=", "visionzip": "dominant= and contextual="}
