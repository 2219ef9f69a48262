"""The OneVision demo's plot: visual rows per frame against clip complexity, read from stats files."""
from __future__ import annotations

import json
import math

import pytest

from dymu_eval.errors import RunError
from dymu_eval.report.plots import tokens_per_frame_vs_complexity

TASK = "video_task"


@pytest.fixture
def task_files(tmp_path):
    clips = {"v/a.mp4": 0.1, "v/b.mp4": 0.3, "v/c.mp4": 0.2, "v/d.mp4": 0.5}
    (tmp_path / "videos.json").write_text(json.dumps(
        {"clips": [{"video": v, "complexity": c} for v, c in clips.items()]}))
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"video": v}) + "\n" for v in clips))
    return tmp_path, list(clips.values())


def _stats(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rows_per_frame_follow_the_clip_of_each_doc(task_files):
    folder, complexity = task_files
    frames = 8
    # per frame: 10 + 100 * complexity rows, so the points lie on a rising line
    dymu = [{"task": TASK, "doc_id": i, "frames": frames, "visual_rows": frames * (10 + 100 * c)}
            for i, c in enumerate(complexity)]
    dymu += [{"task": "image_task", "doc_id": 0, "frames": None, "visual_rows": 5000},  # another task: ignored
             {"task": TASK, "doc_id": 99, "frames": frames, "visual_rows": 1}]  # no such doc: ignored
    base = [{"task": TASK, "doc_id": i, "frames": frames, "visual_rows": frames * 65} for i in range(4)]
    files = {"DyMU": [_stats(folder / "dymu.jsonl", dymu)], "baseline": [_stats(folder / "base.jsonl", base)]}
    plot, stats = tokens_per_frame_vs_complexity(files, TASK, folder / "docs.jsonl", folder / "videos.json",
                                                 folder / "plot.png")
    assert plot == folder / "plot.png" and plot.stat().st_size > 0
    assert stats["DyMU"] == pytest.approx((1.0, 1.0))
    assert all(math.isnan(v) for v in stats["baseline"])  # constant per frame: no correlation


def test_nothing_to_plot_writes_nothing(task_files):
    folder, _ = task_files
    files = {"DyMU": [_stats(folder / "s.jsonl", [{"task": "other", "doc_id": 0, "frames": 8, "visual_rows": 9}])]}
    assert tokens_per_frame_vs_complexity(files, TASK, folder / "docs.jsonl", folder / "videos.json",
                                          folder / "plot.png") == (None, {})
    assert not (folder / "plot.png").exists()


def test_a_manifest_without_complexities_names_the_file(task_files):
    folder, _ = task_files
    (folder / "videos.json").write_text(json.dumps({"clips": [{"video": "v/a.mp4"}]}))
    with pytest.raises(RunError, match="videos.json"):
        tokens_per_frame_vs_complexity({}, TASK, folder / "docs.jsonl", folder / "videos.json", folder / "p.png")
