"""Compare thresholds calibrated on different datasets for one encoder (e.g. LLaVA-Instruct vs Pixmo-Cap).

Three views: the per-layer thresholds side by side, the visual-token counts each set gives
on one evaluation image set (the paper: Pixmo-Cap thresholds give fewer tokens, 120 vs 195
at mid), and a plot of both. This module reads threshold files and writes tables; the token
counts come from the encoder (`dymu-eval thresholds compare`, ``vision.count``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError


@dataclass
class Comparison:
    datasets: list[str]
    thresholds: pd.DataFrame  # layer, r, one column per dataset
    tokens: dict[str, list[int]] = field(default_factory=dict)  # dataset -> tokens per evaluation image
    images: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    def token_summary(self) -> pd.DataFrame:
        rows = []
        for ds in self.datasets:
            vals = np.array(self.tokens.get(ds, []), dtype=float)
            rows.append({"dataset": ds, "images": int(vals.size),
                         "mean": vals.mean() if vals.size else math.nan, "std": vals.std() if vals.size else math.nan,
                         "min": vals.min() if vals.size else math.nan, "max": vals.max() if vals.size else math.nan})
        return pd.DataFrame(rows)


def load_records(encoder: str, datasets: list[str], level: str | None, r: int | None, schedule: str,
                 dirs: list[str] | None = None) -> list:
    """One cache record per dataset (ThresholdCache.lookup; a miss says how to calibrate it)."""
    from ..thresholds import ThresholdCache

    if len(datasets) < 2:
        raise ConfigError(f"datasets: need at least two names to compare, got {','.join(datasets) or 'none'}")
    cache = ThresholdCache(dirs) if dirs else ThresholdCache()
    if level is None and r is None:
        level = "mid"  # the paper compares calibration sets at mid (Table 7)
    return [cache.lookup(encoder, ds, level=level if r is None else None, r=r, schedule=schedule) for ds in datasets]


def threshold_table(records: list, datasets: list[str]) -> pd.DataFrame:
    depth = max(len(rec.thresholds) for rec in records)
    table = pd.DataFrame({"layer": list(range(depth))})
    for ds, rec in zip(datasets, records):
        vals = [rec.thresholds[i] if i < len(rec.thresholds) else None for i in range(depth)]
        table[ds] = pd.to_numeric(pd.Series(vals, dtype=object), errors="coerce")
        table[f"r_{ds}"] = [rec.r_per_layer[i] if i < len(rec.r_per_layer) else None for i in range(depth)]
    return table


def plot(comp: Comparison, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = 2 if comp.tokens else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    for ds in comp.datasets:
        ax.plot(comp.thresholds["layer"], comp.thresholds[ds], marker="o", markersize=3, label=ds)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("threshold (cosine similarity)")
    ax.set_title("per-layer thresholds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if comp.tokens:
        ax = axes[0, 1]
        data = [comp.tokens[ds] for ds in comp.datasets]
        lo = min(min(d) for d in data if d)
        hi = max(max(d) for d in data if d)
        bins = np.linspace(lo - 0.5, hi + 0.5, min(40, hi - lo + 2))
        for ds, d in zip(comp.datasets, data):
            ax.hist(d, bins=bins, alpha=0.5, label=f"{ds}: {np.mean(d):.1f}±{np.std(d):.1f}")
        ax.set_xlabel("visual tokens per image")
        ax.set_ylabel("images")
        ax.set_title(f"token counts on {len(comp.images)} evaluation images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(comp: Comparison, out: str | Path, title: str) -> None:
    """CSV tables and the plot under ``out`` (paths appended to ``comp.written``)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    comp.thresholds.to_csv(folder / "thresholds_side_by_side.csv", index=False)
    comp.written.append(folder / "thresholds_side_by_side.csv")
    if comp.tokens:
        per_image = pd.DataFrame({"image": comp.images, **{ds: comp.tokens[ds] for ds in comp.datasets}})
        per_image.to_csv(folder / "tokens_per_image.csv", index=False)
        comp.token_summary().to_csv(folder / "tokens_summary.csv", index=False)
        comp.written += [folder / "tokens_per_image.csv", folder / "tokens_summary.csv"]
    comp.written.append(plot(comp, folder / "thresholds_compare.png", title))


def format_text(comp: Comparison) -> str:
    """Plain-text tables for the terminal."""
    lines = ["layer  " + "  ".join(f"{ds:>14}" for ds in comp.datasets)]
    for _, row in comp.thresholds.iterrows():
        cells = ["             -" if pd.isna(row[ds]) else f"{row[ds]:14.6f}" for ds in comp.datasets]
        lines.append(f"{int(row['layer']):>5}  " + "  ".join(cells))
    if comp.tokens:
        lines.append("")
        lines.append(f"visual tokens on {len(comp.images)} evaluation images (CLS excluded):")
        for _, row in comp.token_summary().iterrows():
            lines.append(f"  {row['dataset']:>14}: mean {row['mean']:.1f}  std {row['std']:.1f}  "
                         f"min {row['min']:.0f}  max {row['max']:.0f}")
    return "\n".join(lines)
