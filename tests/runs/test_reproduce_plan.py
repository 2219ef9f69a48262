"""`make reproduce DRY_RUN=1` prints the paper's matrix; bad levels, baselines and missing thresholds stop it."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from dymu_eval.cli import main as cli_main

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
    got = {(_arg(c, "--model"), _arg(c, "--model_args").partition(",")[2]) for c in cmds}
    # every method with a reproduce hook adds its rows; these are the paper's and the budget peers'
    assert got >= {
        ("dymu_llava", "level=none"),
        ("tome_llava", "r=21"), ("tome_llava", "r=16"), ("tome_llava", "r=8"),
        ("dymu_llava", "level=low,thresholds=llava_instruct"), ("dymu_llava", "level=mid,thresholds=llava_instruct"),
        ("dymu_llava", "level=high,thresholds=llava_instruct"),
        ("dymu_llava", "level=low,thresholds=llava_instruct,vtu=false"), ("tome_llava", "r=21,vtu=true"),
        ("dymu_llava", "level=mid,thresholds=llava_instruct,schedule=linear"),
        ("dymu_llava", "level=mid,thresholds=llava_instruct,schedule=reverse_linear"),
        ("dymu_llava", "level=mid,thresholds=pixmo_cap"),
        ("fastv_llava", "fastv_k=2,fastv_ratio=0.5"),
        ("pool_llava", "pool_factor=2"), ("pool_llava", "pool_factor=2,vtu=true"),
        ("pdrop_llava", "pdrop_layers=8/16/24,pdrop_ratios=0.5/0.25/0.125"),
        *((f"{m}_llava", f"budget={b}") for m in ("random", "fastv", "pdrop", "dart", "visionzip")
          for b in (192, 128, 64)),
    }
    for c in cmds:
        assert _arg(c, "--num_processes") == "4" and _arg(c, "--limit") == "8"
        assert _arg(c, "--tasks") == "mme,gqa,pope,scienceqa_img,seedbench,textvqa_val"
        assert _arg(c, "--model_args").split(",")[0] == "pretrained=llava-hf/llava-1.5-7b-hf"
    outs = [_arg(c, "--output_path") for c in cmds]
    assert len(set(outs)) == len(outs) >= 31
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
    from dymu_eval.methods import METHODS
    from dymu_eval.methods.budget import apply_budget
    from dymu_eval.methods.settings import resolve_method_args
    from dymu_eval.runs.reproduce import ONEVISION_TASKS

    assert cli_main(["reproduce", "--family", "onevision", "--dry-run"]) == 0
    cmds = _lmms_lines(capsys.readouterr().out)
    got = {(_arg(c, "--model"), _arg(c, "--model_args").partition(",")[2]) for c in cmds}
    assert got >= {
        ("dymu_llava_onevision", "level=none,max_frames_num=32"),
        ("tome_llava_onevision", "r=24,max_frames_num=32"), ("tome_llava_onevision", "r=21,max_frames_num=32"),
        ("tome_llava_onevision", "r=15,max_frames_num=32"),
        ("dymu_llava_onevision", "level=low,thresholds=llava_instruct,max_frames_num=32"),
        ("dymu_llava_onevision", "level=mid,thresholds=llava_instruct,max_frames_num=32"),
        ("dymu_llava_onevision", "level=high,thresholds=llava_instruct,max_frames_num=32"),
        ("fastv_llava_onevision", "fastv_k=2,fastv_ratio=0.5,max_frames_num=32"),
        ("pool_llava_onevision", "pool_factor=3,max_frames_num=32"),
        ("pool_llava_onevision", "pool_factor=3,vtu=true,max_frames_num=32"),
        # the budget peers at LLaVA-1.5's fractions of a crop's 27x27 patches (1/3, 2/9, 1/9)
        *((f"{m}_llava_onevision", f"budget={b},max_frames_num=32")
          for m in ("random", "fastv", "pdrop", "dart", "visionzip") for b in (243, 162, 81)),
    }
    for c in cmds:
        assert _arg(c, "--model_args").split(",")[0] == "pretrained=llava-hf/llava-onevision-qwen2-7b-ov-hf"
        assert _arg(c, "--tasks") == ONEVISION_TASKS
        model_args = dict(kv.split("=", 1) for kv in _arg(c, "--model_args").split(",")[1:])
        model_args.pop("max_frames_num")
        method = _arg(c, "--model").removesuffix("_llava_onevision")
        if method in ("random", "pool", "visionzip"):  # every setting applies to SigLIP SO400M's 27x27 grid
            values = apply_budget(METHODS[method], resolve_method_args(method, model_args), 27 * 27, 28)
            selector = (RandomKeep(values["keep"]) if method == "random" else GridPool(values["pool_factor"])
                        if method == "pool" else VisionZip(values["dominant"], values["contextual"]))
            selector.check(27 * 27, (27, 27), False)  # no CLS
    assert {"mmbench_en_dev", "mme", "seedbench", "mathvista_testmini", "videomme", "mvbench",
            "longvideobench_val_v", "mlvu_dev"} <= set(ONEVISION_TASKS.split(","))
    assert cli_main(["reproduce", "--family", "qwen", "--dry-run"]) == 2
    assert "family must be one of llava, onevision, next" in capsys.readouterr().err


def test_reproduce_levels_and_fail_fast(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = _make_reproduce_argv("BASELINES=pool")
    assert argv[argv.index("--baselines") + 1] == "pool"
    assert cli_main(["reproduce", "--levels", "low", "--baselines", "", "--dry-run"]) == 0
    cmds = _lmms_lines(capsys.readouterr().out)
    models = {_arg(c, "--model") for c in cmds}
    assert {"dymu_llava", "tome_llava", "fastv_llava", "pdrop_llava", "dart_llava"} <= models  # the paper's + LLM peers
    assert not {"random_llava", "pool_llava", "visionzip_llava"} & models
    # baseline, ToMe r21, DyMU-low, w/o VTU, ToMe+VTU
    assert sum(_arg(c, "--model") in ("dymu_llava", "tome_llava") for c in cmds) == 5
    assert cli_main(["reproduce", "--levels", "low", "--baselines", "pool", "--dry-run"]) == 0
    assert len(_lmms_lines(capsys.readouterr().out)) == len(cmds) + 2  # + pooling with and without VTU
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
