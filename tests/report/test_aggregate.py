"""`dymu-eval tables` on real lmms-eval outputs: failed runs, duplicates, missing stats, exact numbers."""
from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dymu_eval.cli import main as cli_main
from dymu_eval.report.build import make_report
from dymu_eval.report.render import (
    normalise,
    read_csv_sections,
    read_latex,
    read_markdown,
    to_markdown,
)
from dymu_eval.report.runs import RunError, collect, read_jsonl
from dymu_eval.report.tables import build_tables

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- independent recomputation from samples
def _pope(rows: list[dict]) -> tuple[float, float]:
    res = [r["pope_accuracy"] for r in rows]
    acc = np.mean([x["score"] for x in res])
    tp = sum(x["prediction"] == "yes" and x["ground_truth"] == "yes" for x in res)
    fp = sum(x["prediction"] == "yes" and x["ground_truth"] == "no" for x in res)
    fn = sum(x["prediction"] == "no" and x["ground_truth"] == "yes" for x in res)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return 100 * acc, 100 * f1


def _mme(rows: list[dict]) -> float:
    by_cat: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        key = "mme_perception_score" if "mme_perception_score" in row else "mme_cognition_score"
        x = row[key]
        by_cat[x["category"]][x["question_id"]].append(x["score"])
    total = 0.0
    for qids in by_cat.values():
        total += np.mean([100 * np.mean(s) + 100 * (sum(s) == 2) for s in qids.values()])
    return total


def _samples(results_file: Path, task: str) -> list[dict]:
    stamp = results_file.name[: -len("_results.json")]
    return read_jsonl(results_file.parent / f"{stamp}_samples_{task}.jsonl")


def _row(table: pd.DataFrame, label: str) -> pd.Series:
    hits = table[table["run"] == label]
    assert len(hits) == 1, (label, table["run"].tolist())
    return hits.iloc[0]


# ---------------------------------------------------------------- tests
def test_failed_run_is_an_error_naming_it(lmms_runs: dict[str, Path]) -> None:
    failed = lmms_runs["failed"]
    assert not list(failed.rglob("*_results.json")), "the odd-limit MME run should have failed"
    with pytest.raises(RunError) as err:
        collect([lmms_runs["base"], failed])
    msg = str(err.value)
    assert str(failed) in msg and "no lmms-eval results file" in msg
    assert "dymu_stats" in msg  # the plugin's stats of the failed run are named too
    coll = collect([lmms_runs["base"], failed], allow_failed=True)
    assert [r.config.label() for r in coll.runs] == ["baseline"]
    assert any(w.startswith("skipped:") and str(failed) in w for w in coll.warnings)
    assert cli_main(["tables", str(failed), "--out", str(lmms_runs["root"] / "t_fail")]) == 2


def test_exact_numbers_against_samples_and_stats(lmms_runs: dict[str, Path]) -> None:
    coll = collect([lmms_runs["base"], lmms_runs["main"]])
    (table,) = build_tables(coll)
    df = table.measured
    assert df["run"].tolist()[0] == "baseline"
    for run in coll.runs:
        row = _row(df, run.config.label())
        for task, tr in run.tasks.items():
            samples = _samples(tr.source.path, task)
            assert len(samples) == tr.n
            if task == "dymu_pope_offline":
                acc, f1 = _pope(samples)
                assert row["dymu_pope_offline-acc"] == round(acc, 2)
                assert row["dymu_pope_offline-F1"] == round(f1, 2)
            elif task == "dymu_mme_offline":
                assert row["dymu_mme_offline-total"] == round(_mme(samples), 2)
                assert row["dymu_mme_offline-P"] == round(_mme(samples), 2)  # perception-only task
            elif task == "dymu_gqa_offline":
                assert row["dymu_gqa_offline"] == round(100 * np.mean([s["exact_match"] for s in samples]), 2)
            # stats rows are the samples of this run and task, one per doc
            assert sorted(r["doc_id"] for r in tr.stats_rows) == sorted(s["doc_id"] for s in samples)
        toks = np.array([r["visual_tokens_after"] for r in run.stats_rows()], dtype=float)
        before = np.array([r["visual_tokens_before"] for r in run.stats_rows()], dtype=float)
        assert row["tokens_mean"] == round(toks.mean(), 2) and row["tokens_std"] == round(toks.std(), 2)
        assert (row["tokens_min"], row["tokens_max"]) == (toks.min(), toks.max())
        assert row["tokens_pct"] == round(100 * toks.mean() / before.mean(), 2)
    base = _row(df, "baseline")
    assert base["tokens_pct"] == 100.0 and base["tokens_min"] == base["tokens_max"]
    tome = _row(df, "ToMe r=4")
    assert tome["tokens_max"] < base["tokens_min"]  # r merges per layer always remove tokens
    # the average covers exactly the benchmarks every row has (the DyMU run skipped GQA)
    assert table.avg_over == ["dymu_mme_offline-total", "dymu_pope_offline-F1"]
    for _, r in df.iterrows():
        expect = np.mean([r["dymu_mme_offline-total"] / 28, r["dymu_pope_offline-F1"]])
        assert math.isclose(r["avg"], round(expect, 2), abs_tol=0.011)


def test_efficiency_columns_are_the_stats_averaged(lmms_runs: dict[str, Path], tmp_path: Path) -> None:
    coll = collect([lmms_runs["base"], lmms_runs["main"]])
    (table,) = build_tables(coll)
    df, stages = table.measured, table.stages
    header = to_markdown([table])
    for col in ("prefill TFLOPs", "% of baseline FLOPs", "TTFT ms", "speed-up", "KV MB", "peak mem MB"):
        assert f"| {col} |" in header
    base_rows = next(r for r in coll.runs if r.config.method == "baseline").stats_rows()
    base_first = np.mean([r["encoder_flops"] + r["projector_flops"] + r["prefill_flops"] for r in base_rows])
    base_ttft = np.mean([r["ttft_ms"] for r in base_rows if not r["warmup"]])
    for run in coll.runs:
        rows = run.stats_rows()
        timed = [r for r in rows if not r["warmup"]]
        row = _row(df, run.config.label())
        st = stages[stages["run"] == run.config.label()].iloc[0]
        first = np.mean([r["encoder_flops"] + r["projector_flops"] + r["prefill_flops"] for r in rows])
        assert row["llm_rows"] == round(np.mean([r["llm_rows"] for r in rows]), 2)
        assert row["layer_avg_rows"] == round(np.mean([r["layer_avg_rows"] for r in rows]), 2)
        assert row["flop_equiv_tokens"] == round(np.mean([r["flop_equiv_tokens"] for r in rows]), 2)
        assert row["kv_mb"] == round(np.mean([r["kv_cache_bytes"] for r in rows]) / 1e6, 2)
        assert row["ttft_ms"] == round(np.mean([r["ttft_ms"] for r in timed]), 2)
        assert row["flops_pct_baseline"] == round(100 * first / base_first, 2)
        assert row["speedup"] == round(base_ttft / np.mean([r["ttft_ms"] for r in timed]), 2)
        assert math.isnan(row["peak_mem_mb"])  # CPU runs: no GPU memory figure, not a false 0
        for stage in ("encoder", "projector", "prefill", "decode"):
            assert st[f"{stage}_tflops"] == pytest.approx(np.mean([r[f"{stage}_flops"] for r in rows]) / 1e12)
        for stage in ("encoder_ms", "prefill_ms", "decode_ms"):
            assert st[stage] == pytest.approx(np.mean([r[stage] for r in timed]))
    assert _row(df, "baseline")["flops_pct_baseline"] == 100.0 and _row(df, "baseline")["speedup"] == 1.0
    assert _row(df, "ToMe r=4")["flops_pct_baseline"] < 100.0
    assert any("layer_avg_rows" in n and "flop_equiv_tokens" in n for n in table.notes)
    out = tmp_path / "eff"
    make_report([lmms_runs["base"], lmms_runs["main"]], out, reference="none")
    for name in (f"{table.family}_score_vs_tflops.png", f"{table.family}_stages.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    assert pd.read_csv(out / f"{table.family}_stages.csv")["prefill_tflops"].gt(0).all()


def test_duplicates_newest_wins(lmms_runs: dict[str, Path]) -> None:
    coll = collect([lmms_runs["main"]])
    (tome,) = [r for r in coll.runs if r.config.method == "ToMe"]
    files = sorted(lmms_runs["main"].rglob("*_results.json"))
    tome_files = [f for f in files if json.loads(f.read_text())["config"]["model"] == "tome_llava"]
    assert len(tome_files) == 2
    older, newer = tome_files  # stamps sort by time
    assert tome.tasks["dymu_pope_offline"].source.path == newer and tome.tasks["dymu_pope_offline"].n == 2
    assert tome.tasks["dymu_mme_offline"].source.path == older
    assert len(tome.tasks["dymu_pope_offline"].stats_rows) == 2  # the newer run's stats, not the older's
    dup = [w for w in coll.warnings if w.startswith("duplicate run of ToMe r=4 on dymu_pope_offline")]
    assert len(dup) == 1 and str(older) in dup[0]


def test_missing_stats_leaves_tokens_empty(lmms_runs: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "base_nostats"
    shutil.copytree(lmms_runs["base"], copy)
    shutil.rmtree(copy / "dymu_stats")
    coll = collect([copy])
    (table,) = build_tables(coll)
    row = table.measured.iloc[0]
    assert row["run"] == "baseline" and math.isnan(row["tokens_mean"]) and math.isnan(row["tokens_pct"])
    assert any("no per-sample stats" in w for w in coll.warnings)
    full = build_tables(collect([lmms_runs["base"]]))[0].measured.iloc[0]
    for col in ("dymu_pope_offline-F1", "dymu_mme_offline-total", "dymu_gqa_offline", "avg"):
        assert row[col] == full[col]


def test_formats_round_trip_with_reported_rows(lmms_runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "tables"
    rep = make_report([lmms_runs["base"], lmms_runs["main"]], out, reference_backbone="llava-1.5-7b")
    family = rep.tables[0].family
    md = read_markdown((out / "results.md").read_text())
    tex = read_latex((out / "results.tex").read_text())
    csv = read_csv_sections(out / f"{family}.csv")
    assert set(md) == set(tex) == set(csv) == {(family, "measured"), (family, "reported")}
    for key in csv:  # the CSV holds both sections, so its column order is the union's
        pd.testing.assert_frame_equal(normalise(md[key]), normalise(csv[key]), check_dtype=False, check_like=True)
        pd.testing.assert_frame_equal(normalise(tex[key]), normalise(md[key]), check_dtype=False)
        assert len(md[key]) == len(csv[key]) > 0
    # reported rows never appear among measured ones
    assert "DyMU-mid" in set(csv[(family, "reported")]["run"])
    assert set(csv[(family, "measured")]["run"]) == {"baseline", "ToMe r=4", "DyMU-low (offline_tasks)"}
    # plots exist and are real images; the complexity plot carries correlations of the reducing runs
    for name in (f"{family}_score_vs_tokens.png", f"{family}_tokens_vs_complexity.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    assert set(rep.correlations[family]) == {"ToMe r=4", "DyMU-low (offline_tasks)"}
    long = pd.read_csv(out / "runs_long.csv")
    assert set(long["task"]) == {"dymu_pope_offline", "dymu_mme_offline", "dymu_gqa_offline"}


def test_cli_tables(lmms_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert cli_main(["tables", str(lmms_runs["base"]), str(lmms_runs["main"]), "--out", str(out),
                     "--format", "md,csv", "--no-plots", "--reference", "none"]) == 0
    captured = capsys.readouterr()
    assert "| baseline |" in captured.out and "reported" not in captured.out
    assert "duplicate run of ToMe r=4" in captured.err
    assert any(p.name.endswith("_stages.csv") for p in out.iterdir())
    assert sorted(p.suffix for p in out.iterdir()) == [".csv", ".csv", ".csv", ".md"]
    assert cli_main(["tables", str(lmms_runs["base"]), "--out", str(out), "--format", "pdf"]) == 2
