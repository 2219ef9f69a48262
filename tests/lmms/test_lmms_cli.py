"""The plugin through the stock lmms-eval CLI (subprocesses, as users run it).

lmms-eval exits 0 even when a run fails, so every check reads the output files. Runs whose answers are
compared run in float64 (dtype=float64 on both sides): two computations that agree in mathematics
differ there by ~1e-13 of a logit, so no near-tie can flip a greedy pick between them.
"""
import socket

import pytest

from tests.lmms.lmms_runs import VENV_BIN, read_run, read_stats, run_lmms

pytestmark = pytest.mark.slow

LIMIT = ["--limit", "4", "--tasks", "dymu_offline", "--log_samples"]
DYMU_ARGS = "level=none,device_map=cpu,dtype=float64"  # the run the others are compared with


def _ok(proc, out):
    assert (out).exists(), f"lmms-eval wrote nothing to {out}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return read_run(out)


@pytest.fixture(scope="module")
def hf_run(tiny_llava, lmms_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    proc = run_lmms(["--model", "llava_hf", "--model_args", f"pretrained={tiny_llava},device_map=cpu,dtype=float64",
                     "--device", "cpu", "--output_path", str(out)] + LIMIT, lmms_env)
    return _ok(proc, out)


@pytest.fixture(scope="module")
def dymu_run(tiny_llava, lmms_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("dymu")
    proc = run_lmms(["--model", "dymu_llava", "--model_args", f"pretrained={tiny_llava},{DYMU_ARGS}",
                     "--device", "cpu", "--output_path", str(out)] + LIMIT, lmms_env)
    return out, _ok(proc, out)


def _responses(samples):
    return {task: [r["filtered_resps"] for r in rows] for task, rows in samples.items()}


def _scores(results):
    return {task: {k: v for k, v in m.items() if k.endswith(",none") and "stderr" not in k}
            for task, m in results["results"].items()}


def test_level_none_gives_exactly_the_llava_hf_responses(hf_run, dymu_run):
    out, (results, samples) = dymu_run
    hf_results, hf_samples = hf_run
    assert set(samples) == {"dymu_pope_offline", "dymu_mme_offline", "dymu_gqa_offline"}
    assert _responses(samples) == _responses(hf_samples)
    assert _scores(results) == _scores(hf_results)
    assert "dymu_eval.lmms.model.DymuLlavaChat" in results["config"]["model_backend"]
    # one stats row per request, beside lmms-eval's outputs, with TokenCounts in the samples
    stats = read_stats(out)
    assert sorted((s["task"], s["doc_id"]) for s in stats) == sorted(
        (t, r["doc_id"]) for t, rows in samples.items() for r in rows)
    for s in stats:
        assert s["method"] == "none" and s["visual_tokens_before"] == s["visual_tokens_after"] == 64
        assert s["unique_len"] == s["virtual_len"] and s["new_tokens"] >= 1
    first = samples["dymu_pope_offline"][0]
    match = [s for s in stats if s["task"] == "dymu_pope_offline" and s["doc_id"] == first["doc_id"]][0]
    assert first["token_counts"][0]["input_tokens"] == match["unique_len"]


def test_two_processes_give_the_same_scores_as_one(tiny_llava, lmms_env, dymu_run, tmp_path):
    _, (one, one_samples) = dymu_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = tmp_path / "two"
    launcher = [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port, "-m", "lmms_eval"]
    proc = run_lmms(["--model", "dymu_llava", "--model_args", f"pretrained={tiny_llava},{DYMU_ARGS}",
                     "--batch_size", "2", "--output_path", str(out)] + LIMIT, lmms_env, launcher=launcher)
    two, two_samples = _ok(proc, out)
    assert _scores(two) == _scores(one)
    assert _responses(two_samples) == _responses(one_samples)
    stats = read_stats(out)
    assert sorted({s["rank"] for s in stats}) == [0, 1]
    assert len({s["run_stamp"] for s in stats}) == 1, "both ranks name the same run"


def test_bad_model_args_message_reaches_the_cli_user(tiny_llava, lmms_env, tmp_path):
    out = tmp_path / "out"
    proc = run_lmms(["--model", "dymu_llava", "--model_args", f"pretrained={tiny_llava},levle=low",
                     "--tasks", "dymu_pope_offline", "--limit", "2", "--output_path", str(out)], lmms_env)
    log = proc.stdout + proc.stderr
    assert "unknown model_args levle" in log and "fastv_ratio:" in log
    assert not list(out.rglob("*_results.json"))


def test_resume_reuses_a_run_only_with_its_own_settings_and_limit(dymu_run, tiny_llava):
    """What the demo and ``reproduce`` skip: lmms-eval's own results file must match the tasks,
    the model_args and the --limit, so a full run never reuses a LIMIT=2 look."""
    from dymu_eval.runs import results_done

    out, _ = dymu_run
    args = f"pretrained={tiny_llava},{DYMU_ARGS}"
    assert results_done(out, "dymu_offline", args, 4)
    assert results_done(out, "dymu_pope_offline,dymu_mme_offline", args, "4")
    assert not results_done(out, "dymu_offline", args, None)  # the full run is not done
    assert not results_done(out, "dymu_offline", args, 2)
    assert not results_done(out, "dymu_offline", args.replace("level=none", "level=low"), 4)
    assert not results_done(out, "dymu_offline,dymu_video_pope_offline", args, 4)


def test_stock_results_json_carries_the_efficiency_averages(dymu_run):
    """lmms-eval's own *_results.json holds averages of the per-request stats in its throughput block."""
    import statistics

    out, (results, _) = dymu_run
    block = results["throughput"]
    stats = read_stats(out)
    timed = [s for s in stats if not s["warmup"]]
    assert timed and len(timed) < len(stats)  # the first batch is the warm-up
    expect = {
        "avg_llm_rows": statistics.fmean(s["llm_rows"] for s in stats),
        "avg_virtual_positions": statistics.fmean(s["virtual_positions"] for s in stats),
        "avg_prefill_tflops": statistics.fmean(s["prefill_flops"] for s in stats) / 1e12,
        "avg_total_tflops": statistics.fmean(s["total_flops"] for s in stats) / 1e12,
        "avg_kv_cache_mb": statistics.fmean(s["kv_cache_bytes"] for s in stats) / 1e6,
        "avg_prefill_ms": statistics.fmean(s["prefill_ms"] for s in timed),
        "avg_encoder_ms": statistics.fmean(s["encoder_ms"] for s in timed),
        "avg_ttft_ms": statistics.fmean(s["ttft_ms"] for s in timed),
    }
    for key, value in expect.items():
        assert block[key] == pytest.approx(value, rel=1e-9), key
    assert block["avg_llm_rows"] == 64 and block["avg_prefill_tflops"] > 0
    assert "avg_peak_mem_mb" not in block  # CPU: no GPU memory figure rather than a false 0
