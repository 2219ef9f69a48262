"""What the demo runs: the comparison rows, their model_args, and the lmms-eval command lines."""
from pathlib import Path

from dymu_eval.runs import demo, lmms_eval_argv


def test_demo_runs_cover_the_comparison_table():
    runs = demo.demo_runs()
    labels = [r.name for r in runs]
    assert len(labels) == len(set(labels)) == 12
    assert labels[0] == "baseline"
    assert {r.model for r in runs} >= {"random_llava", "pool_llava", "visionzip_llava"}
    assert {r.args.get("level") for r in runs if r.model == "tome_llava"} == {"low", "mid", "high"}
    dymu = [r for r in runs if r.args.get("method") == "dymu"]
    assert len(dymu) == 4 and sum(r.args.get("vtu") == "false" for r in dymu) == 1
    assert all(r.args["thresholds"] == demo.CALIBRATION_DATASET for r in dymu)


def test_calibration_set_runs_differ_only_in_their_thresholds():
    runs = demo.compare_runs(["offline_photos", "offline_scenes"], "mid")
    assert [r.name for r in runs] == ["DyMU-mid (offline_photos)", "DyMU-mid (offline_scenes)"]
    assert [r.args["thresholds"] for r in runs] == ["offline_photos", "offline_scenes"]
    assert all(r.args | {"thresholds": ""} == runs[0].args | {"thresholds": ""} for r in runs)


def test_model_args_and_argv():
    run = demo.demo_runs("my_thresholds")[-1]
    args = dict(kv.split("=", 1) for kv in run.model_args(Path("/m/llava"), batch_size="1").split(","))
    assert args == {"pretrained": "/m/llava", "method": "dymu", "level": "low", "thresholds": "my_thresholds",
                    "vtu": "false", "batch_size": "1"}
    argv = lmms_eval_argv(run, Path("/m/llava"), ",".join(demo.DEMO_TASKS), Path("/out"), Path("/repo/tasks"), limit=4)
    assert argv[argv.index("--include_path") + 1] == "/repo/tasks"
    assert argv[argv.index("--limit") + 1] == "4"
    assert argv[argv.index("--tasks") + 1] == ",".join(demo.DEMO_TASKS)
    assert " " not in argv[argv.index("--output_path") + 1]


def test_demo_images_exist():
    paths = demo.merge_map_images()
    assert paths and all(p.is_file() for p in paths.values())
