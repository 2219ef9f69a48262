"""The stats file the plugin appends to: whole lines, one write each, and the run's model_args."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dymu_eval.lmms import stats as stats_module
from dymu_eval.lmms.stats import StatsWriter
from dymu_eval.report.runs import read_stats_file

ARGV = ["lmms-eval", "--model", "dymu_llava", "--model_args", "pretrained=x,level=low", "--output_path", "o"]


def _rows(n: int) -> list[dict]:
    return [{"task": "t", "doc_id": i, "visual_tokens_after": i, "encoder_tokens": list(range(3000))}
            for i in range(n)]


def test_each_row_is_one_whole_line_per_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = StatsWriter(tmp_path, "20260101_000000_1", 0, {"model": "dymu_llava"}, argv=ARGV)
    real_write, calls = stats_module.os.write, []

    def write(fd: int, data) -> int:
        if len(calls) == 3:
            raise OSError(28, "No space left on device")  # the disk fills while the 4th row goes out
        calls.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(stats_module.os, "write", write)
    with pytest.raises(OSError):
        writer.write(_rows(5))
    assert all(c.endswith(b"\n") and c.count(b"\n") == 1 for c in calls) and len(calls[0]) > 8192
    warnings: list[str] = []
    rows = read_stats_file(writer.path, warnings)
    assert [r["doc_id"] for r in rows] == [0, 1, 2] and warnings == []
    assert {r["model_args"] for r in rows} == {"pretrained=x,level=low"}


def test_a_row_that_cannot_be_written_writes_nothing(tmp_path: Path) -> None:
    writer = StatsWriter(tmp_path, "20260101_000000_1", 0, {}, argv=["lmms-eval", "--model_args=a=1"])
    with pytest.raises(TypeError):
        writer.write([{"task": "t", "doc_id": 0}, {"task": "t", "doc_id": 1, "new_tokens": object()}])
    assert not writer.path.exists()
    writer.write([{"task": "t", "doc_id": 0}])
    assert json.loads(writer.path.read_text())["model_args"] == "a=1"
    assert StatsWriter(tmp_path, "s", 0, {}, argv=["python"]).constant["model_args"] is None
