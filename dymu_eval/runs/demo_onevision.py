"""The demo's OneVision section: DyMU on AnyRes images and on video, against ToMe, FastV and the baseline.

Steps, each skipped when its output already exists (``force`` redoes them):

1. build (or verify) the micro OneVision in the user cache (the micro LLaVA's real weights);
2. calibrate DToMe thresholds for its encoder at low/mid/high on the demo's calibration images
   (a cache entry of its own, keyed by the OneVision folder);
3. run the stock lmms-eval CLI for the baseline, ToMe-mid, FastV and DyMU low/mid/high on one
   offline AnyRes image task and the offline video POPE task (the first ``ONEVISION_LIMIT`` of
   each, the user's ``--limit``, or every sample with ``--full``), with ``MAX_FRAMES`` frames per clip;
4. write the comparison tables, a plot of visual rows per frame against clip complexity and
   merge maps of a few frames from clips of low, middle and high complexity.
"""
from __future__ import annotations

from pathlib import Path

from ..vocabulary import LEVELS
from .demo_plan import section_runs
from .spec import RunSpec

ONEVISION_TASKS = ("dymu_pope_offline", "dymu_video_pope_offline")
VIDEO_TASK = "dymu_video_pope_offline"
VIDEO_DOCS = "video_pope.jsonl"  # the video task's docs, in doc_id order
MAX_FRAMES = 8
MAP_CLIPS = 3
# Questions per task when the user gives neither --limit nor --full (the first 16 of each: 10/6 and 9/7
# yes/no), so the whole `make demo` stays within 35 minutes on 2 cores (demo.LLAVA_LIMIT).
ONEVISION_LIMIT = 16  # merge maps: the middle frame of the least, the median and the most complex clip


def onevision_runs(thresholds: str) -> list[RunSpec]:
    """Every registered method's runs of this section (the built-ins: baseline, FastV, ToMe at one level
    and DyMU low/mid/high), all with ``MAX_FRAMES`` frames per clip."""
    return section_runs("llava_onevision", thresholds, LEVELS, main=False, prefix="OV-",
                        extra={"max_frames_num": str(MAX_FRAMES)})


def map_frames(videos_json: Path, out: Path, n: int = MAP_CLIPS) -> Path:
    """The middle frame of ``n`` clips spread over the complexity range, saved as PNGs in ``out``."""
    import json

    from PIL import Image

    from ..vlm.llava_onevision import load_video

    clips = sorted(json.loads(videos_json.read_text())["clips"], key=lambda c: c["complexity"])
    picks = [clips[round(i * (len(clips) - 1) / max(n - 1, 1))] for i in range(n)]
    out.mkdir(parents=True, exist_ok=True)
    for clip in picks:
        frames = load_video(str(videos_json.parent / clip["video"]), 3, name=str(videos_json)).frames
        Image.fromarray(frames[1]).save(out / f"{Path(clip['video']).stem}_c{clip['complexity']:.2f}.png")
    return out


def frame_merge_maps(model_dir: Path, videos_json: Path, dataset: str, out: Path) -> None:
    """PNG overlays of what DyMU-low merged in a few frames, with their token counts (``tokens --maps``)."""
    from .demo import tokens_maps

    tokens_maps(model_dir, map_frames(videos_json, out / "_frames"), out, dataset)


def stats_files(run_dirs: list[Path], specs: list[RunSpec]) -> dict[str, list[Path]]:
    """Run name -> its per-sample stats files (what the complexity plot reads)."""
    return {spec.name: sorted((run_dir / "dymu_stats").glob("*.jsonl")) for spec, run_dir in zip(specs, run_dirs)}


def onevision_section(images: Path, dataset: str, out: Path, runs_dir: Path, limit: int | None,
                      force: bool) -> dict[str, Path]:
    """Build, calibrate, run, tabulate and plot the OneVision section; where its outputs are."""
    from ..offline.micro_onevision import build_micro_onevision
    from ..paths import tasks_dir
    from ..report.build import make_report
    from ..report.plots import tokens_per_frame_vs_complexity
    from .demo import ensure_thresholds, run_specs

    print("[demo] building / verifying the micro OneVision")
    model_dir = build_micro_onevision("shipped")
    print(f"[demo] OneVision model: {model_dir}")
    ensure_thresholds(model_dir, images, force, dataset=dataset)
    specs = onevision_runs(dataset)
    run_dirs = run_specs(specs, model_dir, runs_dir, limit, force, ONEVISION_TASKS, "micro-onevision")
    tables = out / "tables"
    make_report(run_dirs, tables)
    task_data = tasks_dir() / "dymu_offline"
    plot, _ = tokens_per_frame_vs_complexity(stats_files(run_dirs, specs), VIDEO_TASK, task_data / VIDEO_DOCS,
                                             task_data / "videos.json", out / "tokens_per_frame_vs_complexity.png")
    frame_merge_maps(model_dir, task_data / "videos.json", dataset, out / "maps")
    return {"model": model_dir, "tables": tables, "plot": plot or out, "maps": out / "maps"}
