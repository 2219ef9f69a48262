"""DyMU (Wang et al., 2025): DToMe merges in the encoder with per-layer thresholds calibrated on an
image set (``merge.Threshold``), and VTU lets the LLM attend over the unmodified layout."""
from __future__ import annotations

import os
from typing import Any

from ...errors import ConfigError, ThresholdCacheError
from ...vocabulary import DEFAULT_LEVEL, DEFAULT_THRESHOLDS
from .. import parse
from ..merging import check_amount, level_of, level_or_r, merge_args
from ..registry import METHODS, Arg, MethodSpec


def _record(context: Any, thresholds: str, level: str | None, values: dict[str, Any]):
    """The threshold entry: a file, or a cache entry under the checkpoint's name, then the encoder's."""
    from ...thresholds import ThresholdCache

    cache = ThresholdCache()
    if thresholds.endswith(".json") or os.sep in thresholds or os.path.isfile(thresholds):
        if os.path.isdir(thresholds):
            raise ThresholdCacheError(f"thresholds={thresholds}: is a folder; give a thresholds .json file or a "
                                      "cache key")
        if not os.path.isfile(thresholds):
            raise ThresholdCacheError(f"thresholds={thresholds}: no such file")
        return cache.lookup(None, None, path=thresholds)
    first_miss = None
    for name in context.names:  # the checkpoint name first, then the encoder's architecture key
        try:
            return cache.lookup(name, thresholds, level=level, r=values["r"], schedule=values["schedule"],
                                merge_order=values["merge_order"])
        except ThresholdCacheError as exc:
            first_miss = first_miss or exc
    raise first_miss


def build(context: Any, values: dict[str, Any]):
    """Thresholds from the cache or a file, checked against the weights and the merge order."""
    from ...vlm.reduction import Reduction

    level = level_of(values)
    thresholds = values["thresholds"]
    record = _record(context, thresholds, level, values)
    record.validate_for(context.model, ignore_fingerprint=bool(values["ignore_fingerprint"]))
    if level is not None and record.level not in (None, level):
        raise ConfigError(f"thresholds file {thresholds} is for level {record.level}, but level={level} was asked")
    policy = record.policy(context.runner.default_layers_run, call=context.encoder_call,
                           merge_order=values["merge_order"])
    return Reduction("dymu", policy, vtu=values["vtu"], r_per_layer=record.r_per_layer,
                     thresholds_key=record.key)


PIXMO = "pixmo_cap"


def reproduce(ctx: Any) -> list:
    """Paper Tables 2/4: DyMU per level; on LLaVA-1.5 also Table 6 (low w/o VTU), Table 5 (mid with the
    linear schedules) and Table 7 (mid with Pixmo-Cap thresholds)."""
    from ...vocabulary import DEFAULT_SCHEDULE
    from ..reproduce import MatrixRun

    def run(name: str, level: str, thresholds: str = DEFAULT_THRESHOLDS, schedule: str = DEFAULT_SCHEDULE,
            **extra: str) -> MatrixRun:
        args = {"level": level, "thresholds": thresholds,
                **({"schedule": schedule} if schedule != DEFAULT_SCHEDULE else {}), **extra}
        return MatrixRun(name, args, ((thresholds, level, schedule),))

    runs = [run(f"dymu_{lv}", lv) for lv in ctx.levels]
    if ctx.paper and "low" in ctx.levels:
        runs.append(run("dymu_low_no_vtu", "low", vtu="false"))
    if ctx.paper and "mid" in ctx.levels:
        runs += [run(f"dymu_mid_{sched}", "mid", schedule=sched) for sched in ("linear", "reverse_linear")]
        runs.append(run(f"dymu_mid_{PIXMO}", "mid", thresholds=PIXMO))
    return runs


def demo(ctx: Any) -> list:
    """DyMU at every level the section calibrated; the main section adds low without VTU."""
    from ..reproduce import MatrixRun

    runs = [MatrixRun(f"DyMU-{lv}", {"thresholds": ctx.thresholds, "level": lv}) for lv in ctx.levels]
    if ctx.main:
        runs.append(MatrixRun("DyMU-low w/o VTU", {"thresholds": ctx.thresholds, "level": "low", "vtu": "false"}))
    return runs


METHODS.register("dymu", MethodSpec(
    label="DyMU",
    summary="method=dymu (thresholds= names the calibration data; level= or r= the amount)",
    build=build,
    table_order=60,
    args={**merge_args(True, "merges per layer: selects the threshold entry calibrated with this r"),
          "thresholds": Arg(DEFAULT_THRESHOLDS, parse.text,
                            "DyMU thresholds: cache key (calibration dataset name) or a JSON file "
                            f"(default {DEFAULT_THRESHOLDS})"),
          "ignore_fingerprint": Arg(False, parse.boolean,
                                    "true uses thresholds calibrated on other weights than these (the weight "
                                    "fingerprint check is skipped with a warning; default false)")},
    check=check_amount("dymu", DEFAULT_LEVEL),
    amount=level_or_r,
    needs=frozenset({"merge", "vtu"}),
    level_args=("level", "r"),
    aliases=("dtome",),
    reproduce=reproduce,
    demo=demo,
    threshold_arg="thresholds",
))
