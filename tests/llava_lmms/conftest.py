"""Shared fixtures: a tiny random LLaVA on disk, thresholds calibrated for it, and helpers that
run lmms-eval (as a subprocess, like users do, or in-process through its Python API)."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tasks"
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_llava import build_tiny_llava  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny") / "tiny-llava", TASKS)


@pytest.fixture(scope="session")
def lmms_env(tmp_path_factory) -> dict[str, str]:
    """Environment for lmms-eval subprocesses: offline, one thread, scratch caches."""
    scratch = tmp_path_factory.mktemp("lmms_home")
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               HF_HOME=str(scratch / "hf"), DYMU_EVAL_CACHE=str(scratch / "dymu_cache"), TOKENIZERS_PARALLELISM="false")
    return env


@pytest.fixture(scope="session")
def tiny_thresholds(tiny_llava, tmp_path_factory) -> Path:
    """DyMU thresholds for the tiny model's tower, level low, calibrated on the bundled task images."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from dymu_eval.calibrate import CalibrationSettings, calibrate
    from dymu_eval.images import FolderImages
    from dymu_eval.merge import merges_per_layer
    from dymu_eval.thresholds import save_record
    from dymu_eval.vision import VisionRunner
    from dymu_eval.vision.preprocess import ProcessorPreprocess

    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava).eval()
    processor = AutoProcessor.from_pretrained(tiny_llava)
    runner = VisionRunner.from_model(model)
    r = runner.r_for_level("low")
    record = calibrate(runner, FolderImages(TASKS / "dymu_offline" / "images", name="tiny_offline"),
                       merges_per_layer(r, runner.num_layers),
                       CalibrationSettings(batch_size=8, level="low", r=r, stats_images=0, progress=False),
                       preprocess=ProcessorPreprocess(processor.image_processor), encoder_name=str(tiny_llava))
    return save_record(record, tmp_path_factory.mktemp("thr") / "tiny_low.json")


def run_lmms(args: list[str], env: dict[str, str], launcher: list[str] | None = None, timeout: int = 300,
             include: Path = TASKS):
    """Run lmms-eval from the venv; returns the CompletedProcess (lmms-eval exits 0 even on failure).
    ``include``: the one task folder lmms-eval adds to its own (the bundled tasks by default)."""
    cmd = (launcher or [str(VENV_BIN / "lmms-eval")]) + args + ["--include_path", str(include), "--verbosity", "INFO"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))


def read_run(out: Path) -> tuple[dict, dict[str, list[dict]]]:
    """(results JSON, samples per task) of an lmms-eval output folder; fails if there are none."""
    results = glob.glob(str(out / "**" / "*_results.json"), recursive=True)
    assert len(results) == 1, f"expected one results file under {out}, found {results}"
    samples = {}
    for f in glob.glob(str(out / "**" / "*_samples_*.jsonl"), recursive=True):
        task = Path(f).stem.split("_samples_", 1)[1]
        samples[task] = sorted((json.loads(line) for line in open(f)), key=lambda r: r["doc_id"])
    return json.load(open(results[0])), samples


def read_stats(out: Path) -> list[dict]:
    rows = []
    for f in sorted(glob.glob(str(out / "dymu_stats" / "*.jsonl"))):
        rows += [json.loads(line) for line in open(f)]
    return rows


@pytest.fixture(scope="session")
def tiny_onevision(tmp_path_factory) -> Path:
    from tiny_onevision import build_tiny_onevision

    return build_tiny_onevision(tmp_path_factory.mktemp("tiny_ov") / "tiny-onevision", TASKS)


@pytest.fixture(scope="session")
def tiny_videos(tmp_path_factory) -> dict[str, Path]:
    """Local .mp4 files: a 12-frame clip, a 3-frame clip (shorter than asked) and a corrupt file."""
    from tiny_onevision import write_video

    folder = tmp_path_factory.mktemp("videos")
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return {"long": write_video(folder / "long.mp4", 12, seed=1), "short": write_video(folder / "short.mp4", 3, seed=2),
            "corrupt": corrupt}
