"""What the demo runs: the comparison rows, their model_args, and the lmms-eval command lines."""
from pathlib import Path

import pytest

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


def test_onevision_runs_compare_every_method_on_the_same_frames():
    from dymu_eval.runs import demo_onevision as ov

    runs = ov.onevision_runs("my_thresholds")
    assert [r.name for r in runs] == ["OV-baseline", "OV-FastV", "OV-ToMe-mid", "OV-DyMU-low", "OV-DyMU-mid",
                                      "OV-DyMU-high"]  # the registry's table order
    assert [r.model for r in runs] == ["dymu_llava_onevision", "fastv_llava_onevision", "tome_llava_onevision"] + \
        ["dymu_llava_onevision"] * 3
    assert all(r.args["max_frames_num"] == str(ov.MAX_FRAMES) == "8" for r in runs)
    assert [r.args.get("level") for r in runs if r.args["method"] == "dymu"] == ["low", "mid", "high"]
    assert all(r.args["thresholds"] == "my_thresholds" for r in runs if r.args["method"] == "dymu")
    assert runs[0].args | {"max_frames_num": "8"} == {"method": "none", "level": "none", "max_frames_num": "8"}
    # folders of their own, apart from the LLaVA runs of the same method
    assert not {r.folder("/x").name for r in runs} & {r.folder("/x").name for r in demo.demo_runs()}
    argv = lmms_eval_argv(runs[-1], Path("/m/ov"), ",".join(ov.ONEVISION_TASKS), Path("/out"), Path("/t"),
                          limit=None)
    assert argv[argv.index("--tasks") + 1] == "dymu_pope_offline,dymu_video_pope_offline"
    assert "--limit" not in argv  # limit None: the full tasks (`make demo FULL=1`)
    assert "max_frames_num=8" in argv[argv.index("--model_args") + 1]


def test_onevision_tasks_exist_and_name_their_clips():
    import json

    from dymu_eval.paths import tasks_dir
    from dymu_eval.runs.demo_onevision import ONEVISION_TASKS, VIDEO_DOCS, VIDEO_TASK

    folder = tasks_dir() / "dymu_offline"
    assert all((folder / f"{t}.yaml").is_file() for t in ONEVISION_TASKS) and VIDEO_TASK in ONEVISION_TASKS
    assert f"test: {VIDEO_DOCS}" in (folder / f"{VIDEO_TASK}.yaml").read_text()
    known = {c["video"] for c in json.loads((folder / "videos.json").read_text())["clips"]}
    assert {json.loads(line)["video"] for line in (folder / VIDEO_DOCS).read_text().splitlines()} <= known


def test_map_frames_span_the_complexity_range(tmp_path):
    import json

    from PIL import Image

    from dymu_eval.paths import tasks_dir
    from dymu_eval.runs.demo_onevision import map_frames

    manifest = tasks_dir() / "dymu_offline" / "videos.json"
    complexity = sorted(c["complexity"] for c in json.loads(manifest.read_text())["clips"])
    saved = sorted(map_frames(manifest, tmp_path, 3).glob("*.png"))
    assert len(saved) == 3
    picked = sorted(float(p.stem.rsplit("_c", 1)[1]) for p in saved)
    assert picked[0] == pytest.approx(complexity[0], abs=0.005)
    assert picked[-1] == pytest.approx(complexity[-1], abs=0.005)
    assert all(Image.open(p).size[0] > 0 for p in saved)


def test_only_the_models_own_bar_is_shown_while_a_run_lasts(tmp_path, capsys):
    """lmms-eval's output as text mode reads it (each tqdm refresh a line): the plugin model's bar is
    picked out, everything else only reaches the log."""
    import sys

    from dymu_eval.runs.spec import progress_line, run_logged

    bars = ["dymu_llava_onevision generate:  50%|█████     | 16/32 [00:20<00:20,  1.28s/it]",
            "fastv_llava loglikelihood: 100%|██████████| 4/4 [00:01<00:00,  3.10it/s]"]
    others = ["Postprocessing: 100%|██████████| 16/16 [00:00<00:00, 3573.99it/s]",
              "Loading weights:   0%|          | 0/500 [00:00<?, ?it/s]",
              "2026-12-01 18:40:23 | INFO | Building contexts for dymu_video_pope_offline on rank 0...",
              "model generate output: yes"]
    assert [progress_line(x) for x in bars] == bars
    # a log message written right after a refresh (no newline in between) is not shown
    assert progress_line(bars[0] + "2026-12-01 19:48:57 | INFO | Metric summary - Total elapsed") == bars[0]
    assert [progress_line(x) for x in others] == [None] * len(others)
    script = "import sys\nfor x in sys.argv[1:]: sys.stderr.write(x + chr(13))\nprint('done')"
    log = tmp_path / "run.log"
    rc = run_logged([sys.executable, "-c", script, *others, *bars], log, echo=False, progress=True)
    assert rc == 0 and log.read_text().splitlines() == [*others, *bars, "done"]
    shown = capsys.readouterr().out
    assert shown == f"\r    {bars[0]}\r    {bars[1].ljust(len(bars[0]))}\n"


def test_next_runs_compare_the_methods_on_the_anyres_image_task():
    from dymu_eval.runs import demo_next as nx

    runs = nx.next_runs("my_thresholds")
    assert [r.name for r in runs] == ["NeXT-baseline", "NeXT-FastV", "NeXT-VisionZip-54+10", "NeXT-ToMe-mid",
                                      "NeXT-DyMU-low", "NeXT-DyMU-mid"]
    assert all(r.model.endswith("_llava_next") for r in runs)
    assert [r.args.get("level") for r in runs if r.args["method"] == "dymu"] == list(nx.DYMU_LEVELS)
    assert all(r.args["thresholds"] == "my_thresholds" for r in runs if r.args["method"] == "dymu")
    assert runs[0].args == {"method": "none", "level": "none"}
    others = {r.folder("/x").name for r in demo.demo_runs()}
    assert not {r.folder("/x").name for r in runs} & others


def test_each_section_has_its_own_question_limit_and_the_user_overrides_every_one():
    from dymu_eval.runs import demo_next as nxt
    from dymu_eval.runs import demo_onevision as ov

    defaults = (demo.LLAVA_LIMIT, ov.ONEVISION_LIMIT, nxt.NEXT_LIMIT)
    assert all(d % 2 == 0 and d >= 2 for d in defaults)  # the MME-style task scores pairs
    assert [demo.section_limit(d, None, False) for d in defaults] == list(defaults)
    assert [demo.section_limit(d, 4, False) for d in defaults] == [4, 4, 4]
    assert [demo.section_limit(d, None, True) for d in defaults] == [None, None, None]


def test_full_and_limit_together_are_refused(capsys):
    from dymu_eval.cli import main

    assert main(["demo", "--full", "--limit", "4"]) != 0
    assert "--full and --limit" in capsys.readouterr().err


def test_a_registered_methods_demo_hook_adds_its_runs_to_the_sections():
    """The sections come from the method registry: a method with a ``demo`` hook joins them (through
    its own model names, in table order), and the hook decides where and at which levels."""
    from dymu_eval.methods import METHODS, MethodSpec
    from dymu_eval.methods.reproduce import MatrixRun
    from dymu_eval.runs import demo_next as nx
    from dymu_eval.runs import demo_onevision as ov

    def demo_hook(ctx):
        return [MatrixRun(f"Shout-{lv}", {"level": lv, "family": ctx.family}) for lv in ctx.run_levels]

    METHODS.register("shout", MethodSpec(label="Shout", summary="a test method", build="x:y", demo=demo_hook,
                                         table_order=1000))
    try:
        main = [r for r in demo.demo_runs("t") if r.name.startswith("Shout")]
        assert [(r.name, r.model, r.args) for r in main] == [
            (f"Shout-{lv}", "shout_llava", {"method": "shout", "level": lv, "family": "llava"})
            for lv in ("low", "mid", "high")]
        assert demo.demo_runs("t")[-1].name == "Shout-high"  # table order: after the built-ins
        side = [(r.name, r.model, r.args) for r in ov.onevision_runs("t") if "Shout" in r.name]
        assert side == [("OV-Shout-mid", "shout_llava_onevision",
                         {"method": "shout", "level": "mid", "family": "llava_onevision", "max_frames_num": "8"})]
        assert [r.name for r in nx.next_runs("t") if "Shout" in r.name] == ["NeXT-Shout-mid"]
    finally:
        METHODS.unregister("shout")
    assert not [r for r in demo.demo_runs("t") if "Shout" in r.name]
