"""Run labels: method, level (or r, or FastV setting), threshold data, schedule, VTU.

The same normaliser reads the results JSON's ``config.model_args`` (strings) and the
plugin's per-sample stats rows (typed values): both use the model_args key names
(DESIGN §4), so one function serves both and a run's two descriptions can be compared.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace

METHOD_ORDER = {"baseline": 0, "Random": 1, "Pool": 2, "FastV": 3, "VisionZip": 4, "ToMe": 5, "DyMU": 6}
_METHOD_NAMES = {
    "baseline": "baseline",
    "none": "baseline",
    "dymu": "DyMU",
    "dtome": "DyMU",
    "tome": "ToMe",
    "fastv": "FastV",
    "random": "Random",
    "pool": "Pool",
    "visionzip": "VisionZip",
}
# model-name prefix -> method, for runs whose model_args do not say method=
_MODEL_METHODS = (("tome", "ToMe"), ("fastv", "FastV"), ("random", "Random"), ("pool", "Pool"),
                  ("visionzip", "VisionZip"))
_VTU_METHODS = ("DyMU", "ToMe", "Pool", "VisionZip")  # methods where VTU is a choice (on by default for DyMU only)
_PLUGIN_MODELS = ("dymu_", "tome_", "fastv_", "random_", "pool_", "visionzip_")
_LEVEL_ORDER = {"low": 0, "mid": 1, "high": 2}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class RunConfig:
    """What distinguishes one measured row from another (all strings, "" when not applicable)."""

    model: str  # lmms-eval model name, e.g. dymu_llava or llava_hf
    family: str  # the checkpoint's name, e.g. llava-1.5-7b-hf: one table per family
    method: str  # baseline | DyMU | ToMe | FastV | Random | Pool | VisionZip | other
    level: str = ""  # low|mid|high, r<merges per layer>, K<k> R<ratio> (FastV), k<count>|<pct>% s<seed>
    # (Random), f<factor> (Pool), <dominant>+<contextual> (VisionZip)
    threshold_data: str = ""
    schedule: str = ""
    vtu: str = ""  # yes | no | ""

    def key(self) -> tuple[str, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def label(self, show_model: bool = True) -> str:
        """Short human label in the paper's wording, e.g. ``DyMU-low w/o VTU``."""
        m = self.method
        if m == "DyMU":
            text = f"DyMU-{self.level}" if self.level else "DyMU"
            if self.vtu == "no":
                text += " w/o VTU"
            if self.schedule and self.schedule != "constant":
                text += f" {self.schedule}"
            if self.threshold_data and self.threshold_data != "llava_instruct":
                text += f" ({self.threshold_data})"
        elif m == "ToMe":
            text = f"ToMe {self.level.replace('r', 'r=', 1)}" if self.level.startswith("r") else "ToMe"
            if self.level and not self.level.startswith("r"):
                text += f"-{self.level}"
            if self.vtu == "yes":
                text += " +VTU"
            if self.schedule and self.schedule != "constant":
                text += f" {self.schedule}"
        elif m == "FastV":
            text = f"FastV {self.level}".strip()
        elif m in ("Random", "VisionZip"):
            text = f"{m} {self.level}".strip()
            if self.vtu == "yes":
                text += " +VTU"
        elif m == "Pool":
            factor = self.level[1:] if self.level.startswith("f") else ""
            text = f"Pool {factor}x{factor}" if factor else "Pool"
            if self.vtu == "yes":
                text += " +VTU"
        else:
            text = m
        if show_model and not self.model.startswith(_PLUGIN_MODELS):
            text += f" [{self.model}]"
        return text

    def sort_key(self) -> tuple:
        lvl = self.level
        if lvl in _LEVEL_ORDER:
            lvl_key: tuple = (0, _LEVEL_ORDER[lvl])
        elif lvl.startswith("r") and lvl[1:].isdigit():
            lvl_key = (1, -int(lvl[1:]))
        else:
            lvl_key = (2, lvl)
        return (self.family, METHOD_ORDER.get(self.method, 9), self.model, self.vtu != ("yes" if self.method == "DyMU" else "no"),
                self.schedule not in ("", "constant"), self.schedule, self.threshold_data, lvl_key)


def parse_model_args(model_args: object) -> dict[str, str]:
    """lmms-eval's ``k=v,k2=v2`` string (or an already parsed dict) -> dict of strings."""
    if isinstance(model_args, dict):
        return {str(k): str(v) for k, v in model_args.items()}
    out: dict[str, str] = {}
    for part in str(model_args or "").split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            out[key.strip()] = value.strip()
    return out


def family_of(pretrained: str) -> str:
    """A checkpoint's family name: the last path part of a hub id or a local folder."""
    name = os.path.basename(str(pretrained).rstrip("/\\"))
    return name or "unknown"


def _bool(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value).strip().lower()
    if text in _TRUE:
        return "yes"
    if text in _FALSE:
        return "no"
    return text


def _number(value: object) -> str | None:
    if value is None or value == "":
        return None
    try:
        num = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(num)) if num.is_integer() else f"{num:g}"


def _dataset_name(value: object) -> str | None:
    """The calibration dataset behind a ``thresholds`` value: a dataset key, a cache record key
    (``encoder__dataset__schedule__amount``) or a thresholds JSON file (its ``dataset.name``)."""
    if value is None or value == "":
        return None
    text = str(value)
    if text.endswith(".json") or "/" in text or "\\" in text:
        try:
            with open(text, encoding="utf-8") as fh:
                name = (json.load(fh).get("dataset") or {}).get("name")
            if name:
                return str(name)
        except (OSError, ValueError, AttributeError):
            pass
        text = os.path.splitext(os.path.basename(text))[0]
    parts = text.split("__")
    return parts[1] if len(parts) == 4 else text


def describe(model: str, values: dict[str, object]) -> dict[str, str | None]:
    """Normalised run fields from model_args or a stats row; None where the source is silent."""
    level = values.get("level")
    level = None if level in (None, "") else str(level).lower()
    raw_method = values.get("method")
    by_model = [name for prefix, name in _MODEL_METHODS if prefix in model]
    if raw_method not in (None, ""):
        method = _METHOD_NAMES.get(str(raw_method).lower(), str(raw_method))
    elif by_model:
        method = by_model[0]
    elif "dymu" in model:
        method = "DyMU" if level != "none" else "baseline"
    else:
        method = "baseline"
    if level == "none" and method != "FastV":
        method = "baseline"
    r = _number(values.get("r"))

    out: dict[str, str | None] = {"method": method, "level": None, "threshold_data": None,
                                  "schedule": None, "vtu": None}
    if method == "DyMU":
        out["level"] = level if level in _LEVEL_ORDER else (f"r{r}" if r else level)
        out["threshold_data"] = _dataset_name(values.get("thresholds"))
    elif method == "ToMe":
        out["level"] = f"r{r}" if r else level
    elif method == "FastV":
        k, ratio = _number(values.get("fastv_k")), _number(values.get("fastv_ratio"))
        out["level"] = f"K{k} R{ratio}" if k is not None and ratio is not None else None
    elif method == "Random":
        out["level"] = _random_level(values.get("keep"), values.get("seed"))
    elif method == "Pool":
        factor = _number(values.get("pool_factor"))
        out["level"] = f"f{factor or 2}"
    elif method == "VisionZip":
        dom, ctx = _number(values.get("dominant")), _number(values.get("contextual"))
        out["level"] = f"{dom or 54}+{ctx or 10}"
    if method in ("DyMU", "ToMe"):
        sched = values.get("schedule")
        out["schedule"] = None if sched in (None, "") else str(sched).lower().replace("-", "_")
    if method in _VTU_METHODS:
        out["vtu"] = _bool(values.get("vtu"))
    return out


def _random_level(keep: object, seed: object) -> str:
    """``k64 s0`` for a count, ``25% s0`` for a fraction (the documented defaults: 0.25, seed 0)."""
    text = "0.25" if keep in (None, "") else str(keep).strip()
    try:
        value = float(text)
    except ValueError:
        amount = text
    else:
        is_fraction = "." in text or "e" in text.lower()
        amount = f"{value * 100:g}%" if is_fraction and value <= 1 else f"k{int(value)}"
    return f"{amount} s{_number(seed) or 0}"


def finalize(model: str, family: str, fields_: dict[str, str | None]) -> RunConfig:
    """Fill the documented defaults (constant schedule; VTU on for DyMU, off for ToMe, Pool, VisionZip)."""
    method = fields_.get("method") or "baseline"
    schedule = fields_.get("schedule") or ("constant" if method in ("DyMU", "ToMe") else "")
    vtu = fields_.get("vtu") or ({"DyMU": "yes"}.get(method, "no") if method in _VTU_METHODS else "")
    return RunConfig(model=model, family=family, method=method, level=fields_.get("level") or "",
                     threshold_data=fields_.get("threshold_data") or "", schedule=schedule, vtu=vtu)


def agrees(from_args: dict[str, str | None], from_stats: dict[str, str | None]) -> bool:
    """True when every field the model_args set explicitly matches what the stats recorded."""
    return all(v is None or from_stats.get(k) in (None, v) for k, v in from_args.items())


def with_family(cfg: RunConfig, family: str) -> RunConfig:
    return replace(cfg, family=family)
