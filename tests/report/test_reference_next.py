"""LLaVA-NeXT-7B's reported rows (DART Table 3, VisionZip Table 2) reach the tables of a NeXT run: the
checkpoint name maps to their backbone, and they come out in the measured columns' names."""
from dymu_eval.report.reference import load_reference, normalise_backbone, reported_rows

NEXT = "llava-v1.6-vicuna-7b"


def test_next_checkpoint_finds_its_reported_rows():
    assert normalise_backbone("llava-v1.6-vicuna-7b-hf") == NEXT  # family_of("llava-hf/llava-v1.6-vicuna-7b-hf")
    rows = reported_rows(load_reference(), NEXT, ["GQA", "MME-total", "POPE-F1"])
    assert set(rows["table"]) == {"DART T3", "VisionZip T2"}
    dart = rows[rows["table"] == "DART T3"].set_index("method")
    assert len(dart) == 10 and (dart.drop("baseline")["tokens_mean"] == 320).all()
    assert dart.loc["baseline", ["GQA", "MME-total", "POPE-F1", "OCRBench"]].tolist() == [64.2, 1851, 86.5, 517]
    cells = ["GQA", "MMB", "MME-total", "POPE-F1", "OCRBench"]
    assert dart.loc["DART", cells].tolist() == [61.7, 65.3, 1710, 84.1, 406]
    # the average over the measured table's benchmarks (MME total / 28, as the measured rows)
    assert abs(dart.loc["DART", "avg"] - round((61.7 + 1710 / 28 + 84.1) / 3, 2)) < 0.01
    vz = rows[rows["table"] == "VisionZip T2"]
    assert sorted(vz["tokens_mean"]) == [160, 320, 640, 2880]
    assert vz["avg"].isna().all()  # it prints no POPE, so no average over GQA, MME and POPE
    assert set(vz["level"]) == {"", "budget 128", "budget 64", "budget 32"}  # as `budget=` runs are labelled
    # the LLaVA-1.5 rows stay with their own backbone
    assert not set(reported_rows(load_reference(), "llava-1.5-7b", ["GQA"])["table"]) & {"DART T3", "VisionZip T2"}
