"""Reported rows from papers (``results/reference/*.csv``: the DyMU paper's tables, VisionZip's
Table 1, DART's Table 1; on LLaVA-NeXT-7B DART's Table 3 and VisionZip's Table 2), in the measured
tables' column names.

They are data, not measurements: every reported row carries ``source=reported`` and is
rendered in its own section. Their ``avg_paper`` is the paper's own nine-benchmark average;
``avg`` is recomputed over exactly the benchmarks a measured table averages, so the two
tables can be compared on equal terms.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..paths import reference_dir
from .labels import RunConfig
from .tables import DECIMALS

# reference CSV column -> measured column name (the names benchmarks.columns_for_task produces)
_LLAVA15_COLUMNS = {
    "gqa": "GQA", "mmbench": "MMB", "mme_perception": "MME-P", "mme_total": "MME-total", "pope": "POPE-F1",
    "sqa_img": "SQA-I", "seed_img": "SEED-I", "textvqa": "VQA-T", "mmvet": "MMVet", "llava_wild": "LLaVA-W",
}
_ONEVISION_COLUMNS = {
    "mmbench": "MMB", "mme": "MME (% of 2800)", "seed": "SEED", "mathvista": "MathVista",
    "videomme": "VideoMME", "mmbench_video": "MMBench-Video (0-3)",
}
# VisionZip's Table 1: MME is perception + cognition; SEED is SEED-all (not SEED-I), so it keeps its own column
_VISIONZIP_COLUMNS = {
    "gqa": "GQA", "mmbench": "MMB", "mme_total": "MME-total", "pope": "POPE-F1", "sqa_img": "SQA-I",
    "vqav2": "VQAv2", "textvqa": "VQA-T", "mmmu": "MMMU", "seed_all": "SEED-all",
}
# DART's Table 1 (and its PDrop rows, as V2Drop's Table 1 reprints them): MME is perception + cognition
_DART_COLUMNS = {
    "gqa": "GQA", "mmbench": "MMB", "mmbench_cn": "MMB-CN", "mme_total": "MME-total", "pope": "POPE-F1",
    "sqa_img": "SQA-I", "vqav2": "VQAv2", "textvqa": "VQA-T", "vizwiz": "VizWiz", "ocrbench": "OCRBench",
}
# SparseVLM's ICML Table 1: MME is perception + cognition; its SEED (vanilla 60.3) is neither SEED-I nor SEED-all
_SPARSEVLM_COLUMNS = {
    "gqa": "GQA", "mmbench": "MMB", "mme_total": "MME-total", "pope": "POPE-F1", "sqa_img": "SQA-I",
    "seed_sparsevlm": "SEED (SparseVLM T1)", "textvqa": "VQA-T", "mmvet": "MMVet",
}
_FILES = {"dymu_paper_llava15.csv": _LLAVA15_COLUMNS, "dymu_paper_onevision.csv": _ONEVISION_COLUMNS,
          "visionzip_paper_llava15.csv": _VISIONZIP_COLUMNS, "dart_paper_llava15.csv": _DART_COLUMNS,
          # LLaVA-NeXT-7B: DART's Table 3 (320 tokens) and VisionZip's Table 2 (640/320/160), same columns
          "dart_paper_llava_next.csv": _DART_COLUMNS, "visionzip_paper_llava_next.csv": _VISIONZIP_COLUMNS,
          "sparsevlm_paper_llava15.csv": _SPARSEVLM_COLUMNS}
_ALIASES = {"llava-v1.5-7b": "llava-1.5-7b", "llava-onevision-qwen2-7b-ov": "llava-onevision-7b"}
REPORTED_KEYS = ["run", "method", "level", "threshold_data", "schedule", "vtu", "table"]


def normalise_backbone(family: str) -> str:
    """``llava-1.5-7b-hf`` -> ``llava-1.5-7b``: the reference CSVs' backbone names."""
    name = family.lower()
    if name.endswith("-hf"):
        name = name[:-3]
    return _ALIASES.get(name, name)


def _bool_word(value: object) -> str:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()
    return text


def load_reference(folder: Path | None = None) -> pd.DataFrame:
    """All reported rows, one frame: backbone, key columns, benchmark columns, tokens, avg_paper."""
    folder = Path(folder) if folder else reference_dir()
    frames = []
    for name, mapping in _FILES.items():
        path = folder / name
        if not path.is_file():
            raise ConfigError(f"reference table {path} is missing; reinstall dymu-eval")
        raw = pd.read_csv(path, dtype={"table": str, "level": str, "vtu": str})
        df = pd.DataFrame({"backbone": raw["backbone"], "table": raw["table"].astype(str)})
        for col in ("method", "level", "threshold_data", "schedule", "vtu"):
            df[col] = raw[col].map(_bool_word) if col in raw else ""
        labels = []
        for _, row in df.iterrows():
            method = row["method"] if row["method"] in ("DyMU", "ToMe", "baseline") else row["method"]
            cfg = RunConfig(model="reported", family=str(row["backbone"]), method=method, level=row["level"],
                            threshold_data=row["threshold_data"], schedule=row["schedule"], vtu=row["vtu"])
            labels.append(cfg.label(show_model=False))
        df.insert(0, "run", labels)
        for src, dst in mapping.items():
            df[dst] = pd.to_numeric(raw[src], errors="coerce")
        df["tokens_mean"] = pd.to_numeric(raw.get("tokens"), errors="coerce") if "tokens" in raw else math.nan
        df["tokens_std"] = pd.to_numeric(raw.get("tokens_std"), errors="coerce") if "tokens_std" in raw else math.nan
        if "token_fraction" in raw:
            df["tokens_pct"] = 100.0 * pd.to_numeric(raw["token_fraction"], errors="coerce")
        df["avg_paper"] = pd.to_numeric(raw["avg"], errors="coerce") if "avg" in raw else math.nan
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def reported_rows(reference: pd.DataFrame, backbone: str, avg_over: list[str]) -> pd.DataFrame | None:
    """Reported rows of one backbone with ``avg`` recomputed over the measured table's benchmarks.

    Rows printed twice in the paper (e.g. DyMU-mid in Tables 2 and 5) appear once, under the
    first table. Returns None when the papers report nothing for this backbone.
    """
    rows = reference[reference["backbone"] == backbone].drop(columns=["backbone"])
    if rows.empty:
        return None
    value_cols = [c for c in rows.columns if c not in REPORTED_KEYS]
    rows = rows.dropna(axis=1, how="all")
    value_cols = [c for c in value_cols if c in rows.columns]
    rows = rows.drop_duplicates(subset=[c for c in rows.columns if c != "table"], keep="first")
    present = [b for b in avg_over if b in rows.columns]
    if present and len(present) == len(avg_over):
        scaled = pd.DataFrame({b: rows[b] / 28.0 if b.endswith("-total") else rows[b] for b in present})
        rows["avg"] = scaled.mean(axis=1, skipna=False)
    else:
        rows["avg"] = np.nan
    rows = rows[[c for c in REPORTED_KEYS if c in rows.columns] + value_cols + ["avg"]]
    num = value_cols + ["avg"]
    rows[num] = rows[num].astype(float).round(DECIMALS)
    return rows.reset_index(drop=True)
