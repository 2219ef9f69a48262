"""LLaVA-OneVision benchmarks become headline columns on a 0-100 scale, whichever scale lmms-eval's
aggregator returns."""
from __future__ import annotations

import pytest

from dymu_eval.report.benchmarks import columns_for_task


@pytest.mark.parametrize("task,metrics,label,value", [
    ("videomme", {"videomme_perception_score": 61.3}, "VideoMME", 61.3),
    ("mvbench", {"mvbench_accuracy": 56.7}, "MVBench", 56.7),
    ("mlvu_dev", {"mlvu_percetion_score": 64.7}, "MLVU", 64.7),
    ("longvideobench_val_v", {"lvb_acc": 0.565}, "LongVideoBench", 56.5),
    ("egoschema_subset", {"score": 0.602}, "EgoSchema", 60.2),
    ("mmbench_en_dev", {"gpt_eval_score": 79.3}, "MMB", 79.3),
])
def test_video_and_onevision_headlines(task, metrics, label, value):
    cols = columns_for_task(task, metrics)
    head = [c for c in cols if c.headline]
    assert len(head) == 1 and head[0].name == label and head[0].value == pytest.approx(value)
    assert head[0].avg_value == pytest.approx(value)


def test_a_generic_score_elsewhere_stays_raw():
    cols = columns_for_task("some_task", {"score": 0.5})
    assert [(c.name, c.headline) for c in cols] == [("some_task:score", False)]
