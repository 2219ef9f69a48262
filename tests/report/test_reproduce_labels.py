"""`make reproduce DRY_RUN=1` prints the paper's matrix; run labels from model_args; reference rows."""
from __future__ import annotations

import math
import shlex
import subprocess
from pathlib import Path

import pytest

from dymu_eval.cli import main as cli_main
from dymu_eval.report.labels import describe, finalize
from dymu_eval.report.reference import load_reference, reported_rows

ROOT = Path(__file__).resolve().parents[2]


def _lmms_lines(text: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if line.startswith("accelerate launch")]


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def _make_reproduce_argv(*variables: str) -> list[str]:
    """The `dymu-eval reproduce` arguments `make reproduce` passes (make -n: nothing runs, no venv is built)."""
    proc = subprocess.run(["make", "-n", "-s", "-o", ".venv/.installed", "reproduce", *variables], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.replace("\\\n", " ")  # the recipe's continuation lines
    line = next(ln for ln in text.splitlines() if "dymu_eval.cli reproduce" in ln)
    words = shlex.split(line)
    return words[words.index("reproduce"):]


def test_make_reproduce_dry_run_prints_the_full_matrix(capsys: pytest.CaptureFixture) -> None:
    argv = _make_reproduce_argv("DRY_RUN=1", "NUM_GPUS=4", "LIMIT=8", "OUT=/tmp/dymu-repro-test")
    assert cli_main(argv) == 0
    stdout = capsys.readouterr().out
    cmds = _lmms_lines(stdout)
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
        ("random_llava", "keep=192,seed=0"), ("random_llava", "keep=128,seed=0"), ("random_llava", "keep=64,seed=0"),
        ("pool_llava", "pool_factor=2"), ("pool_llava", "pool_factor=2,vtu=true"),
        ("visionzip_llava", "dominant=162,contextual=30"), ("visionzip_llava", "dominant=108,contextual=20"),
        ("visionzip_llava", "dominant=54,contextual=10"),
    }
    for c in cmds:
        assert _arg(c, "--num_processes") == "4" and _arg(c, "--limit") == "8"
        assert _arg(c, "--tasks") == "mme,gqa,pope,scienceqa_img,seedbench,textvqa_val"
        assert _arg(c, "--model_args").startswith("pretrained=llava-hf/llava-1.5-7b-hf,")
    outs = [_arg(c, "--output_path") for c in cmds]
    assert len(set(outs)) == len(outs) == 21
    tables = [shlex.split(line) for line in stdout.splitlines() if " tables " in line]
    assert len(tables) == 1 and set(outs) <= set(tables[0])
    # every DyMU threshold entry the cache lacks gets a calibration command (DyMU-low is shipped)
    from dymu_eval.runs.reproduce import matrix, missing_thresholds

    missing = missing_thresholds("llava-hf/llava-1.5-7b-hf", matrix(["low", "mid", "high"]))
    assert ("llava_instruct", "low", "constant") not in missing and ("pixmo_cap", "mid", "constant") in missing
    calib = [line for line in stdout.splitlines() if " calibrate " in line]
    assert len(calib) == len(missing) and any("pixmo_cap" in line for line in calib)


def test_onevision_matrix_dry_run(capsys: pytest.CaptureFixture) -> None:
    from dymu_eval.merge.select import GridPool, RandomKeep, VisionZip
    from dymu_eval.runs.reproduce import ONEVISION_TASKS

    assert cli_main(["reproduce", "--family", "onevision", "--dry-run"]) == 0
    cmds = _lmms_lines(capsys.readouterr().out)
    got = {(_arg(c, "--model"), _arg(c, "--model_args").split(",", 1)[1]) for c in cmds}
    assert got == {
        ("dymu_llava_onevision", "level=none,max_frames_num=32"),
        ("tome_llava_onevision", "r=24,max_frames_num=32"), ("tome_llava_onevision", "r=21,max_frames_num=32"),
        ("tome_llava_onevision", "r=15,max_frames_num=32"),
        ("dymu_llava_onevision", "level=low,thresholds=llava_instruct,max_frames_num=32"),
        ("dymu_llava_onevision", "level=mid,thresholds=llava_instruct,max_frames_num=32"),
        ("dymu_llava_onevision", "level=high,thresholds=llava_instruct,max_frames_num=32"),
        ("fastv_llava_onevision", "fastv_k=2,fastv_ratio=0.5,max_frames_num=32"),
        # the baselines at LLaVA-1.5's fractions of a crop's 27x27 patches (1/3, 2/9, 1/9)
        ("random_llava_onevision", "keep=243,seed=0,max_frames_num=32"),
        ("random_llava_onevision", "keep=162,seed=0,max_frames_num=32"),
        ("random_llava_onevision", "keep=81,seed=0,max_frames_num=32"),
        ("pool_llava_onevision", "pool_factor=3,max_frames_num=32"),
        ("pool_llava_onevision", "pool_factor=3,vtu=true,max_frames_num=32"),
        ("visionzip_llava_onevision", "dominant=205,contextual=38,max_frames_num=32"),
        ("visionzip_llava_onevision", "dominant=137,contextual=25,max_frames_num=32"),
        ("visionzip_llava_onevision", "dominant=68,contextual=13,max_frames_num=32"),
    }
    for c in cmds:
        assert _arg(c, "--model_args").startswith("pretrained=llava-hf/llava-onevision-qwen2-7b-ov-hf,")
        assert _arg(c, "--tasks") == ONEVISION_TASKS
        args = {k: int(v) for k, v in (kv.split("=") for kv in _arg(c, "--model_args").split(",")) if v.isdigit()}
        method = _arg(c, "--model").split("_")[0]
        selector = (RandomKeep(args["keep"]) if method == "random" else GridPool(args["pool_factor"])
                    if method == "pool" else VisionZip(args["dominant"], args["contextual"])
                    if method == "visionzip" else None)
        if selector is not None:  # every setting applies to SigLIP SO400M's 27x27 grid (no CLS)
            selector.check(27 * 27, (27, 27), False)
    assert {"mmbench_en_dev", "mme", "seedbench", "mathvista_testmini", "videomme", "mvbench",
            "longvideobench_val_v", "mlvu_dev"} <= set(ONEVISION_TASKS.split(","))
    assert cli_main(["reproduce", "--family", "qwen", "--dry-run"]) == 2
    assert "family must be one of llava, onevision" in capsys.readouterr().err


def test_reproduce_levels_and_fail_fast(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = _make_reproduce_argv("BASELINES=pool")
    assert argv[argv.index("--baselines") + 1] == "pool"
    assert cli_main(["reproduce", "--levels", "low", "--baselines", "", "--dry-run"]) == 0
    cmds = _lmms_lines(capsys.readouterr().out)
    assert len(cmds) == 6  # baseline, ToMe r21, DyMU-low, w/o VTU, ToMe+VTU, FastV
    assert cli_main(["reproduce", "--levels", "low", "--baselines", "pool", "--dry-run"]) == 0
    assert len(_lmms_lines(capsys.readouterr().out)) == 8  # + pooling with and without VTU
    assert cli_main(["reproduce", "--baselines", "random,zip", "--dry-run"]) == 2
    assert "baselines must be a comma list" in capsys.readouterr().err
    assert cli_main(["reproduce", "--levels", "medium", "--dry-run"]) == 2
    assert "levels" in capsys.readouterr().err
    # missing thresholds stop the real run before anything starts, saying how to make them
    assert cli_main(["reproduce", "--levels", "mid"]) == 2
    err = capsys.readouterr().err
    assert "dymu-eval calibrate" in err and "CALIB_IMAGES" in err and "PIXMO_IMAGES" in err
    # offline and no local weights: a clear message, no waiting
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli_main(["reproduce", "--levels", "low", "--pretrained", "some-org/not-downloaded"]) == 2
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
