"""Benchmark conventions: which lmms-eval metric becomes which table column, on what scale.

Columns are chosen by *metric name*, so a new task that reuses a built-in scorer (e.g. an
offline POPE task reporting ``pope_f1_score``) gets the right columns without code changes.
The paper's conventions (research digest of DyMU, Table 2): MME perception and total as raw
scores (perception + cognition, out of 2800), POPE F1 (accuracy beside it), accuracies x100.
The paper's average takes one headline number per benchmark with MME total divided by 28.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# Display names of the benchmarks the paper reports, keyed by lmms-eval task name.
TASK_LABELS: dict[str, str] = {
    "mme": "MME",
    "gqa": "GQA",
    "gqa_lite": "GQA",
    "pope": "POPE",
    "scienceqa_img": "SQA-I",
    "seedbench": "SEED-I",
    "textvqa_val": "VQA-T",
    "mmbench_en_dev": "MMB",
    "mmvet": "MMVet",
    "llava_in_the_wild": "LLaVA-W",
    # LLaVA-OneVision (paper Table 4 and the video protocol)
    "mathvista_testmini": "MathVista",
    "videomme": "VideoMME",
    "mvbench": "MVBench",
    "egoschema_subset": "EgoSchema",
    "longvideobench_val_v": "LongVideoBench",
    "mlvu_dev": "MLVU",
}

# Headline accuracies by metric name, and the factor that puts each on a 0-100 scale (lmms-eval
# 0.7.3's aggregators: VideoMME, MVBench, MLVU and MMBench already return percentages,
# LongVideoBench a fraction). EgoSchema's subset reports a fraction under the generic name
# ``score``, so it is matched by task.
PERCENT_METRICS: dict[str, float] = {
    "videomme_perception_score": 1.0,
    "mvbench_accuracy": 1.0,
    "mlvu_percetion_score": 1.0,
    "gpt_eval_score": 1.0,
    "lvb_acc": 100.0,
}
TASK_PERCENT_METRICS: dict[tuple[str, str], float] = {("egoschema_subset", "score"): 100.0}

# Metrics that never become columns (bookkeeping, or numbers the paper does not report).
IGNORED_METRICS = {
    "alias",
    "submission",
    "pope_precision",
    "pope_recall",
    "pope_yes_ratio",
    "seed_video",
    "seed_all",
}


@dataclass(frozen=True)
class Column:
    """One table column produced by a task: its name and whether it is the headline score."""

    name: str
    value: float
    headline: bool = False
    avg_value: float | None = None  # the number the average uses (MME total/28, ...)


def task_label(task: str) -> str:
    """The paper's name for a built-in task, else the task name itself."""
    return TASK_LABELS.get(task, task)


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def columns_for_task(task: str, metrics: dict[str, object]) -> list[Column]:
    """Turn one task's metrics (``{"pope_accuracy": 0.8, ...}``, filter suffix removed) into columns.

    Unknown numeric metrics become ``"<task>:<metric>"`` columns, shown raw and left out of
    the average (the table's note says which benchmarks the average covers).
    """
    label = task_label(task)
    nums = {k: _num(v) for k, v in metrics.items() if k not in IGNORED_METRICS}
    nums = {k: v for k, v in nums.items() if v is not None}
    cols: list[Column] = []
    used: set[str] = set()

    if "mme_perception_score" in nums or "mme_cognition_score" in nums:
        perception = nums.get("mme_perception_score", 0.0)
        total = perception + nums.get("mme_cognition_score", 0.0)
        cols.append(Column(f"{label}-P", perception))
        cols.append(Column(f"{label}-total", total, headline=True, avg_value=total / 28.0))
        used |= {"mme_perception_score", "mme_cognition_score"}
    if "pope_f1_score" in nums:
        f1 = 100.0 * nums["pope_f1_score"]
        cols.append(Column(f"{label}-F1", f1, headline=True, avg_value=f1))
        used.add("pope_f1_score")
    if "pope_accuracy" in nums:
        headline = "pope_f1_score" not in nums
        acc = 100.0 * nums["pope_accuracy"]
        cols.append(Column(f"{label}-acc", acc, headline=headline, avg_value=acc if headline else None))
        used.add("pope_accuracy")
    for metric in ("exact_match", "seed_image"):
        if metric in nums and not any(c.headline for c in cols):
            value = 100.0 * nums[metric]
            cols.append(Column(label, value, headline=True, avg_value=value))
            used.add(metric)
    for metric in sorted(nums):
        scale = TASK_PERCENT_METRICS.get((task, metric), PERCENT_METRICS.get(metric))
        if scale is not None and not any(c.headline for c in cols):
            value = scale * nums[metric]
            cols.append(Column(label, value, headline=True, avg_value=value))
            used.add(metric)
    for metric in sorted(set(nums) - used):
        cols.append(Column(f"{task}:{metric}", nums[metric]))
    return cols


def split_metric_key(key: str) -> tuple[str, str]:
    """``"pope_accuracy,none"`` -> ``("pope_accuracy", "none")``; keys without a filter get ``""``."""
    metric, _, flt = key.partition(",")
    return metric, flt


def task_metrics(task_results: dict[str, object]) -> dict[str, object]:
    """Metrics of one task from a results JSON entry, preferring the ``none`` filter, no stderr."""
    chosen: dict[str, tuple[str, object]] = {}
    for key, value in task_results.items():
        metric, flt = split_metric_key(key)
        if metric.endswith("_stderr") or metric.endswith("_stderr_clt") or metric == "alias":
            continue
        if metric not in chosen or flt in ("none", ""):
            chosen[metric] = (flt, value)
    return {m: v for m, (_f, v) in chosen.items()}
