"""model_args of the lmms-eval models: parsed, typed and checked before anything loads.

lmms-eval hands model_args over as keyword arguments after its own light parsing ("true" ->
True, "4" -> 4, "0.5" -> 0.5) and adds ``batch_size`` (a string from the CLI), ``device`` and
``max_batch_size``. Everything is validated here so that a typo or a contradiction fails at
construction with a message that lists the valid arguments, instead of an hour into a run.

The method's arguments come from its spec in ``dymu_eval.methods`` (defaults, parsers, rules
that span arguments), the family's from its ``FamilySpec``; this module only adds the arguments
every model shares and decides which method runs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError
from ..methods import FAMILIES, METHODS
from ..methods import parse as p
from ..methods.settings import method_arg_help, method_arg_names, resolve_method_args
from ..vocabulary import AUTO_DTYPE, BASELINE, CUSTOM_LEVEL, DEFAULT_METHOD, DTYPES
from .names import model_preset

MODEL_DTYPES = (AUTO_DTYPE, *DTYPES)

# the arguments every model takes: name -> one-line help
COMMON_ARGS: dict[str, str] = {
    "pretrained": "checkpoint: hub id or local directory (default: the model name's family checkpoint); "
                  "--model dymu_llava serves every family, chosen by the checkpoint's model_type",
    "method": "the reduction method (default: the model's own, e.g. dymu for dymu_llava)",
    "device_map": "cpu | cuda | cuda:N | auto (default cuda:<local rank> when a GPU is present, else cpu)",
    "dtype": f"{' | '.join(MODEL_DTYPES)} (default auto: the checkpoint's dtype on GPU, float32 on CPU)",
    "attn_implementation": "passed to from_pretrained (eager | sdpa ...); reduced runs use dymu-eval's own attention",
    "batch_size": "requests per forward pass: give it as lmms-eval's --batch_size (the lmms-eval CLI always "
                  "passes its own; as a model_arg only through the Python API without batch_size=)",
    "max_batch_size": "accepted for lmms-eval compatibility, unused",
    "device": "accepted for lmms-eval compatibility: used as device_map when device_map is not given",
    "stats_dir": "where the per-sample stats JSONL goes (default <--output_path>/dymu_stats)",
    "cpu_prepack": "true: pack every Linear weight once for oneDNN (CPU, float32 only; costs as much memory again "
                   "as the Linear weights, and makes short reduced sequences as fast per FLOP as long ones)",
}


def valid_args() -> dict[str, str]:
    """Every model_arg with its help: the common ones, each registered method's and family's."""
    out = dict(COMMON_ARGS)
    out["method"] = f"{' | '.join(METHODS)} ({COMMON_ARGS['method']})"
    out.update(method_arg_help())
    for name in FAMILIES:
        for arg, spec in FAMILIES[name].args.items():
            out.setdefault(arg, f"[{name}] {spec.help}")
    return out


@dataclass(frozen=True)
class ModelArgs:
    """The resolved settings of one model instance (what ran, for stats and tables). The method's
    own arguments are in ``method_args`` (also readable as attributes: ``args.fastv_k``)."""

    pretrained: str
    method: str
    level: str
    family: str
    device_map: str | None
    dtype: str
    attn_implementation: str | None
    batch_size: int
    stats_dir: str | None
    cpu_prepack: bool = False
    method_args: dict[str, Any] = field(default_factory=dict)
    family_args: dict[str, Any] = field(default_factory=dict)

    @property
    def vtu(self) -> bool:
        """VTU on or off (methods without the switch run without it)."""
        return bool(self.method_args.get("vtu", False))

    def __getattr__(self, name: str) -> Any:
        for where in ("method_args", "family_args"):
            values = self.__dict__.get(where, {})
            if name in values:
                return values[name]
        if name in method_arg_names() or any(name in FAMILIES[f].args for f in FAMILIES):
            return None  # another method's (or family's) argument: not set for this run
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _given(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The model_args actually set (lmms-eval passes unset ones as None or "")."""
    valid = valid_args()
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        listing = "\n".join(f"  {k}: {v}" for k, v in valid.items())
        raise ConfigError(f"unknown model_args {', '.join(unknown)}; valid model_args are:\n{listing}")
    return {k: v for k, v in kwargs.items() if v is not None and v != ""}


def _method(given: dict[str, Any], preset: str) -> str:
    """The method to run: ``method=`` or the model's own, ``none`` whenever either side asks for the baseline."""
    names = tuple(m for m in METHODS if m != BASELINE) + (BASELINE,)  # the baseline last, as the help reads
    method = p.choice(names)("method", given.get("method", preset))
    if "method" in given and preset != DEFAULT_METHOD and method not in (preset, BASELINE):
        raise ConfigError(
            f"method={method} contradicts this model (a {preset} preset); use --model dymu_llava with method={method}"
        )
    level = str(given["level"]).lower() if "level" in given else None
    if method == BASELINE and level not in (None, BASELINE):
        raise ConfigError(f"method=none (the unreduced baseline) contradicts level={level}")
    if level == BASELINE and "method" in given and method != BASELINE:
        raise ConfigError(f"level=none (the unreduced baseline) contradicts method={method}")
    return BASELINE if level == BASELINE else method


def _family_values(given: dict[str, Any], family: str) -> dict[str, Any]:
    """The family's own arguments, typed; another family's are refused."""
    spec = FAMILIES[family]
    foreign = sorted({a for f in FAMILIES for a in FAMILIES[f].args} - set(spec.args) & set(given))
    if foreign:
        owners = [FAMILIES[f].title or f for f in FAMILIES if set(foreign) & set(FAMILIES[f].args)]
        raise ConfigError(f"model_args {', '.join(foreign)} apply to {', '.join(owners)} only, "
                          f"and this checkpoint is a {spec.title or family} model")
    return {name: arg.parse(name, given.get(name, arg.default)) for name, arg in spec.args.items()}


def _level(method: str, values: dict[str, Any]) -> str:
    spec = METHODS[method]
    if spec.level_args:
        return values.get("level") or CUSTOM_LEVEL
    return BASELINE if method == BASELINE else CUSTOM_LEVEL


def _batch_size(given: dict[str, Any], flags: tuple[str, ...]) -> int:
    """Requests per forward pass; a bad value names lmms-eval's --batch_size when it came from there."""
    try:
        return p.integer("batch_size", given.get("batch_size", 1), minimum=1)
    except ConfigError:
        if "batch_size" not in flags:
            raise
        raise ConfigError(f"--batch_size {given['batch_size']}: dymu-eval models need an integer >= 1 "
                          "(not auto)") from None


def parse_model_args(kwargs: dict[str, Any], model: str = "dymu_llava", flags: tuple[str, ...] = (),
                     family: str | None = None) -> ModelArgs:
    """Check and resolve raw model_args for the lmms-eval model ``model``; ``flags`` names the kwargs
    lmms-eval added from its own options (--batch_size, --device), for messages; ``family`` is the
    checkpoint's (default: the model name's)."""
    given = _given(kwargs)
    preset_method, preset_family = model_preset(model)
    family = family or preset_family
    family_values = _family_values(given, family)
    method = _method(given, preset_method)
    values = resolve_method_args(method, {k: v for k, v in given.items() if k in method_arg_names()})
    device_map = given.get("device_map") or given.get("device")
    return ModelArgs(
        pretrained=str(given.get("pretrained", FAMILIES[family].default_checkpoint)),
        method=method,
        level=_level(method, values),
        family=family,
        device_map=str(device_map) if device_map else None,
        dtype=p.choice(MODEL_DTYPES)("dtype", given.get("dtype", AUTO_DTYPE)),
        attn_implementation=given.get("attn_implementation"),
        batch_size=_batch_size(given, flags),
        stats_dir=given.get("stats_dir"),
        cpu_prepack=p.boolean("cpu_prepack", given.get("cpu_prepack", False)),
        method_args={k: v for k, v in values.items() if k != "level"},
        family_args=family_values,
    )
