"""Run labels: method, level (or r, or FastV setting), threshold data, schedule, VTU.

The same normaliser reads the results JSON's ``config.model_args`` (strings) and the
plugin's per-sample stats rows (typed values): both use the model_args key names
(docs/plugin.md), so one function serves both and a run's two descriptions can be compared.
Methods, their defaults (VTU on or off, ...), how they name their amount and in which order
tables list them come from the method registry (``dymu_eval.methods``), which the plugin itself
resolves model_args with; nothing here names a method.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields

from ..methods import METHODS, MethodSpec, parse
from ..vocabulary import BASELINE, DEFAULT_MERGE_ORDER, DEFAULT_SCHEDULE, DEFAULT_THRESHOLDS, LEVELS, MERGE_ORDERS

_LEVEL_ORDER = {level: i for i, level in enumerate(LEVELS)}


def _by_label(label: str) -> MethodSpec | None:
    return next((METHODS[m] for m in METHODS if METHODS[m].label == label), None)


def _alias(name: str) -> str:
    """A method's registered name from another spelling (its spec's ``aliases``; ``baseline``)."""
    if name == "baseline":
        return BASELINE
    return next((m for m in METHODS if name in METHODS[m].aliases), name)


def method_label(method: str) -> str:
    """A method's name in tables (``dymu`` -> ``DyMU``); unknown names pass through."""
    return METHODS[method].label if method in METHODS else method


def default_method(model: str) -> str:
    """The method an lmms-eval model name runs by default: ``<method>_<family>`` (the longest
    registered method name it starts with); the baseline for other models (``llava_hf``)."""
    found = [m for m in METHODS if METHODS[m].model_name and model.startswith(m + "_")]
    return max(found, key=len) if found else BASELINE


def _plugin_model(model: str) -> bool:
    return default_method(model) != BASELINE
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class RunConfig:
    """What distinguishes one measured row from another (all strings, "" when not applicable)."""

    model: str  # lmms-eval model name, e.g. dymu_llava or llava_hf
    family: str  # the checkpoint's name, e.g. llava-1.5-7b-hf: one table per family
    method: str  # a registered method's label (DyMU, ToMe, ...), baseline, or another model's name
    level: str = ""  # the method's amount, as its spec writes it (low|mid|high, r21, K2 R0.5, 54+10, ...)
    threshold_data: str = ""
    schedule: str = ""
    vtu: str = ""  # yes | no | ""
    merge_order: str = ""  # reference | position for DyMU and ToMe, "" otherwise
    layout: str = ""  # "" (the unmodified model's sequence) or official (LLaVA-OneVision, the DyMU code's)

    def key(self) -> tuple[str, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def label(self, show_model: bool = True) -> str:
        """Short human label in the paper's wording, e.g. ``DyMU-low w/o VTU``: the method, its
        amount, then whatever differs from the method's defaults."""
        spec = _by_label(self.method)
        text = self.method
        if self.level:
            display = spec.display if spec is not None and spec.display is not None else _display
            text += display(self.level)
        default_vtu = _default_vtu(self.method)
        if self.vtu and default_vtu and self.vtu != default_vtu:
            text += " w/o VTU" if self.vtu == "no" else " +VTU"
        if self.schedule and self.schedule != DEFAULT_SCHEDULE:
            text += f" {self.schedule}"
        if self.threshold_data and self.threshold_data != DEFAULT_THRESHOLDS:
            text += f" ({self.threshold_data})"
        if self.merge_order not in ("", DEFAULT_MERGE_ORDER):
            text += f" {self.merge_order} order"
        if self.layout:
            text += f" [{self.layout} layout]"
        if show_model and not _plugin_model(self.model):
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
        return (self.family, _method_order(self.method), self.model, self.vtu != _default_vtu(self.method),
                self.schedule not in ("", DEFAULT_SCHEDULE), self.schedule, self.threshold_data, lvl_key)


def _display(amount: str) -> str:
    """How a label writes an amount: ``-low`` for a level, `` <amount>`` otherwise."""
    return f"-{amount}" if amount in _LEVEL_ORDER else f" {amount}"


def _method_order(label: str) -> int:
    """The registry's table order (the baseline first); other models last."""
    labels = [METHODS[m].label for m in METHODS]
    return labels.index(label) if label in labels else len(labels)


def _default_vtu(method_label_: str) -> str:
    """"yes"/"no" for methods with a VTU switch (its default), "" for the others."""
    spec = _by_label(method_label_)
    default = spec.vtu_default if spec is not None else None
    return "" if default is None else ("yes" if default else "no")


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
        key = _alias(str(raw_method).lower())
        name = key if key in METHODS else None
        method = method_label(key) if name else str(raw_method)
    else:
        name = default_method(model)
        method = method_label(name)
    if level == BASELINE and name is not None and "level" in METHODS[name].args:
        name, method = BASELINE, method_label(BASELINE)
    layout = values.get("layout")
    out: dict[str, str | None] = {"method": method, "level": None, "threshold_data": None,
                                  "schedule": None, "vtu": None, "merge_order": None,
                                  "layout": None if layout in (None, "", "stock") else str(layout).lower()}
    spec = METHODS[name] if name is not None else None
    if spec is None:
        return out
    given = {k: values.get(k) for k in spec.args if values.get(k) not in (None, "")}
    if "budget" in given:
        out["level"] = _budget_amount(given, values)
    elif spec.amount is not None and (given or not spec.level_args):
        filled = {k: str(given.get(k, arg.default)) if given.get(k, arg.default) is not None else ""
                  for k, arg in spec.args.items()}
        out["level"] = spec.amount(filled) or None
    if spec.threshold_arg:
        out["threshold_data"] = _dataset_name(values.get(spec.threshold_arg))
    if "schedule" in spec.args:
        sched = values.get("schedule")
        out["schedule"] = None if sched in (None, "") else str(sched).lower().replace("-", "_")
    if "merge_order" in spec.args:
        order = values.get("merge_order")
        out["merge_order"] = None if order in (None, "") else str(order).lower()
    if spec.vtu_default is not None:
        out["vtu"] = _bool(values.get("vtu"))
    return out


def _budget_amount(given: dict[str, object], values: dict[str, object]) -> str:
    """``budget 192`` (and the arguments set beside it, which override it: ``budget 192 dart_layer=3``).
    A stats row lists those in ``budget_overrides`` (it records every resolved argument); model_args
    hold only what was given."""
    if "budget_overrides" in values:
        names = [n for n in str(values.get("budget_overrides") or "").split(",") if n]
    else:
        names = [n for n in given if n != "budget"]
    extra = "".join(f" {n}={parse.number_text(given[n])}" for n in sorted(names) if n in given)
    return f"budget {given['budget']}{extra}"


def finalize(model: str, family: str, fields_: dict[str, str | None]) -> RunConfig:
    """Fill the defaults the plugin applies (the method's registered defaults: schedule, VTU)."""
    method = fields_.get("method") or method_label(BASELINE)
    spec = _by_label(method)
    args = spec.args if spec is not None else {}
    schedule = fields_.get("schedule") or (args["schedule"].default if "schedule" in args else "")
    vtu = fields_.get("vtu") or _default_vtu(method)
    merge_order = fields_.get("merge_order") or (args["merge_order"].default if "merge_order" in args else "")
    return RunConfig(model=model, family=family, method=method, level=fields_.get("level") or "",
                     threshold_data=fields_.get("threshold_data") or "", schedule=schedule, vtu=vtu,
                     merge_order=merge_order, layout=fields_.get("layout") or "")


def agrees(from_args: dict[str, str | None], from_stats: dict[str, str | None]) -> bool:
    """True when every field the model_args set explicitly matches what the stats recorded."""
    return all(v is None or from_stats.get(k) in (None, v) for k, v in from_args.items())
