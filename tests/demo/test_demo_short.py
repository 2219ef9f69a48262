"""A short `dymu-eval demo` run (two samples per task) produces every output a reader looks at.

Every step of the demo runs, on a plan with one lmms-eval run per plugin model and method: the
other levels of ToMe and DyMU run the same code with other numbers, and one lmms-eval process each
(~30 s) made this the suite's slowest test. Those planned runs are checked instead by constructing
their lmms-eval model with their model_args on the micro model (levels, threshold files); the full
plan itself is tests/runs/test_demo_plan.py's.
"""
from __future__ import annotations

import json

import pytest

from dymu_eval.cli import main
from dymu_eval.runs import demo as demo_module
from dymu_eval.runs import demo_next, demo_onevision
from dymu_eval.runs.demo import demo_runs
from dymu_eval.runs.demo_next import next_runs
from dymu_eval.runs.demo_onevision import ONEVISION_TASKS, onevision_runs

pytestmark = pytest.mark.slow

# LLaVA: one run per plugin model and method (DyMU-mid is the one the calibration-set comparison reads);
# OneVision: the baseline and DyMU (its ToMe and FastV models run through lmms-eval in tests/lmms); NeXT: DyMU
RUN = {"baseline", "ToMe-low", "FastV", "Random-0.25", "Pool-2x2", "VisionZip-54+10", "DyMU-mid", "DyMU-low w/o VTU",
       "OV-baseline", "OV-DyMU-mid", "NeXT-DyMU-mid"}


def _short(plan):
    return lambda thresholds: [spec for spec in plan(thresholds) if spec.name in RUN]


@pytest.fixture
def short_plans(monkeypatch):
    """The demo's plans cut to ``RUN``; (the LLaVA runs, the OneVision and NeXT runs, the planned runs left out)."""
    llava, onevision, nxt = _short(demo_runs), _short(onevision_runs), _short(next_runs)
    monkeypatch.setattr(demo_module, "demo_runs", llava)
    monkeypatch.setattr(demo_onevision, "onevision_runs", onevision)
    monkeypatch.setattr(demo_next, "next_runs", nxt)
    left_out = [("llava", s) for s in demo_runs("offline_mix") if s.name not in RUN]
    left_out += [("onevision", s) for s in onevision_runs("offline_mix") if s.name not in RUN]
    left_out += [("next", s) for s in next_runs("offline_mix") if s.name not in RUN]
    return llava("offline_mix"), onevision("offline_mix") + nxt("offline_mix"), left_out


def test_short_demo_writes_tables_plots_and_maps(tmp_path, capsys, short_plans):
    llava_runs, onevision_plan, left_out = short_plans
    assert left_out, "the full plan has more runs than the short one"
    out, runs = tmp_path / "out", tmp_path / "runs"
    assert main(["demo", "--limit", "2", "--out", str(out), "--runs", str(runs)]) == 0

    tables = out / "tables"
    markdown = (tables / "results.md").read_text()
    for label in ("baseline", "ToMe-low", "FastV", "Random 25% s0", "Pool 2x2", "VisionZip 54+10", "DyMU-mid",
                  "DyMU-low w/o VTU"):
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
    for label in ("baseline", "DyMU-mid"):
        assert f"| {label}" in ov_table, f"row {label} missing from the OneVision table"
    assert all(f"{task}-acc" in ov_table for task in ONEVISION_TASKS)
    assert (ov / "tokens_per_frame_vs_complexity.png").is_file()
    frames = json.loads((ov / "maps" / "tokens.json").read_text())
    assert len(frames["images"]) == len(list((ov / "maps").glob("*.png"))) == 3

    # the NeXT section: DyMU on LLaVA-1.6's AnyRes images
    next_table = (out / "next" / "tables" / "results.md").read_text()
    assert "| DyMU-mid" in next_table and "dymu_pope_offline-acc" in next_table

    run_dirs = sorted(log.parent for log in runs.rglob("lmms_eval.log"))
    assert len(run_dirs) == len(llava_runs) + 2 + len(onevision_plan)
    for run_dir in run_dirs:
        assert list(run_dir.rglob("*_results.json")), f"{run_dir.name}: lmms-eval wrote no results"
        assert list((run_dir / "dymu_stats").glob("*.jsonl")), f"{run_dir.name}: no per-sample stats"
    printed = capsys.readouterr().out
    assert "[demo] tables and plots" in printed and "Thresholds from two calibration sets" in printed
    assert "[demo] OneVision:" in printed and "LLaVA-OneVision (micro)" in printed
    assert "[demo] LLaVA-NeXT:" in printed and "LLaVA-NeXT (micro)" in printed
    _left_out_runs_construct_on_the_micro_models(left_out, tmp_path / "construct")


def _left_out_runs_construct_on_the_micro_models(left_out, stats):
    """Each planned run the short plan left out builds its lmms-eval model on its micro model, as its
    lmms-eval run would: the level's r or the calibrated thresholds file of that level are found."""
    from lmms_eval.models import get_model

    from dymu_eval.offline.micro_next import build_micro_next
    from dymu_eval.offline.micro_onevision import build_micro_onevision

    folders = {"llava": demo_module.demo_model(), "onevision": build_micro_onevision("shipped"),
               "next": build_micro_next("shipped")}
    for family, spec in left_out:
        model = get_model(spec.model).create_from_arg_string(
            spec.model_args(folders[family], stats_dir=str(stats / spec.folder("").name)),
            {"batch_size": "1", "device": "cpu"})
        reduction = model.pipe.reduction
        assert reduction.method == spec.args["method"], spec.name
        if spec.args.get("level", "none") != "none":  # the level's merges per layer; DyMU's from its thresholds
            assert reduction.r_per_layer and all(r > 0 for r in reduction.r_per_layer), spec.name
        if reduction.method == "dymu":
            assert reduction.thresholds_key.endswith(f"__{spec.args['level']}"), spec.name
