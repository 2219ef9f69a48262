"""One call from run folders to every output: tables, reference rows, plots, long CSV."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .reference import load_reference, normalise_backbone, reported_rows
from .runs import collect
from .tables import FamilyTable, build_tables, long_format

FORMATS = ("md", "csv", "latex")


@dataclass
class Report:
    tables: list[FamilyTable]
    written: list[Path]
    warnings: list[str]
    correlations: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)


def _table_names(reported) -> str:
    """The papers' tables the reported rows come from, in the order they first appear."""
    return ", ".join(dict.fromkeys(str(name) for name in reported["table"]))


def make_report(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, formats: list[str] | None = None,
                reference: str = "paper", reference_backbone: str | None = None, allow_failed: bool = False,
                plots: bool = True) -> Report:
    """Aggregate ``run_dirs`` and write tables (and plots) under ``out_dir``."""
    from .render import write_all

    formats = list(formats or FORMATS)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"formats: unknown format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    if reference not in ("paper", "none"):
        raise ConfigError(f"reference must be 'paper' or 'none', not {reference!r}")
    collection = collect(run_dirs, allow_failed=allow_failed)
    tables = build_tables(collection)
    if reference == "paper":
        ref = load_reference()
        known = set(ref["backbone"])
        if reference_backbone is not None and reference_backbone not in known:
            raise ConfigError(f"reference_backbone {reference_backbone!r} is not in the reference tables; "
                              f"known: {', '.join(sorted(known))}")
        for t in tables:
            backbone = reference_backbone or normalise_backbone(t.family)
            t.reported = reported_rows(ref, backbone, t.avg_over)
            if t.reported is not None:
                t.reported_notes = [
                    f"Reported by the papers for {backbone} (tables: {_table_names(t.reported)}; numbered tables are "
                    "the DyMU paper's; results/reference/README.md); not measured here.",
                    "Avg (paper, 9 benchmarks) is the paper's own average; Avg is recomputed over the benchmarks "
                    "the measured table averages (empty when the paper lacks one of them).",
                ]
    out = Path(out_dir)
    written = write_all(tables, out, formats)
    long_path = out / "runs_long.csv"
    long_format(collection).to_csv(long_path, index=False)
    written.append(long_path)
    for t in tables:
        if t.stages is not None:
            stages_path = out / f"{t.family}_stages.csv"
            t.stages.to_csv(stages_path, index=False)
            written.append(stages_path)
    correlations: dict[str, dict[str, tuple[float, float]]] = {}
    if plots:
        from .plots import score_vs_tflops, score_vs_tokens, stage_breakdown, tokens_vs_complexity

        for t in tables:
            for p in (score_vs_tokens(t, out / f"{t.family}_score_vs_tokens.png"),
                      score_vs_tflops(t, out / f"{t.family}_score_vs_tflops.png"),
                      stage_breakdown(t, out / f"{t.family}_stages.png")):
                if p:
                    written.append(p)
            runs = [r for r in collection.runs if r.config.family == t.family]
            p, corr = tokens_vs_complexity(t.family, runs, out / f"{t.family}_tokens_vs_complexity.png")
            if p:
                written.append(p)
                correlations[t.family] = corr
    return Report(tables=tables, written=written, warnings=collection.warnings, correlations=correlations)
