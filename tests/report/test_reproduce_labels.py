"""`make reproduce DRY_RUN=1` prints the paper's matrix; run labels from model_args; reference rows."""
from __future__ import annotations

import math
import shlex
import subprocess
from pathlib import Path

import pytest

from dymu_eval.report.labels import describe, finalize
from dymu_eval.report.reference import load_reference, reported_rows
from dymu_eval.report.reproduce import main as reproduce_main

ROOT = Path(__file__).resolve().parents[2]


def _lmms_lines(text: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if line.startswith("accelerate launch")]


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_make_reproduce_dry_run_prints_the_full_matrix() -> None:
    proc = subprocess.run(["make", "-s", "-o", ".venv/.installed", "reproduce", "DRY_RUN=1", "NUM_GPUS=4", "LIMIT=8",
                           "OUT=/tmp/dymu-repro-test"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cmds = _lmms_lines(proc.stdout)
    got = {(_arg(c, "--model"), _arg(c, "--model_args").split(",", 1)[1]) for c in cmds}
    assert got == {
        ("dymu_llava", "level=none"),
        ("tome_llava", "r=21"), ("tome_llava", "r=16"), ("tome_llava", "r=8"),
        ("dymu_llava", "level=low,thresholds=llava_instruct"), ("dymu_llava", "level=mid,thresholds=llava_instruct"),
        ("dymu_llava", "level=high,thresholds=llava_instruct"),
        ("dymu_llava", "level=low,thresholds=llava_instruct,vtu=false"), ("tome_llava", "r=21,vtu=true"),
        ("dymu_llava", "level=mid,thresholds=llava_instruct,schedule=linear"),
        ("dymu_llava", "level=mid,thresholds=llava_instruct,schedule=reverse_linear"),
        ("dymu_llava", "level=mid,thresholds=pixmo_cap"),
        ("fastv_llava", "fastv_k=2,fastv_ratio=0.5"),
    }
    for c in cmds:
        assert _arg(c, "--num_processes") == "4" and _arg(c, "--limit") == "8"
        assert _arg(c, "--tasks") == "mme,gqa,pope,scienceqa_img,seedbench,textvqa_val"
        assert _arg(c, "--model_args").startswith("pretrained=llava-hf/llava-1.5-7b-hf,")
    outs = [_arg(c, "--output_path") for c in cmds]
    assert len(set(outs)) == len(outs) == 13
    tables = [shlex.split(line) for line in proc.stdout.splitlines() if " tables " in line]
    assert len(tables) == 1 and set(outs) <= set(tables[0])
    # every DyMU threshold entry the cache lacks gets a calibration command (DyMU-low is shipped)
    from dymu_eval.report.reproduce import _missing_thresholds, matrix

    missing = _missing_thresholds("llava-hf/llava-1.5-7b-hf", matrix(["low", "mid", "high"]))
    assert ("llava_instruct", "low", "constant") not in missing and ("pixmo_cap", "mid", "constant") in missing
    calib = [line for line in proc.stdout.splitlines() if " calibrate " in line]
    assert len(calib) == len(missing) and any("pixmo_cap" in line for line in calib)


def test_reproduce_levels_and_fail_fast(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert reproduce_main(["--levels", "low", "--dry-run"]) == 0
    cmds = _lmms_lines(capsys.readouterr().out)
    assert len(cmds) == 6  # baseline, ToMe r21, DyMU-low, w/o VTU, ToMe+VTU, FastV
    assert reproduce_main(["--levels", "medium", "--dry-run"]) == 2
    assert "LEVELS" in capsys.readouterr().err
    # missing thresholds stop the real run before anything starts, saying how to make them
    assert reproduce_main(["--levels", "mid"]) == 2
    err = capsys.readouterr().err
    assert "dymu-eval calibrate" in err and "CALIB_IMAGES" in err and "PIXMO_IMAGES" in err
    # offline and no local weights: a clear message, no waiting
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert reproduce_main(["--levels", "low", "--model", "some-org/not-downloaded"]) == 2
    assert "not a local folder" in capsys.readouterr().err


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
    ("dymu_llava", "pretrained=x,level=low,merge_order=position", "DyMU-low position order"),
    ("tome_llava", "pretrained=x,r=21,merge_order=position", "ToMe r=21 position order"),
    ("dymu_llava", "pretrained=x,level=low,merge_order=reference", "DyMU-low"),
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
