"""`make reproduce FAMILY=next DRY_RUN=1` prints the LLaVA-NeXT matrix: NeXT-vicuna-7B on the peer tables'
benchmarks, the baseline, ToMe and DyMU per level, FastV, and every budget method at 640/320/160 tokens
(5 crops x 128/64/32 per crop), with thresholds calibrated on NeXT's own tower."""
from __future__ import annotations

import pytest

from dymu_eval.cli import main as cli_main
from dymu_eval.methods import METHODS
from tests.runs.test_reproduce_plan import _arg, _lmms_lines, _make_reproduce_argv

NEXT = "llava-hf/llava-v1.6-vicuna-7b-hf"
TASKS = "mme,gqa,pope,textvqa_val,scienceqa_img,mmbench_en_dev"


@pytest.fixture(scope="module")
def printed() -> str:
    import contextlib
    import io

    argv = _make_reproduce_argv("DRY_RUN=1", "FAMILY=next", "OUT=/tmp/dymu-repro-next")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(argv) == 0
    return out.getvalue()


def _runs(printed: str) -> list[tuple[str, dict[str, str]]]:
    runs = []
    for cmd in _lmms_lines(printed):
        args = dict(kv.split("=", 1) for kv in _arg(cmd, "--model_args").split(","))
        assert args.pop("pretrained") == NEXT, cmd
        assert _arg(cmd, "--tasks") == TASKS, cmd
        runs.append((_arg(cmd, "--model"), args))
    return runs


def test_every_run_is_next_vicuna_7b_through_a_next_model(printed):
    runs = _runs(printed)
    assert runs and all(model.endswith("_llava_next") for model, _ in runs)
    got = {(model, tuple(sorted(args.items()))) for model, args in runs}
    assert len(got) == len(runs)  # no run twice
    want = {("dymu_llava_next", (("level", "none"),)),
            ("fastv_llava_next", (("fastv_k", "2"), ("fastv_ratio", "0.5")))}
    want |= {("tome_llava_next", (("r", r),)) for r in ("21", "16", "8")}  # CLIP ViT-L/14-336, as LLaVA-1.5's
    want |= {("dymu_llava_next", (("level", lv), ("thresholds", "llava_instruct"))) for lv in ("low", "mid", "high")}
    assert want <= got
    # the LLaVA-1.5 paper's ablations (Tables 5-7) are not NeXT's matrix
    assert not any("schedule" in args or args.get("thresholds") == "pixmo_cap" or args.get("vtu") == "false"
                   for _, args in runs)
    outs = [_arg(c, "--output_path") for c in _lmms_lines(printed)]
    assert len(set(outs)) == len(outs) and all("/next_" in o for o in outs)


def test_budget_methods_run_at_640_320_160_tokens(printed):
    """Each method whose matrix rows use its budget hook runs budget=128/64/32 per crop; over LLaVA-1.6's
    base crop and its 2x2 grid (5 crops) that is the papers' 640/320/160. VisionZip splits them 27:5."""
    from dymu_eval.methods.budget import Budget, BudgetTarget

    runs = _runs(printed)
    budgets: dict[str, set[str]] = {}
    for model, args in runs:
        if "budget" in args:
            budgets.setdefault(model.removesuffix("_llava_next"), set()).add(args["budget"])
    with_hook = {m for m in METHODS if METHODS[m].budget is not None and METHODS[m].reproduce is not None}
    assert {"random", "visionzip", "fastv"} <= set(budgets) <= with_hook  # pool runs its grid factor instead
    assert all(b == {"128", "64", "32"} for b in budgets.values()), budgets
    assert sorted(5 * int(b) for b in budgets["visionzip"]) == [160, 320, 640]
    split = {b: METHODS["visionzip"].budget(BudgetTarget(Budget(int(b)), 576, 32)) for b in ("128", "64", "32")}
    assert split == {"128": {"dominant": "108", "contextual": "20"}, "64": {"dominant": "54", "contextual": "10"},
                     "32": {"dominant": "27", "contextual": "5"}}


def test_thresholds_are_calibrated_on_nexts_own_tower(printed):
    """LLaVA-1.6 fine-tuned its CLIP, so DyMU's LLaVA-1.5 thresholds (the shipped low entry) do not serve:
    each level gets a calibration command for the NeXT checkpoint."""
    calib = [line for line in printed.splitlines() if " calibrate " in line]
    assert len(calib) == 3 and all(f"--encoder {NEXT}" in line for line in calib)
    assert {line.split("--level ")[1].split()[0] for line in calib} == {"low", "mid", "high"}


def test_matrix_context_for_next():
    from dymu_eval.methods.registry import MethodSpec
    from dymu_eval.runs.reproduce import matrix

    seen = []
    METHODS.register("probe_ctx", MethodSpec(label="probe", summary="", build=lambda c, v: None,
                                             reproduce=lambda ctx: seen.append(ctx) or []))
    try:
        matrix(["low"], "next", baselines=())
    finally:
        METHODS.unregister("probe_ctx")
    (ctx,) = seen
    assert (ctx.family, ctx.patches, ctx.budgets, ctx.paper) == ("next", 576, (128, 64, 32), False)
    assert ctx.tome_r["low"] == 21
