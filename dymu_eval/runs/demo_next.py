"""The demo's LLaVA-NeXT section: DyMU on LLaVA-1.6's AnyRes images, against ToMe, FastV, VisionZip and
the baseline.

Steps, each skipped when its output already exists (``force`` redoes them):

1. build (or verify) the micro LLaVA-NeXT in the user cache (the micro LLaVA's real weights, LLaVA-1.6's
   five pinpoints at 224 px: the task's 336 px photos take the 2x2 grid, 5 crops and 1312 positions);
2. calibrate DToMe thresholds for its encoder at the levels it runs, on the demo's calibration images
   (a cache entry of its own, keyed by the NeXT folder);
3. run the stock lmms-eval CLI for the baseline, DyMU low/mid, ToMe-mid, FastV and VisionZip (54+10
   per crop) on the offline AnyRes image POPE task (its first ``NEXT_LIMIT`` questions, the user's
   ``--limit``, or all of them with ``--full``);
4. write the comparison tables.
"""
from __future__ import annotations

from pathlib import Path

from .demo_plan import section_runs
from .spec import RunSpec

NEXT_TASKS = ("dymu_pope_offline",)
DYMU_LEVELS = ("low", "mid")
# Questions per run when the user gives neither --limit nor --full (the task's first 16 of 66: 10 present,
# 6 absent), so the whole `make demo` stays within 35 minutes on 2 cores (demo.LLAVA_LIMIT): a question is
# 1312 positions through SmolLM2 (about 0.37 TFLOP unreduced, 3.5 s on an AVX2-only 2-core machine).
NEXT_LIMIT = 16


def next_runs(thresholds: str) -> list[RunSpec]:
    """Every registered method's runs of this section (the built-ins: baseline, FastV, VisionZip 54+10
    per crop, a quarter of a crop's 256 patches as in the LLaVA section, ToMe at one level and DyMU
    low/mid with the thresholds of ``thresholds``)."""
    return section_runs("llava_next", thresholds, DYMU_LEVELS, main=False, prefix="NeXT-")


def next_section(images: Path, dataset: str, out: Path, runs_dir: Path, limit: int | None,
                 force: bool) -> dict[str, Path]:
    """Build, calibrate, run and tabulate the NeXT section; where its outputs are."""
    from ..offline.micro_next import build_micro_next
    from ..report.build import make_report
    from .demo import ensure_thresholds, run_specs

    print("[demo] building / verifying the micro LLaVA-NeXT")
    model_dir = build_micro_next("shipped")
    print(f"[demo] NeXT model: {model_dir}")
    ensure_thresholds(model_dir, images, force, dataset=dataset, levels=DYMU_LEVELS)
    run_dirs = run_specs(next_runs(dataset), model_dir, runs_dir, limit, force,
                         NEXT_TASKS, "micro-next")
    tables = out / "tables"
    make_report(run_dirs, tables)
    return {"model": model_dir, "tables": tables}
