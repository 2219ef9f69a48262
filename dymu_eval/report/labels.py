"""Run labels: method, level (or r, or FastV setting), threshold data, schedule, VTU.

The same normaliser reads the results JSON's ``config.model_args`` (strings) and the
plugin's per-sample stats rows (typed values): both use the model_args key names
(docs/plugin.md), so one function serves both and a run's two descriptions can be compared.
Defaults (which method a model name runs, VTU on or off) come from ``dymu_eval.vocabulary``,
the table the plugin itself resolves model_args with.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace

from ..vocabulary import (
    BASELINE,
    DEFAULT_MERGE_ORDER,
    DEFAULT_SCHEDULE,
    DEFAULT_THRESHOLDS,
    LEVELS,
    MERGE_ORDERS,
    METHOD_ORDER,
    METHOD_SPECS,
    MODEL_DEFAULTS,
    SELECTION_METHODS,
    default_method,
    method_label,
)

_METHOD_ALIASES = {"baseline": BASELINE, "dtome": "dymu"}  # other spellings (`dymu-eval tokens` JSON)
_BY_LABEL = {spec.label: spec for spec in METHOD_SPECS.values()}
_LEVEL_ORDER = {level: i for i, level in enumerate(LEVELS)}
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
    merge_order: str = ""  # reference | position for DyMU and ToMe, "" otherwise
    layout: str = ""  # "" (the unmodified model's sequence) or official (LLaVA-OneVision, the DyMU code's)

    def key(self) -> tuple[str, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def label(self, show_model: bool = True) -> str:
        """Short human label in the paper's wording, e.g. ``DyMU-low w/o VTU``."""
        m = self.method
        if m == "DyMU":
            text = f"DyMU-{self.level}" if self.level else "DyMU"
            if self.vtu == "no":
                text += " w/o VTU"
            if self.schedule and self.schedule != DEFAULT_SCHEDULE:
                text += f" {self.schedule}"
            if self.threshold_data and self.threshold_data != DEFAULT_THRESHOLDS:
                text += f" ({self.threshold_data})"
            if self.merge_order not in ("", DEFAULT_MERGE_ORDER):
                text += f" {self.merge_order} order"
        elif m == "ToMe":
            text = f"ToMe {self.level.replace('r', 'r=', 1)}" if self.level.startswith("r") else "ToMe"
            if self.level and not self.level.startswith("r"):
                text += f"-{self.level}"
            if self.vtu == "yes":
                text += " +VTU"
            if self.schedule and self.schedule != DEFAULT_SCHEDULE:
                text += f" {self.schedule}"
            if self.merge_order not in ("", DEFAULT_MERGE_ORDER):
                text += f" {self.merge_order} order"
        elif m == "FastV":
            text = f"FastV {self.level}".strip()
        elif m in ("Random", "Pool", "VisionZip"):
            amount = self.level
            if m == "Pool" and amount.startswith("f"):
                amount = f"{amount[1:]}x{amount[1:]}"
            text = f"{m} {amount}".strip() + (" +VTU" if self.vtu == "yes" else "")
        else:
            text = m
        if self.layout:
            text += f" [{self.layout} layout]"
        if show_model and self.model not in MODEL_DEFAULTS:
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
        return (self.family, METHOD_ORDER.get(self.method, 9), self.model, self.vtu != _default_vtu(self.method),
                self.schedule not in ("", DEFAULT_SCHEDULE), self.schedule, self.threshold_data, lvl_key)


def _default_vtu(method_label_: str) -> str:
    """"yes"/"no" for methods with a VTU switch (its default), "" for the others."""
    args = _BY_LABEL[method_label_].args if method_label_ in _BY_LABEL else {}
    return ("yes" if args["vtu"] else "no") if "vtu" in args else ""


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
    parts = text.split("__")  # a position-order key has a fifth part, ``position``
    return parts[1] if len(parts) == 4 or (len(parts) == 5 and parts[4] in MERGE_ORDERS) else text


def describe(model: str, values: dict[str, object]) -> dict[str, str | None]:
    """Normalised run fields from model_args or a stats row; None where the source is silent."""
    level = values.get("level")
    level = None if level in (None, "") else str(level).lower()
    raw_method = values.get("method")
    if raw_method not in (None, ""):
        key = _METHOD_ALIASES.get(str(raw_method).lower(), str(raw_method).lower())
        method = method_label(key) if key in METHOD_SPECS else str(raw_method)
    else:
        method = method_label(default_method(model))
    if level == BASELINE and method in ("DyMU", "ToMe"):
        method = method_label(BASELINE)
    r = _number(values.get("r"))

    layout = values.get("layout")
    out: dict[str, str | None] = {"method": method, "level": None, "threshold_data": None,
                                  "schedule": None, "vtu": None, "merge_order": None,
                                  "layout": None if layout in (None, "", "stock") else str(layout).lower()}
    if method == "DyMU":
        out["level"] = level if level in _LEVEL_ORDER else (f"r{r}" if r else level)
        out["threshold_data"] = _dataset_name(values.get("thresholds"))
    elif method == "ToMe":
        out["level"] = f"r{r}" if r else level
    elif method == "FastV":
        k, ratio = _number(values.get("fastv_k")), _number(values.get("fastv_ratio"))
        out["level"] = f"K{k} R{ratio}" if k is not None and ratio is not None else None
    elif method in _SELECTION_LABELS:
        out["level"] = _selection_level(method, values)
    if method in ("DyMU", "ToMe"):
        sched = values.get("schedule")
        out["schedule"] = None if sched in (None, "") else str(sched).lower().replace("-", "_")
        order = values.get("merge_order")
        out["merge_order"] = None if order in (None, "") else str(order).lower()
    if _default_vtu(method):
        out["vtu"] = _bool(values.get("vtu"))
    return out


_SELECTION_LABELS = {method_label(m): m for m in SELECTION_METHODS}


def _selection_level(method: str, values: dict[str, object]) -> str:
    """The budget of a fixed-budget baseline: ``k64 s0`` or ``25% s0`` (Random), ``f2`` (Pool),
    ``54+10`` (VisionZip); unset values take the plugin's defaults."""
    spec = METHOD_SPECS[_SELECTION_LABELS[method]].args

    def value(name: str) -> str:
        raw = values.get(name)
        return str(spec[name] if raw in (None, "") else raw).strip()

    if method == "Pool":
        return f"f{_number(value('pool_factor'))}"
    if method == "VisionZip":
        return f"{_number(value('dominant'))}+{_number(value('contextual'))}"
    keep = value("keep")
    try:
        number = float(keep)
    except ValueError:
        amount = keep
    else:  # a fraction is written with a point (lmms-eval and the parser keep 1.0 apart from 1)
        fraction = any(c in keep for c in ".eE") and number <= 1
        amount = f"{number * 100:g}%" if fraction else f"k{int(number)}"
    return f"{amount} s{_number(value('seed'))}"


def finalize(model: str, family: str, fields_: dict[str, str | None]) -> RunConfig:
    """Fill the defaults the plugin applies (vocabulary.METHOD_SPECS: schedule, VTU)."""
    method = fields_.get("method") or method_label(BASELINE)
    spec_args = _BY_LABEL[method].args if method in _BY_LABEL else {}
    schedule = fields_.get("schedule") or spec_args.get("schedule") or ""
    vtu = fields_.get("vtu") or _default_vtu(method)
    merge_order = fields_.get("merge_order") or spec_args.get("merge_order") or ""
    return RunConfig(model=model, family=family, method=method, level=fields_.get("level") or "",
                     threshold_data=fields_.get("threshold_data") or "", schedule=schedule, vtu=vtu,
                     merge_order=merge_order, layout=fields_.get("layout") or "")


def agrees(from_args: dict[str, str | None], from_stats: dict[str, str | None]) -> bool:
    """True when every field the model_args set explicitly matches what the stats recorded."""
    return all(v is None or from_stats.get(k) in (None, v) for k, v in from_args.items())


def with_family(cfg: RunConfig, family: str) -> RunConfig:
    return replace(cfg, family=family)
