"""A short `dymu-eval demo` run (two samples per task) produces every output a reader looks at."""
from __future__ import annotations

import json

import pytest

from dymu_eval.cli import main
from dymu_eval.runs.demo import demo_runs
from dymu_eval.runs.demo_onevision import ONEVISION_TASKS, onevision_runs

pytestmark = pytest.mark.slow


def test_short_demo_writes_tables_plots_and_maps(tmp_path, capsys):
    out, runs = tmp_path / "out", tmp_path / "runs"
    assert main(["demo", "--limit", "2", "--out", str(out), "--runs", str(runs)]) == 0

    tables = out / "tables"
    markdown = (tables / "results.md").read_text()
    for label in ("baseline", "ToMe-low", "ToMe-mid", "ToMe-high", "FastV", "Random 25% s0", "Pool 2x2",
                  "VisionZip 54+10", "DyMU-low", "DyMU-mid", "DyMU-high", "DyMU-low w/o VTU"):
        assert f"| {label}" in markdown, f"row {label} missing from the demo table"
    assert list(tables.glob("*.csv")) and (tables / "results.tex").is_file()
    assert list(tables.glob("*_score_vs_tokens.png")) and list(tables.glob("*_tokens_vs_complexity.png"))

    maps = out / "maps"
    counts = json.loads((maps / "tokens.json").read_text())
    assert counts["method"] == "dtome" and len(counts["images"]) >= 3
    assert len(list(maps.glob("*.png"))) == len(counts["images"])
    # DyMU's point: token counts follow image content, so the photos do not all keep the same count
    assert len({e["visual_tokens"] for e in counts["images"]}) > 1

    # thresholds from two calibration sets: side by side, tokens on the evaluation images, scores
    compared = out / "thresholds_compare"
    assert (compared / "thresholds_compare.png").is_file()
    layers = (compared / "thresholds_side_by_side.csv").read_text().splitlines()
    assert layers[0].startswith("layer,offline_photos,") and "offline_scenes" in layers[0] and len(layers) > 2
    summary = (compared / "tokens_summary.csv").read_text()
    assert "offline_photos" in summary and "offline_scenes" in summary
    scored = (compared / "tables" / "results.md").read_text()
    for label in ("baseline", "DyMU-mid (offline_mix)", "DyMU-mid (offline_photos)", "DyMU-mid (offline_scenes)"):
        assert f"| {label}" in scored, f"row {label} missing from the calibration-set table"

    # the OneVision section: every method on an AnyRes image task and the video task
    ov = out / "onevision"
    ov_table = (ov / "tables" / "results.md").read_text()
    for label in ("baseline", "ToMe-mid", "FastV", "DyMU-low", "DyMU-mid", "DyMU-high"):
        assert f"| {label}" in ov_table, f"row {label} missing from the OneVision table"
    assert all(f"{task}-acc" in ov_table for task in ONEVISION_TASKS)
    assert (ov / "tokens_per_frame_vs_complexity.png").is_file()
    frames = json.loads((ov / "maps" / "tokens.json").read_text())
    assert len(frames["images"]) == len(list((ov / "maps").glob("*.png"))) == 3

    run_dirs = sorted(log.parent for log in runs.rglob("lmms_eval.log"))
    assert len(run_dirs) == len(demo_runs()) + 2 + len(onevision_runs("offline_mix"))
    for run_dir in run_dirs:
        assert list(run_dir.rglob("*_results.json")), f"{run_dir.name}: lmms-eval wrote no results"
        assert list((run_dir / "dymu_stats").glob("*.jsonl")), f"{run_dir.name}: no per-sample stats"
    printed = capsys.readouterr().out
    assert "[demo] tables and plots" in printed and "Thresholds from two calibration sets" in printed
    assert "[demo] OneVision:" in printed and "LLaVA-OneVision (micro)" in printed
