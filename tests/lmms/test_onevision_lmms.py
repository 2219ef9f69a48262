"""The LLaVA-OneVision models through lmms-eval's Python API: at level none they answer exactly as
lmms-eval's own ``llava_hf`` (images: simple and chat; video with local .mp4 files: simple, the
path that samples frames), reductions run on images and video and record their counts, and bad
input names the sample. Answers are compared in float64 (dtype=float64 on both sides), where
rounding cannot flip a greedy pick between two computations that agree in mathematics."""
import json
from pathlib import Path

import pytest

from dymu_eval.errors import ConfigError, InputImageError

TASKS = Path(__file__).resolve().parents[2] / "tasks"
IMAGE_TASKS = ["dymu_gqa_offline", "dymu_test_ov_two_images"]
VIDEO_TASK = "dymu_test_ov_video"
_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.{visual}
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 5
  temperature: 0
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.0
"""
_UTILS = '''import os
from PIL import Image
HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = {images!r}


def doc_to_video(doc):
    return [os.path.join(HERE, doc["video"])]


def two_images(doc):
    return [Image.open(os.path.join(IMAGES, f)).convert("RGB") for f in doc["images"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]
'''


@pytest.fixture(scope="module")
def ov_tasks(tmp_path_factory, tiny_videos):
    """A local video task (a 12-frame clip, a 3-frame clip, a missing file in a separate task) and a two-image task."""
    import shutil

    root = tmp_path_factory.mktemp("ov_tasks")
    for name in ("long", "short"):
        shutil.copy(tiny_videos[name], root / f"{name}.mp4")
    images = sorted(p.name for p in (TASKS / "dymu_offline" / "images").glob("*.jpg"))
    (root / "utils.py").write_text(_UTILS.format(images=str(TASKS / "dymu_offline" / "images")))
    video_rows = [{"video": "long.mp4", "question": "what happens in the video ?", "answer": "no"},
                  {"video": "short.mp4", "question": "describe the video .", "answer": "no"}]
    (root / "video.jsonl").write_text("\n".join(json.dumps(r) for r in video_rows) + "\n")
    (root / "missing.jsonl").write_text(json.dumps({"video": "gone.mp4", "question": "what ?", "answer": "no"}) + "\n")
    two = [{"images": [images[i], images[i + 5]], "question": "what color is the square ?", "answer": "red"}
           for i in range(2)]
    (root / "two.jsonl").write_text("\n".join(json.dumps(r) for r in two) + "\n")
    for name, data, visual in ((VIDEO_TASK, "video.jsonl", "doc_to_video"),
                               ("dymu_test_ov_missing_video", "missing.jsonl", "doc_to_video"),
                               ("dymu_test_ov_two_images", "two.jsonl", "two_images")):
        (root / f"{name}.yaml").write_text(_TASK.format(name=name, data=data, visual=visual))
    return root


@pytest.fixture(scope="module")
def evaluate(ov_tasks):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    # only the project's tasks: indexing lmms-eval's own hundreds of task folders takes seconds
    manager = TaskManager("ERROR", include_path=[str(TASKS), str(ov_tasks)], include_defaults=False)

    def run(model, model_args, tasks, limit=3, force_simple=False):
        return simple_evaluate(model=model, model_args=model_args, tasks=list(tasks), limit=limit, device="cpu",
                               task_manager=manager, log_samples=True, force_simple=force_simple, verbosity="ERROR")
    return run


def _responses(results):
    return {t: [s["filtered_resps"] for s in sorted(rows, key=lambda r: r["doc_id"])]
            for t, rows in results["samples"].items()}


def _stats(folder):
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_simple_variant_equals_llava_hf_simple_on_images_and_video(evaluate, tiny_onevision, tmp_path):
    tasks = IMAGE_TASKS + [VIDEO_TASK]
    ours = evaluate("dymu_llava_onevision", f"pretrained={tiny_onevision},level=none,device_map=cpu,dtype=float64,"
                    f"max_frames_num=6,stats_dir={tmp_path}", tasks, force_simple=True)
    ref = evaluate("llava_hf", f"pretrained={tiny_onevision},device_map=cpu,dtype=float64,max_frames_num=6", tasks,
                   force_simple=True)
    assert ours["config"]["model_backend"] == "dymu_eval.lmms.model.DymuLlavaOnevision (simple)"
    got, want = _responses(ours), _responses(ref)
    assert got == want
    assert len({str(r) for rows in got.values() for r in rows}) > 1, "the tiny model should answer differently"
    video = [s for s in _stats(tmp_path) if s["task"] == VIDEO_TASK]
    assert sorted((s["frames"], s["distinct_frames"]) for s in video) == [(6, 3), (6, 6)]
    for s in _stats(tmp_path):
        assert s["visual_rows"] == s["visual_positions"] == s["visual_tokens_before"]
        assert s["max_frames_num"] == 6 and s["layout"] == "stock"


def test_chat_variant_equals_llava_hf_chat_on_images(evaluate, tiny_onevision, tmp_path):
    ours = evaluate("dymu_llava_onevision", f"pretrained={tiny_onevision},level=none,device_map=cpu,dtype=float64,"
                    f"stats_dir={tmp_path}", IMAGE_TASKS)
    ref = evaluate("llava_hf", f"pretrained={tiny_onevision},device_map=cpu,dtype=float64", IMAGE_TASKS)
    assert ours["config"]["model_backend"] == "dymu_eval.lmms.model.DymuLlavaOnevisionChat (chat)"
    assert _responses(ours) == _responses(ref)


@pytest.mark.parametrize("model,extra", [("tome_llava_onevision", "r=4"),
                                         ("fastv_llava_onevision", "fastv_k=1,fastv_ratio=0.5"),
                                         ("random_llava_onevision", "keep=5,seed=1"),
                                         ("pool_llava_onevision", "pool_factor=2"),
                                         ("visionzip_llava_onevision", "dominant=4,contextual=2")])
def test_reductions_run_on_images_and_video_and_record_counts(evaluate, tiny_onevision, tmp_path, model, extra):
    out = evaluate(model, f"pretrained={tiny_onevision},device_map=cpu,batch_size=2,max_frames_num=4,"
                   f"stats_dir={tmp_path},{extra}", IMAGE_TASKS + [VIDEO_TASK], limit=2, force_simple=True)
    assert set(out["results"]) >= set(IMAGE_TASKS + [VIDEO_TASK])
    rows = _stats(tmp_path)
    assert len(rows) == 6
    for s in rows:
        assert s["visual_rows"] <= s["visual_positions"] == s["visual_tokens_before"]
        assert len(s["encoder_tokens"]) == s["crops"] + s["frames"] > 0
        if model.startswith("tome"):
            assert max(s["encoder_tokens"]) == 36 - 4 * 3
        elif model.startswith(("random", "pool", "visionzip")):  # per crop and frame: k, (6/2)^2, d + c
            want = {"random": 5, "pool": 9, "visionzip": 6}[model.split("_")[0]]
            assert s["encoder_tokens"] == [want] * (s["crops"] + s["frames"]) and s["method"] == model.split("_")[0]
            # 2x2 pooling of a video frame gives the rows the video's own 2x2 pooling has positions
            assert s["visual_rows"] < s["visual_positions"] or (model.startswith("pool") and not s["images"])
        else:
            assert s["visual_tokens_after"] < s["visual_positions"]
    assert any(s["frames"] == 4 and s["images"] == 0 for s in rows)


def test_multi_image_single_gives_one_crop_and_newline_per_image(evaluate, tiny_onevision, tmp_path):
    evaluate("dymu_llava_onevision", f"pretrained={tiny_onevision},level=none,device_map=cpu,multi_image=single,"
             f"stats_dir={tmp_path}", ["dymu_test_ov_two_images"], limit=2, force_simple=True)
    for s in _stats(tmp_path):
        assert s["multi_image"] == "single" and s["crops"] == 2 and s["visual_positions"] == 2 * (36 + 1)


def test_bad_input_names_the_sample(evaluate, tiny_onevision, tiny_llava, ov_tasks, tmp_path):
    from lmms_eval.models import get_model

    with pytest.raises(InputImageError, match=r"dymu_test_ov_missing_video doc 0: video file .*gone.mp4"):
        evaluate("dymu_llava_onevision", f"pretrained={tiny_onevision},level=none,device_map=cpu,"
                 f"stats_dir={tmp_path}", ["dymu_test_ov_missing_video"], force_simple=True)
    construct = get_model("dymu_llava_onevision").create_from_arg_string
    with pytest.raises(ConfigError, match="max_frames_num=0"):
        construct(f"pretrained={tiny_onevision},level=none,max_frames_num=0", {"batch_size": "1", "device": "cpu"})
    with pytest.raises(ConfigError, match="is a llava model; dymu_llava_onevision needs"):
        construct(f"pretrained={tiny_llava},level=none,stats_dir={tmp_path}", {"batch_size": "1", "device": "cpu"})
    with pytest.raises(ConfigError, match="max_frames_num apply to LLaVA-OneVision only"):
        get_model("dymu_llava").create_from_arg_string(f"pretrained={tiny_llava},level=none,max_frames_num=8",
                                                       {"batch_size": "1", "device": "cpu"})


def _cli_args(tiny_onevision) -> list[str]:
    """ToMe over two images and a video through the stock CLI, in float64 (no near-tie can flip an answer)."""
    return ["--model", "tome_llava_onevision", "--model_args",
            f"pretrained={tiny_onevision},r=4,device_map=cpu,dtype=float64,max_frames_num=4",
            "--tasks", f"dymu_test_ov_two_images,{VIDEO_TASK}", "--limit", "2", "--log_samples"]


@pytest.fixture(scope="module")
def cli_one(tiny_onevision, ov_tasks, lmms_env, tmp_path_factory):
    """One stock-CLI run in one process: the two-process run is compared with it, and its results JSON
    is checked for the efficiency averages (one lmms-eval launch serves both)."""
    from tests.lmms.lmms_runs import run_lmms

    out = tmp_path_factory.mktemp("ov_cli_one")
    proc = run_lmms(_cli_args(tiny_onevision) + ["--batch_size", "1", "--output_path", str(out)], lmms_env,
                    include=ov_tasks)
    assert list(out.rglob("*_results.json")), proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_cli_two_processes_give_the_same_answers_as_one(cli_one, tiny_onevision, ov_tasks, lmms_env, tmp_path):
    """Data parallel through the stock CLI (accelerate, two CPU processes), as for LLaVA-1.5."""
    import socket

    from tests.lmms.lmms_runs import VENV_BIN, read_run, read_stats, run_lmms

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    launcher = [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port, "-m", "lmms_eval"]
    two = run_lmms(_cli_args(tiny_onevision) + ["--batch_size", "2", "--output_path", str(tmp_path / "two")],
                   lmms_env, launcher=launcher, include=ov_tasks)
    assert (tmp_path / "two").exists(), two.stderr[-3000:]
    (_, one_samples), (_, two_samples) = read_run(cli_one), read_run(tmp_path / "two")
    assert _responses({"samples": one_samples}) == _responses({"samples": two_samples})
    stats = read_stats(tmp_path / "two")
    assert sorted({s["rank"] for s in stats}) == [0, 1] and len(stats) == 4
    assert all(s["visual_rows"] < s["visual_positions"] for s in stats if s["images"])
    assert all(s["visual_rows"] <= s["visual_positions"] for s in stats)


@pytest.mark.slow
def test_stock_cli_results_carry_the_efficiency_averages(cli_one):
    """A stock CLI run over two images and a video: every stats row has its FLOPs and token views, and
    lmms-eval's own *_results.json holds their averages in its throughput block. (The unreduced
    model's views, KV cache = the full one, are checked in tests/accounting.)"""
    import statistics

    from dymu_eval.lmms.stats import THROUGHPUT_COUNTS
    from tests.lmms.lmms_runs import read_run, read_stats

    results, _ = read_run(cli_one)
    stats = read_stats(cli_one)
    assert len(stats) == 4 and {s["frames"] > 0 for s in stats} == {True, False}
    for s in stats:  # ToMe r=4 in each of the 3 layers: 36 - 12 rows per crop and frame; no VTU
        assert s["encoder_rows"] == sum(s["encoder_tokens"]) == 24 * (s["crops"] + s["frames"])
        assert s["vtu"] is False and s["llm_rows"] == s["visual_rows"] <= s["visual_positions"]
        assert 0 < s["encoder_flops"] and 0 < s["projector_flops"] < s["prefill_flops"] < s["total_flops"]
        assert 0 < s["kv_cache_bytes"] <= s["kv_full_bytes"]
        assert s["kv_cache_bytes"] < s["kv_full_bytes"] or not s["images"]
    block = results["throughput"]
    for key, (field, scale) in THROUGHPUT_COUNTS.items():
        assert block[f"avg_{key}"] == pytest.approx(statistics.fmean(s[field] for s in stats) * scale, rel=1e-9), key
    timed = [s for s in stats if not s["warmup"]]
    assert block["avg_ttft_ms"] == pytest.approx(statistics.fmean(s["ttft_ms"] for s in timed), rel=1e-9)
