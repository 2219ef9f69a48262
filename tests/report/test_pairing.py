"""`dymu-eval tables` pairs stats with results by what the files say, and refuses what does not add up.

Built on the real lmms-eval outputs of ``lmms_runs`` (conftest.py): copies whose file times are
scrambled, stats files with rows removed, split by rank, cut off or edited, results files edited.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dymu_eval.cli import main as cli_main
from dymu_eval.errors import RunError
from dymu_eval.report.runs import INCOMPLETE_MARK, collect
from dymu_eval.report.tables import build_tables

pytestmark = pytest.mark.slow
POPE = "dymu_pope_offline"


def _copy(src: Path, dst: Path) -> Path:
    """A copy that keeps no file times, then made adversarial: every results file older than any stats."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for i, path in enumerate(sorted(dst.rglob("*_results.json"))):
        os.utime(path, (1e9 + i, 1e9 + i))  # 2001, newest stamp last
    for i, path in enumerate(sorted(dst.rglob("dymu_stats/*.jsonl"), reverse=True)):
        os.utime(path, (2e9 + i, 2e9 + i))  # 2033, oldest stamp newest
    return dst


def _stats_file(run: Path) -> Path:
    (path,) = sorted((run / "dymu_stats").glob("*.jsonl"))
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _results_file(run: Path) -> Path:
    (path,) = sorted(run.rglob("*_results.json"))
    return path


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _tables_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    rc = cli_main(["tables", *map(str, args), "--no-plots", "--reference", "none"])
    return rc, capsys.readouterr().err


def _one_line(err: str) -> str:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("dymu-eval tables: error: ")
    return err


def test_a_copy_that_keeps_no_file_times_tables_the_same(lmms_runs: dict[str, Path], tmp_path: Path) -> None:
    originals = [lmms_runs["base"], lmms_runs["main"]]
    copies = [_copy(p, tmp_path / p.name) for p in originals]
    coll = collect(copies)
    assert not [w for w in coll.warnings if "no per-sample stats" in w or "skipped" in w], coll.warnings
    (got,), (want,) = build_tables(coll), build_tables(collect(originals))
    pd.testing.assert_frame_equal(got.measured, want.measured)
    (tome,) = [r for r in coll.runs if r.config.method == "ToMe"]
    assert len(tome.tasks[POPE].stats_rows) == 2  # the newer two-sample run's own stats
    assert len(tome.tasks["dymu_mme_offline"].stats_rows) == 4


def test_stats_rows_record_the_model_args_the_results_record(lmms_runs: dict[str, Path], tmp_path: Path) -> None:
    results = json.loads(_results_file(lmms_runs["base"]).read_text())
    rows = [json.loads(line) for line in _lines(_stats_file(lmms_runs["base"]))]
    assert {r["model_args"] for r in rows} == {results["config"]["model_args"]}
    # rows written before model_args was recorded still pair, by their described configuration
    copy = _copy(lmms_runs["main"], tmp_path / "old_rows")
    for path in (copy / "dymu_stats").glob("*.jsonl"):
        path.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "model_args"}) + "\n"
                                for line in _lines(path)))
    (got,), (want,) = build_tables(collect([copy])), build_tables(collect([lmms_runs["main"]]))
    pd.testing.assert_frame_equal(got.measured, want.measured)


def test_stats_of_other_model_args_are_not_taken(lmms_runs: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(lmms_runs["base"], tmp_path / "other_args")
    stats = _stats_file(copy)
    stats.write_text("".join(json.dumps({**json.loads(line), "model_args": "pretrained=elsewhere,level=none"}) + "\n"
                             for line in _lines(stats)))
    with pytest.raises(RunError, match=r"run baseline \(stats .*\) has no lmms-eval results file"):
        collect([copy])


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.pop("config"), "no 'config' with the model name"),
    (lambda d: d.update(results=None), "'results' is null, not the table of task results"),
])
def test_a_results_file_that_cannot_be_identified_is_one_line(
        lmms_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, edit, needle: str) -> None:
    copy = _copy(lmms_runs["base"], tmp_path / "edited")
    results = _results_file(copy)
    _edit_json(results, edit)
    for extra in ([], ["--allow-failed"]):
        rc, err = _tables_cli(capsys, copy, "--out", tmp_path / "t", *extra)
        assert rc == 2 and f"{results}: {needle}" in _one_line(err)
        assert "has no lmms-eval results file" not in err
    assert not (tmp_path / "t").exists()


def test_a_stats_row_without_a_token_field_names_file_line_and_field(
        lmms_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    copy = _copy(lmms_runs["base"], tmp_path / "no_llm_rows")
    stats = _stats_file(copy)
    lines = _lines(stats)
    row = json.loads(lines[2])
    del row["llm_rows"], row["visual_tokens_after"]
    lines[2] = json.dumps(row) + "\n"
    stats.write_text("".join(lines))
    rc, err = _tables_cli(capsys, copy, "--out", tmp_path / "t")
    assert rc == 2 and f"{stats}:3: stats row has no visual_tokens_after, llm_rows field(s)" in _one_line(err)


def _drop_rows(stats: Path, task: str, keep: int) -> None:
    kept, seen = [], 0
    for line in _lines(stats):
        if json.loads(line)["task"] == task:
            seen += 1
            if seen > keep:
                continue
        kept.append(line)
    stats.write_text("".join(kept))


def test_stats_with_missing_rows_are_refused_or_marked(lmms_runs: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    copy = _copy(lmms_runs["base"], tmp_path / "missing_rows")
    stats = _stats_file(copy)
    _drop_rows(stats, POPE, keep=2)
    out = tmp_path / "t"
    rc, err = _tables_cli(capsys, copy, "--out", out)
    line = _one_line(err)
    assert rc == 2 and f"run baseline: per-sample stats for 2 of the 4 scored samples of task {POPE}" in line
    assert str(stats) in line and "--allow-failed" in line
    assert not out.exists()

    rc, err = _tables_cli(capsys, copy, "--out", out, "--allow-failed")
    assert rc == 0 and "2 of the 4 scored samples" in err
    md = (out / "results.md").read_text()
    assert f"| baseline {INCOMPLETE_MARK} |" in md
    assert f"{INCOMPLETE_MARK}: run baseline: per-sample stats for 2 of the 4 scored samples of task {POPE}" in md
    coll = collect([copy], allow_failed=True)
    (table,) = build_tables(coll)
    assert table.measured["tokens_mean"].notna().all()


def test_ranks_are_counted_together(lmms_runs: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(lmms_runs["base"], tmp_path / "two_ranks")
    stats = _stats_file(copy)
    rows = [json.loads(line) for line in _lines(stats)]
    rank1 = stats.with_name(stats.name.replace("_rank0", "_rank1"))
    stats.write_text("".join(json.dumps(r) + "\n" for r in rows[0::2]))
    rank1.write_text("".join(json.dumps({**r, "rank": 1}) + "\n" for r in rows[1::2]))
    (got,), (want,) = build_tables(collect([copy])), build_tables(collect([lmms_runs["base"]]))
    pd.testing.assert_frame_equal(got.measured, want.measured)
    rank1.unlink()  # a rank whose file was left on another node's disk
    kept = sum(r["task"] == POPE for r in rows[0::2])
    with pytest.raises(RunError, match=rf"per-sample stats for .*{kept} of the 4 scored samples of task {POPE}"):
        collect([copy])


def test_a_cut_off_last_line_is_skipped_a_broken_middle_line_is_not(
        lmms_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    copy = _copy(lmms_runs["base"], tmp_path / "cut")
    stats = _stats_file(copy)
    lines = _lines(stats)
    cut = len(lines)
    stats.write_text("".join(lines[:-1]) + lines[-1][:40])  # killed while writing the last row
    coll = collect([copy], allow_failed=True)
    assert any(f"{stats}:{cut}: skipped the cut-off last line" in w for w in coll.warnings)
    assert any("per-sample stats for 3 of the 4 scored samples" in w for w in coll.warnings)
    rc, err = _tables_cli(capsys, copy, "--out", tmp_path / "t")
    assert rc == 2 and "3 of the 4 scored samples" in _one_line(err)  # a row is missing: refused by default

    stats.write_text("".join(lines[:1]) + lines[1][:40] + "\n" + "".join(lines[2:]))
    for extra in ([], ["--allow-failed"]):
        rc, err = _tables_cli(capsys, copy, "--out", tmp_path / "t2", *extra)
        assert rc == 2 and f"{stats}:2: not valid JSON" in _one_line(err)


def test_nothing_left_to_table_is_refused(lmms_runs: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "t"
    rc, err = _tables_cli(capsys, lmms_runs["failed"], "--out", out, "--allow-failed")
    assert rc == 2 and "nothing to table: every run under" in err and "Traceback" not in err
    assert not out.exists()


def test_out_that_is_a_file_is_one_line_before_any_work(lmms_runs: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    rc, err = _tables_cli(capsys, lmms_runs["base"], "--out", mine)
    assert rc == 2 and f"--out {mine}" in _one_line(err)
    assert mine.read_text() == "mine"
