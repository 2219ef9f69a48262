"""A reducer from an outside package (examples/custom_method): installed into a folder of its own,
found through the ``dymu_eval.methods`` entry point, run by stock lmms-eval, tabled like a built-in,
and its analytic FLOPs equal the counted ones."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tests.factories import ROOT, TASKS
from tests.lmms.lmms_runs import VENV_BIN, read_run, read_stats, run_lmms

EXAMPLE = ROOT / "examples" / "custom_method"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example package installed with pip into a folder that goes on PYTHONPATH."""
    target = tmp_path_factory.mktemp("outside") / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True, text=True)
    return target


def _env(base: dict[str, str], target) -> dict[str, str]:
    return {**base, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}


@pytest.mark.slow
def test_outside_method_runs_through_stock_lmms_eval_and_tables(installed, tiny_llava, lmms_env, tmp_path):
    env = _env(lmms_env, installed)
    out = tmp_path / "out"
    args = f"pretrained={tiny_llava},method=keep_half,device_map=cpu"
    proc = run_lmms(["--model", "dymu_llava", "--model_args", args, "--device", "cpu", "--output_path", str(out),
                     "--limit", "2", "--tasks", "dymu_offline"], env)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    read_run(out)
    rows = read_stats(out)
    assert rows and all(r["method"] == "keep_half" for r in rows)
    for r in rows:
        (stage,) = r["stages"]
        assert stage["layer"] == 1 and stage["entries"] == (r["visual_tokens_before"] + 1) // 2
        assert r["visual_tokens_after"] == stage["entries"] and r["position_rule"] == "original"
        assert r["layer_avg_rows"] < r["llm_rows"]
    tables = tmp_path / "tables"
    done = subprocess.run([str(VENV_BIN / "dymu-eval"), "tables", str(out), "--out", str(tables), "--no-plots"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| KeepHalf 1/2 after L1" in (tables / "results.md").read_text()


def test_outside_method_analytic_flops_equal_counted(installed, tiny_llava, monkeypatch):
    """In process: the entry point registers keep_half, and its cut is accounted exactly."""
    monkeypatch.syspath_prepend(str(installed))
    from dymu_eval.methods import METHODS
    from dymu_eval.methods.registry import Registry
    from dymu_eval.vlm import llava
    from dymu_eval.vlm.reduction import reduction_for

    fresh = Registry("method", "dymu_eval.methods", ())
    assert "keep_half" in fresh  # found through the entry point of the installed package
    if "keep_half" not in METHODS:
        METHODS.register("keep_half", fresh["keep_half"])
    from dymu_eval.language import DecodeConfig

    model, processor = llava.load_llava(str(tiny_llava), "cpu")
    pipe = llava.LlavaPipeline(model, processor)
    pipe.reduction = reduction_for(pipe, "keep_half")
    img = llava.Image.open(TASKS / "dymu_offline" / "images" / "photo_astronaut.jpg").convert("RGB")
    text, _ = llava.simple_prompt(pipe.tokenizer, "What is it?", 1)
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        _, stats = pipe.generate([llava.Request(text, [img])], DecodeConfig(max_new_tokens=3, eos_token_ids=[],
                                                                             tokenizer=pipe.tokenizer))
    assert stats[0]["stages"][0]["entries"] == (stats[0]["visual_tokens_before"] + 1) // 2
    assert stats[0]["total_flops"] == pytest.approx(float(counter.get_total_flops()), rel=0.01)
