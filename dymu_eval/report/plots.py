"""Plots: score vs mean visual tokens and vs TFLOPs per benchmark, per-stage time and FLOPs per run,
and tokens vs image complexity (Figure 3).

Image complexity is the paper's measure, JPEG (q=90) bytes per pixel, recorded by the
plugin per sample as ``image_bytes_per_pixel``. Matplotlib runs on the Agg backend so
plots work on headless machines.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..vocabulary import DEFAULT_SCHEDULE
from .runs import MeasuredRun
from .tables import FamilyTable

_COLORS = {"baseline": "black", "FastV": "tab:orange", "ToMe": "tab:blue", "DyMU": "tab:red", "Random": "tab:gray",
           "Pool": "tab:brown", "VisionZip": "tab:green"}


def _series_name(row: pd.Series) -> str:
    """Rows joined into one line: same method, VTU, schedule, threshold data; levels vary."""
    if row["method"] == "DyMU":
        name = "DyMU" + (" w/o VTU" if row["vtu"] == "no" else "")
        if row["schedule"] not in ("", DEFAULT_SCHEDULE):
            name += f" {row['schedule']}"
        if row["threshold_data"] not in ("", "llava_instruct"):
            name += f" ({row['threshold_data']})"
        return name
    if row["method"] in ("ToMe", "Pool", "VisionZip"):
        return str(row["method"]) + (" +VTU" if row["vtu"] == "yes" else "")
    if row["method"] == "Random":  # budgets vary along the line, the seed does not
        return "Random " + str(row["level"]).rsplit(" ", 1)[-1]
    return str(row["run"])


def score_vs_tokens(table: FamilyTable, path: Path, x: str = "tokens_mean",
                    xlabel: str = "mean visual tokens") -> Path | None:
    """One panel per benchmark: headline-style columns vs ``x`` (mean tokens), a line per method.

    Reported rows of the same benchmarks are drawn hollow and dashed. Returns None when no
    measured row has a value of ``x``.
    """
    df = table.measured
    if x not in df.columns and table.stages is not None and x in table.stages.columns:
        df = df.assign(**{x: table.stages[x].to_numpy()})
    if x not in df.columns or df[x].isna().all():
        return None
    cols = ([b for b in table.benchmarks if not b.endswith(("-P", "-acc")) and ":" not in b]
            or table.benchmarks)
    ncols = min(3, len(cols))
    nrows = math.ceil(len(cols) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax, bench in zip(axes.flat, cols):
        _draw_lines(ax, df, bench, dashed=False, x=x)
        rep = table.reported
        if rep is not None and bench in rep.columns and x in rep.columns:
            _draw_lines(ax, rep[rep["method"].isin(["baseline", "ToMe", "DyMU"])], bench, dashed=True, x=x)
        ax.set_title(bench)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    handles, labels = [], []
    for ax in axes.flat:  # one legend for all panels: a method may be missing from some benchmarks
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"{table.family}: score vs {xlabel}")
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(labels) // 4), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


_MARKERS = ("o", "s", "^", "D", "v", "P")


def _draw_lines(ax: plt.Axes, df: pd.DataFrame, bench: str, dashed: bool, x: str = "tokens_mean") -> None:
    """A line per series; a method's colour is shared, so each of its series (w/o VTU, another
    calibration set, a schedule) gets its own marker, the same in every panel, and w/o VTU is dotted."""
    if bench not in df.columns:
        return
    names = df.apply(_series_name, axis=1)
    marker: dict[str, str] = {}
    for method in df["method"].unique():  # markers from the whole table, before a benchmark drops rows
        for i, name in enumerate(dict.fromkeys(names[df["method"] == method])):
            marker[name] = _MARKERS[i % len(_MARKERS)]
    data = df.assign(series=names).dropna(subset=[x, bench])
    for name, part in data.groupby("series", sort=False):
        part = part.sort_values(x)
        color = _COLORS.get(part["method"].iloc[0], None)
        line = "--" if dashed else (":" if "w/o VTU" in name else "-")
        ax.plot(part[x], part[bench], label=f"{name} (reported)" if dashed else name, linestyle=line,
                marker=marker[name], color=color, markerfacecolor="none" if dashed else color)


def score_vs_tflops(table: FamilyTable, path: Path) -> Path | None:
    """Score vs FLOPs to the first token (encoder + projector + prefill, analytic), beside score vs tokens."""
    return score_vs_tokens(table, path, x="first_token_tflops",
                           xlabel="TFLOPs to first token")


_STAGE_COLORS = {"encoder": "tab:blue", "projector": "tab:purple", "prefill": "tab:orange", "decode": "tab:green"}
_TIME_STAGES = [("encoder_ms", "encoder"), ("prefill_ms", "prefill"), ("decode_ms", "decode")]
_FLOP_STAGES = [("encoder_tflops", "encoder"), ("projector_tflops", "projector"), ("prefill_tflops", "prefill"),
                ("decode_tflops", "decode")]


def stage_breakdown(table: FamilyTable, path: Path) -> Path | None:
    """Stacked bars per run: mean time per stage (warm-up excluded) and analytic TFLOPs per stage."""
    st = table.stages
    if st is None or st[[c for c, _ in _TIME_STAGES + _FLOP_STAGES]].isna().all().all():
        return None
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(st) + 4), 4.4))
    for ax, stages, unit in ((axes[0], _TIME_STAGES, "ms per sample"), (axes[1], _FLOP_STAGES, "TFLOPs per sample")):
        bottom = np.zeros(len(st))
        for col, label in stages:
            values = st[col].fillna(0.0).to_numpy()
            ax.bar(st["run"], values, bottom=bottom, label=label, color=_STAGE_COLORS[label])
            bottom += values
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    axes[0].set_title("time per stage")
    axes[1].set_title("FLOPs per stage (2 per multiply-add)")
    fig.suptitle(f"{table.family}: where the cost goes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _r(value: float) -> str:
    return "n/a (constant)" if math.isnan(value) else f"{value:.2f}"


def correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman (Pearson of average ranks) correlation; NaN when undefined."""
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return math.nan, math.nan
    pearson = float(np.corrcoef(x, y)[0, 1])
    rx = pd.Series(x).rank().to_numpy()
    ry = pd.Series(y).rank().to_numpy()
    spearman = float(np.corrcoef(rx, ry)[0, 1]) if np.std(rx) > 0 and np.std(ry) > 0 else math.nan
    return pearson, spearman


def _save_scatter(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    """Labels, grid and legend of a complexity scatter, saved to ``path``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tokens_vs_complexity(family: str, runs: list[MeasuredRun],
                         path: Path) -> tuple[Path | None, dict[str, tuple[float, float]]]:
    """Scatter of per-sample tokens vs JPEG bytes/pixel for every reducing run, correlations in the legend."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    stats: dict[str, tuple[float, float]] = {}
    cmap = plt.get_cmap("tab10")
    for i, run in enumerate(runs):
        pts = [(float(r["image_bytes_per_pixel"]), float(r["visual_tokens_after"])) for r in run.stats_rows()
               if r.get("image_bytes_per_pixel") is not None and r.get("visual_tokens_after") is not None]
        if not pts or run.config.method == "baseline":
            continue
        x, y = np.array(pts).T
        pearson, spearman = correlation(x, y)
        stats[run.config.label()] = (pearson, spearman)
        ax.scatter(x, y, s=10, alpha=0.6, color=cmap(i % 10),
                   label=f"{run.config.label()}: Pearson {_r(pearson)}, Spearman {_r(spearman)} (n={len(x)})")
        if len(x) >= 2 and np.std(x) > 0:
            slope, icpt = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 50)
            ax.plot(xs, slope * xs + icpt, color=cmap(i % 10), linewidth=1)
    if not stats:
        plt.close(fig)
        return None, stats
    _save_scatter(fig, ax, path, "image complexity (JPEG q=90 bytes per pixel)", "visual tokens given to the LLM",
                  f"{family}: tokens vs image complexity")
    return path, stats


def tokens_per_frame_vs_complexity(stats_files: dict[str, list[Path]], task: str, docs_jsonl: Path,
                                   videos_json: Path, path: Path) -> tuple[Path | None, dict[str, tuple[float, float]]]:
    """Scatter of visual rows the LLM reads per video frame against clip complexity, one series per run.

    ``stats_files``: run label -> its per-sample stats JSONL files, whose rows of ``task`` are
    plotted; rows of ``docs_jsonl`` (that task's docs, in lmms-eval's ``doc_id`` order) name their
    clip, whose complexity comes from ``videos_json`` (the video build's manifest). Correlations
    go in the legend.
    """
    import json

    from ..errors import RunError
    from .runs import read_jsonl

    docs = read_jsonl(docs_jsonl)
    try:
        complexity = {c["video"]: float(c["complexity"]) for c in json.loads(videos_json.read_text())["clips"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{videos_json}: no clip complexities ({exc})") from exc
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    stats: dict[str, tuple[float, float]] = {}
    cmap = plt.get_cmap("tab10")
    for i, (label, files) in enumerate(stats_files.items()):
        pts = []
        for row in (r for f in files for r in read_jsonl(f)):
            rows, frames = row.get("visual_rows"), row.get("frames")
            if (row.get("task") != task or not frames or rows is None or row.get("doc_id") is None
                    or int(row["doc_id"]) >= len(docs)):
                continue
            clip = docs[int(row["doc_id"])].get("video")
            if clip in complexity:
                pts.append((complexity[clip], float(rows) / float(frames)))
        if not pts:
            continue
        x, y = np.array(pts).T
        stats[label] = correlation(x, y)
        ax.scatter(x, y, s=12, alpha=0.7, color=cmap(i % 10),
                   label=f"{label}: Pearson {_r(stats[label][0])}, Spearman {_r(stats[label][1])} (n={len(x)})")
    if not stats:
        plt.close(fig)
        return None, stats
    _save_scatter(fig, ax, path, "clip complexity (JPEG q=90 bytes per pixel)",
                  "visual rows given to the LLM per frame", "LLaVA-OneVision: tokens per frame vs clip complexity")
    return path, stats
