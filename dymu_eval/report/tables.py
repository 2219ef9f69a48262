"""Comparison tables: one per model family, measured rows only (reported rows live apart).

Numbers are rounded once here (``DECIMALS``) so Markdown, CSV and LaTeX carry identical values.
The average follows the paper (mean of one headline score per benchmark, MME total / 28),
but only over benchmarks every measured row of the table has; the table's notes name them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .benchmarks import Column, columns_for_task
from .runs import INCOMPLETE_MARK, Collection, MeasuredRun

DECIMALS = 2
KEY_COLUMNS = ["run", "method", "level", "threshold_data", "schedule", "vtu", "model"]
TOKEN_COLUMNS = ["tokens_mean", "tokens_std", "tokens_min", "tokens_max", "tokens_pct"]
SUMMARY_COLUMNS = ["avg", "avg_pct_baseline"]
# Efficiency columns (docs/plugin.md), means over the row's samples; times leave out warm-up batches.
EFFICIENCY_COLUMNS = ["llm_rows", "layer_avg_rows", "flop_equiv_tokens", "prefill_tflops", "flops_pct_baseline",
                      "ttft_ms", "speedup", "kv_mb", "peak_mem_mb"]
# Per-stage means, kept at full precision for the stacked-bar plots and <family>_stages.csv.
STAGE_COLUMNS = ["encoder_ms", "prefill_ms", "decode_ms", "encoder_tflops", "projector_tflops", "prefill_tflops",
                 "decode_tflops"]
_TIMES = ("encoder_ms", "prefill_ms", "decode_ms", "ttft_ms")


@dataclass
class FamilyTable:
    """Measured rows of one model family, plus the reported rows that belong to it (if any)."""

    family: str
    measured: pd.DataFrame
    benchmarks: list[str]
    avg_over: list[str]
    notes: list[str] = field(default_factory=list)
    stages: pd.DataFrame | None = None  # run, method + STAGE_COLUMNS (full precision)
    reported: pd.DataFrame | None = None
    reported_notes: list[str] = field(default_factory=list)


def token_stats(rows: list[dict]) -> dict[str, float]:
    """Mean, std (population), min, max of visual tokens the LLM received; % of the unreduced count."""
    after = np.array([float(r["visual_tokens_after"]) for r in rows if r.get("visual_tokens_after") is not None])
    before = np.array([float(r["visual_tokens_before"]) for r in rows if r.get("visual_tokens_before") is not None])
    if after.size == 0:
        return {c: math.nan for c in TOKEN_COLUMNS}
    pct = 100.0 * after.mean() / before.mean() if before.size and before.mean() > 0 else math.nan
    return {"tokens_mean": after.mean(), "tokens_std": after.std(), "tokens_min": after.min(),
            "tokens_max": after.max(), "tokens_pct": pct}


def _mean(rows: list[dict], name: str, scale: float = 1.0) -> float:
    """Mean of a stats field over the rows that have it (times: over rows outside the warm-up batch)."""
    use = [r for r in rows if not (name in _TIMES and r.get("warmup"))]
    values = [float(r[name]) for r in use if r.get(name) is not None]
    return scale * float(np.mean(values)) if values else math.nan


def efficiency_stats(rows: list[dict]) -> dict[str, float]:
    """Per-row efficiency and stage figures: means of the per-sample stats (peak memory: the maximum)."""
    out = {name: _mean(rows, name) for name in ("llm_rows", "layer_avg_rows", "flop_equiv_tokens", *_TIMES)}
    for stage in ("encoder", "projector", "prefill", "decode"):
        out[f"{stage}_tflops"] = _mean(rows, f"{stage}_flops", 1e-12)
    out["first_token_tflops"] = out["encoder_tflops"] + out["projector_tflops"] + out["prefill_tflops"]
    out["kv_mb"] = _mean(rows, "kv_cache_bytes", 1e-6)
    peaks = [float(r["peak_mem_bytes"]) for r in rows if r.get("peak_mem_bytes") is not None]
    out["peak_mem_mb"] = max(peaks) / 1e6 if peaks else math.nan
    return out


def _devices(run: MeasuredRun) -> str:
    return ",".join(sorted({str(r.get("device")) for r in run.stats_rows() if r.get("device")}))


def run_columns(run: MeasuredRun) -> list[Column]:
    return [c for task in sorted(run.tasks) for c in columns_for_task(task, run.tasks[task].metrics)]


def _ordered_benchmarks(all_cols: list[list[Column]]) -> list[str]:
    order: list[str] = []
    for cols in all_cols:
        for c in cols:
            if c.name not in order:
                order.append(c.name)
    # headline-bearing benchmarks first in a stable, readable order: by name, paired columns together
    return sorted(order, key=lambda n: (":" in n, n.split("-")[0].split(":")[0], n))


def build_family_table(family: str, runs: list[MeasuredRun]) -> FamilyTable:
    """The measured table of one family; rows keep the order of ``runs``."""
    all_cols = [run_columns(r) for r in runs]
    benchmarks = _ordered_benchmarks(all_cols)
    headline_sets = [{c.name for c in cols if c.headline} for cols in all_cols]
    common = set.intersection(*headline_sets) if headline_sets else set()
    avg_over = [b for b in benchmarks if b in common]
    records = []
    for run, cols in zip(runs, all_cols):
        rec: dict[str, object] = {
            "run": run.config.label() + (f" {INCOMPLETE_MARK}" if run.incomplete() else ""),
            "method": run.config.method, "level": run.config.level,
            "threshold_data": run.config.threshold_data, "schedule": run.config.schedule,
            "vtu": run.config.vtu, "model": run.config.model,
        }
        by_name = {c.name: c for c in cols}
        for b in benchmarks:
            rec[b] = by_name[b].value if b in by_name else math.nan
        rec.update(token_stats(run.stats_rows()))
        rec.update(efficiency_stats(run.stats_rows()))
        rec["devices"] = _devices(run)
        vals = [by_name[b].avg_value for b in avg_over]
        rec["avg"] = float(np.mean(vals)) if vals else math.nan
        records.append(rec)
    full = pd.DataFrame.from_records(records)
    df = pd.DataFrame.from_records(records, columns=KEY_COLUMNS + benchmarks + TOKEN_COLUMNS + SUMMARY_COLUMNS
                                   + EFFICIENCY_COLUMNS)
    base = df[df["method"] == "baseline"]
    if len(base) and not math.isnan(base["avg"].iloc[0]) and base["avg"].iloc[0] != 0:
        df["avg_pct_baseline"] = 100.0 * df["avg"] / base["avg"].iloc[0]
    else:
        df["avg_pct_baseline"] = math.nan
    _relative_to_baseline(df, full)
    num_cols = benchmarks + TOKEN_COLUMNS + SUMMARY_COLUMNS + EFFICIENCY_COLUMNS
    df[num_cols] = df[num_cols].astype(float).round(DECIMALS)
    notes = _notes(avg_over, benchmarks, len(base) > 0, df)
    notes += [f"{INCOMPLETE_MARK}: {msg}; its token and efficiency columns cover only those samples."
              for run in runs for msg in run.incomplete()]
    stages = full[["run", "method"] + STAGE_COLUMNS + ["first_token_tflops"]].copy()
    return FamilyTable(family=family, measured=df, benchmarks=benchmarks, avg_over=avg_over, notes=notes,
                       stages=stages)


def _relative_to_baseline(df: pd.DataFrame, full: pd.DataFrame) -> None:
    """% of the baseline's FLOPs to first token, and TTFT speed-up over the baseline of the same run
    group (same family table and same device); empty without such a baseline."""
    df["flops_pct_baseline"] = math.nan
    df["speedup"] = math.nan
    base = full[full["method"] == "baseline"]
    if not len(base):
        return
    b = base.iloc[0]
    if b["first_token_tflops"] > 0:
        df["flops_pct_baseline"] = 100.0 * full["first_token_tflops"] / b["first_token_tflops"]
    same = (full["devices"] == b["devices"]) & (full["devices"] != "")
    df["speedup"] = np.where(same, b["ttft_ms"] / full["ttft_ms"], math.nan)


def _notes(avg_over: list[str], benchmarks: list[str], has_base: bool, df: pd.DataFrame) -> list[str]:
    notes = []
    if avg_over:
        shown = [f"{b} / 28" if b.endswith("-total") else b for b in avg_over]
        notes.append(f"Avg = mean over the {len(avg_over)} benchmark(s) every row has: {', '.join(shown)}. "
                     f"The paper averages nine benchmarks, so compare averages only within this table.")
    else:
        notes.append("Avg left empty: no benchmark with a headline score is shared by every row.")
    extra = [b for b in benchmarks if ":" in b]
    if extra:
        notes.append(f"Columns {', '.join(extra)} are raw metric values of tasks without a known convention; "
                     f"they are not averaged.")
    notes.append("tokens = visual tokens the LLM receives per sample (mean and population std over all samples "
                 "of the row); tokens_pct = mean tokens as % of the unreduced count.")
    notes.append("Token definitions (means over samples): tokens = visual rows in the LLM's last layers (FastV: the "
                 "kept tokens); llm_rows = distinct visual rows the LLM processes; layer_avg_rows = visual rows "
                 "averaged over decoder layers (FastV's convention); flop_equiv_tokens = visual tokens at which the "
                 "unreduced model spends the same prefill FLOPs.")
    notes.append("FLOPs are analytic, 2 per multiply-add (docs/plugin.md): prefill_tflops = LLM prefill per sample; "
                 "flops_pct_baseline = encoder + projector + prefill FLOPs as % of the baseline row's. ttft_ms = "
                 "encoder + prefill time (warm-up batch excluded); speedup = baseline ttft_ms / ttft_ms, only "
                 "against the baseline of this table run on the same device; kv_mb = KV cache after prefill; "
                 "peak_mem_mb = the largest per-batch peak of GPU memory (empty on CPU).")
    if not has_base:
        notes.append("avg_pct_baseline left empty: no baseline row (level=none) in this table.")
    if df["tokens_mean"].isna().any():
        notes.append("Empty token columns: those runs wrote no per-sample stats (e.g. the stock llava_hf model).")
    return notes


def build_tables(collection: Collection) -> list[FamilyTable]:
    """One table per family, families in name order."""
    families: dict[str, list[MeasuredRun]] = {}
    for run in collection.runs:
        families.setdefault(run.config.family, []).append(run)
    return [build_family_table(fam, runs) for fam, runs in sorted(families.items())]


def long_format(collection: Collection) -> pd.DataFrame:
    """Every (run, task, column) value at full precision with per-task token stats: for plots and scripts."""
    records = []
    for run in collection.runs:
        for task, tr in sorted(run.tasks.items()):
            toks = token_stats(tr.stats_rows)
            for col in columns_for_task(task, tr.metrics):
                records.append({"family": run.config.family, "run": run.config.label(), "method": run.config.method,
                                "level": run.config.level, "threshold_data": run.config.threshold_data,
                                "schedule": run.config.schedule, "vtu": run.config.vtu, "model": run.config.model,
                                "task": task, "column": col.name, "value": col.value, "headline": col.headline,
                                "n": tr.n, **toks, "results_file": str(tr.source.path)})
    return pd.DataFrame.from_records(records)
