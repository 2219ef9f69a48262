"""Run labels from model_args, and the paper's reference rows."""
from __future__ import annotations

import math

import pytest

from dymu_eval.report.labels import describe, finalize
from dymu_eval.report.reference import load_reference, reported_rows


@pytest.mark.parametrize("model,args,label", [
    ("dymu_llava", "pretrained=x/llava-1.5-7b-hf,level=low", "DyMU-low"),
    ("dymu_llava", "pretrained=x,level=none", "baseline"),
    ("dymu_llava", "pretrained=x,level=mid,thresholds=pixmo_cap", "DyMU-mid (pixmo_cap)"),
    ("dymu_llava", "pretrained=x,level=low,vtu=false", "DyMU-low w/o VTU"),
    ("dymu_llava", "pretrained=x,level=mid,schedule=reverse_linear", "DyMU-mid reverse_linear"),
    ("tome_llava", "pretrained=x,r=21", "ToMe r=21"),
    ("tome_llava", "pretrained=x,r=21,vtu=true", "ToMe r=21 +VTU"),
    ("fastv_llava", "pretrained=x,fastv_k=2,fastv_ratio=0.5", "FastV K2 R0.5"),
    ("dymu_llava", "pretrained=x,method=tome,r=8", "ToMe r=8"),
    ("llava_hf", "pretrained=x,device_map=cpu", "baseline [llava_hf]"),
    ("random_llava", "pretrained=x,keep=64", "Random k64 s0"),
    ("random_llava", "pretrained=x,keep=0.25,seed=3", "Random 25% s3"),
    ("dymu_llava", "pretrained=x,method=random", "Random 25% s0"),
    ("pool_llava", "pretrained=x,pool_factor=2", "Pool 2x2"),
    ("pool_llava", "pretrained=x,vtu=true", "Pool 2x2 +VTU"),
    ("visionzip_llava", "pretrained=x,dominant=54,contextual=10", "VisionZip 54+10"),
    ("visionzip_llava", "pretrained=x,dominant=108,contextual=20,vtu=true", "VisionZip 108+20 +VTU"),
    ("visionzip_llava", "pretrained=x,method=none", "baseline"),
    ("dymu_llava", "pretrained=x,level=low,merge_order=position", "DyMU-low position order"),
    ("tome_llava", "pretrained=x,r=21,merge_order=position", "ToMe r=21 position order"),
    ("dymu_llava", "pretrained=x,level=low,merge_order=reference", "DyMU-low"),
    ("dymu_llava_onevision", "pretrained=x,level=low,max_frames_num=32", "DyMU-low"),
    ("dymu_llava_onevision", "pretrained=x,level=low,layout=stock", "DyMU-low"),
    ("dymu_llava_onevision", "pretrained=x,level=low,layout=official", "DyMU-low [official layout]"),
])
def test_labels_from_model_args(model: str, args: str, label: str) -> None:
    from dymu_eval.report.labels import parse_model_args

    assert finalize(model, "f", describe(model, parse_model_args(args))).label() == label


def test_merge_order_tells_runs_apart() -> None:
    """Runs that differ only in merge order are different rows; a position-order threshold key
    still names its calibration dataset."""
    from dymu_eval.report.labels import parse_model_args

    ref = finalize("dymu_llava", "f", describe("dymu_llava", parse_model_args("level=low")))
    pos = finalize("dymu_llava", "f", describe("dymu_llava", {"level": "low", "merge_order": "position",
                                                              "thresholds": "enc__pixmo_cap__constant__low__position"}))
    assert ref.merge_order == "reference" and pos.merge_order == "position" and ref.key() != pos.key()
    assert pos.threshold_data == "pixmo_cap"


def test_reference_average_rule_reproduces_the_paper() -> None:
    ref = load_reference()
    nine = ["GQA", "MMB", "MME-total", "POPE-F1", "SQA-I", "SEED-I", "VQA-T", "MMVet", "LLaVA-W"]
    rows = reported_rows(ref, "llava-1.5-7b", nine)
    full = rows.dropna(subset=["avg", "avg_paper"])
    assert len(full) >= 10
    for _, r in full.iterrows():  # mean of nine with MME total / 28 gives the paper's Avg column
        assert math.isclose(r["avg"], r["avg_paper"], abs_tol=0.06), r["run"]
    assert (rows["run"] == "DyMU-mid").sum() == 1  # printed in Tables 2 and 5, shown once
    assert reported_rows(ref, "no-such-model", nine) is None


def test_visionzip_reported_rows_at_192_128_64_tokens() -> None:
    ref = load_reference()
    rows = reported_rows(ref, "llava-1.5-7b", ["GQA", "POPE-F1"])
    vz = rows[rows["method"] == "VisionZip"].set_index("run")
    assert list(vz.index) == ["VisionZip 162+30", "VisionZip 108+20", "VisionZip 54+10"]
    assert vz["tokens_mean"].tolist() == [192, 128, 64] and set(vz["table"]) == {"VisionZip T1"}
    assert vz.loc["VisionZip 54+10", ["GQA", "MMB", "MME-total", "POPE-F1", "VQA-T"]].tolist() == [
        55.1, 60.1, 1690.0, 77.0, 55.5]
    assert vz["SEED-I"].isna().all() and vz["SEED-all"].notna().all()  # SEED-all never passes for SEED-I
    assert vz.loc["VisionZip 162+30", "avg"] == round((59.3 + 85.3) / 2, 2)
