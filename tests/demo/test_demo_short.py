"""A short `dymu-eval demo` run (two samples per task) produces every output a reader looks at."""
from __future__ import annotations

import json

import pytest

from dymu_eval.cli import main

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

    for run_dir in runs.iterdir():
        assert list(run_dir.rglob("*_results.json")), f"{run_dir.name}: lmms-eval wrote no results"
        assert list((run_dir / "dymu_stats").glob("*.jsonl")), f"{run_dir.name}: no per-sample stats"
    assert "[demo] tables and plots" in capsys.readouterr().out
