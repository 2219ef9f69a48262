"""Turn the user's reduction settings into what the family modules run: a merge policy for the
encoder (ToMe's top-r, DyMU's cached thresholds, or none), a fixed-budget selection after the
encoder (random, pool, VisionZip), VTU on/off, and FastV settings.

Shared by every model family; the family module supplies the vision runner and the name the
checkpoint goes by (for the threshold cache).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from torch import nn

from ..errors import ConfigError, ThresholdCacheError
from ..merge import NoMerge, Policy, TopR, merges_per_layer
from ..merge.select import GridPool, RandomKeep, Selector, VisionZip
from ..vision import VisionRunner
from ..vocabulary import BASELINE, CUSTOM_LEVEL, DEFAULT_MERGE_ORDER, LEVELS, check_fastv


@dataclass
class Reduction:
    """What to do to the visual tokens: a merge policy in the encoder, a selection after it, VTU
    or not, FastV or not. ``original_positions``: without VTU, kept rows sit at the positions
    their patches had in the unmodified sequence (gaps where tokens were dropped), instead of
    consecutive positions."""

    method: str = BASELINE  # one of vocabulary.METHODS
    policy: Policy = field(default_factory=NoMerge)
    selector: Selector | None = None
    original_positions: bool = False
    vtu: bool = False
    fastv_k: int | None = None
    fastv_ratio: float | None = None
    r_per_layer: list[int] | None = None  # ToMe / DyMU gate (what the layer schedule allows)
    thresholds_key: str | None = None  # the cache entry DyMU used


def tome_reduction(runner: VisionRunner, r: int | None, level: str | None, schedule: str, vtu: bool,
                   merge_order: str = DEFAULT_MERGE_ORDER) -> Reduction:
    """ToMe: r merges per encoder layer (given, or the level's r for this encoder) over the schedule,
    tokens laid out in ``merge_order`` (merge.order)."""
    if r is None:
        if level not in LEVELS:
            raise ConfigError(f"ToMe needs r or a level ({', '.join(LEVELS)}), got level={level!r}")
        r = runner.r_for_level(level)
    per_layer = merges_per_layer(int(r), runner.num_layers, schedule)
    return Reduction("tome", TopR(per_layer, merge_order=merge_order), vtu=vtu, r_per_layer=per_layer)


def dymu_reduction(model: nn.Module, runner: VisionRunner, names: list[str], thresholds: str, level: str | None,
                   r: int | None, schedule: str, vtu: bool, *, merge_order: str = DEFAULT_MERGE_ORDER,
                   call: str = "per_image", ignore_fingerprint: bool = False) -> Reduction:
    """DyMU: per-layer thresholds from the cache (a dataset key) or from a file, checked against the
    weights and against ``merge_order`` (thresholds run only in the order they were calibrated
    under). ``call`` is how the family calls its encoder (merge.Threshold: ``per_image`` for
    LLaVA-1.5, ``batched`` for a family that encodes all crops of a request in one call).
    ``ignore_fingerprint`` accepts thresholds calibrated on other weights (ThresholdRecord.validate_for warns)."""
    from ..thresholds import ThresholdCache

    cache = ThresholdCache()
    level = None if level in (None, CUSTOM_LEVEL) else level
    if thresholds.endswith(".json") or os.sep in thresholds or os.path.isfile(thresholds):
        if os.path.isdir(thresholds):
            raise ThresholdCacheError(f"thresholds={thresholds}: is a folder; give a thresholds .json file or a "
                                      "cache key")
        if not os.path.isfile(thresholds):
            raise ThresholdCacheError(f"thresholds={thresholds}: no such file")
        record = cache.lookup(None, None, path=thresholds)
    else:
        record, first_miss = None, None
        for name in names:  # the checkpoint name first, then the encoder's architecture key
            try:
                record = cache.lookup(name, thresholds, level=level, r=r, schedule=schedule, merge_order=merge_order)
                break
            except ThresholdCacheError as exc:
                first_miss = first_miss or exc
        if record is None:
            raise first_miss
    record.validate_for(model, ignore_fingerprint=ignore_fingerprint)
    if level is not None and record.level not in (None, level):
        raise ConfigError(f"thresholds file {thresholds} is for level {record.level}, but level={level} was asked")
    return Reduction("dymu", record.policy(runner.default_layers_run, call=call, merge_order=merge_order), vtu=vtu,
                     r_per_layer=record.r_per_layer, thresholds_key=record.key)


def fastv_reduction(k: int, ratio: float, decoder_layers: int | None = None) -> Reduction:
    """FastV prunes in the LLM after layer K (checked against the decoder's depth when given);
    the encoder is untouched."""
    check_fastv(k, ratio, decoder_layers)
    return Reduction("fastv", NoMerge(), vtu=False, fastv_k=int(k), fastv_ratio=float(ratio))


def random_reduction(runner: VisionRunner, keep: float, seed: int) -> Reduction:
    """Random pruning: ``keep`` patch tokens per image (count or fraction), seeded, at their original positions."""
    selector = RandomKeep(keep, seed)
    runner.check_selector(selector)
    return Reduction("random", selector=selector, original_positions=True)


def pool_reduction(runner: VisionRunner, factor: int, vtu: bool) -> Reduction:
    """Spatial pooling of the patch grid by ``factor`` (with VTU, a pooled row stands for its patches)."""
    selector = GridPool(factor)
    runner.check_selector(selector)
    return Reduction("pool", selector=selector, vtu=vtu)


def visionzip_reduction(runner: VisionRunner, dominant: int, contextual: int, vtu: bool) -> Reduction:
    """VisionZip: ``dominant`` + ``contextual`` tokens per image, chosen at the layer the VLM reads."""
    selector = VisionZip(dominant, contextual)
    runner.check_selector(selector)
    return Reduction("visionzip", selector=selector, vtu=vtu)
