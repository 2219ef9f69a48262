"""Building blocks of ``make demo``: the model, the images and the list of runs to compare.

The demo evaluates the micro LLaVA (real DINOv2-S + SmolLM2 weights, trained projector) on the
offline tasks in ``tasks/`` with every method of the comparison table. This module only says
*what* to run; the command that runs it lives with the CLI.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from dymu_eval.offline.micro_llava import build_micro_llava
from dymu_eval.offline.photos import COLOUR_PHOTOS, sample_photos
from dymu_eval.vocabulary import FASTV_K, FASTV_RATIO, LEVELS

DEMO_TASKS = ("dymu_pope_offline", "dymu_mme_offline", "dymu_gqa_offline")
CALIBRATION_DATASET = "offline_photos"
MERGE_MAP_PHOTOS = ("chelsea", "astronaut", "coffee", "hubble_deep_field")


@dataclass(frozen=True)
class DemoRun:
    """One row of the comparison table: a plugin model and its model_args."""

    label: str
    model: str
    args: dict[str, str] = field(default_factory=dict)

    def model_args(self, pretrained: Path, **extra: str) -> str:
        """lmms-eval's ``--model_args`` string for this run on ``pretrained``."""
        items = {"pretrained": str(pretrained), **self.args, **extra}
        return ",".join(f"{k}={v}" for k, v in items.items())


def demo_runs(thresholds: str = CALIBRATION_DATASET) -> list[DemoRun]:
    """Baseline, ToMe at three levels, FastV, DyMU low/mid/high and DyMU-low without VTU."""
    runs = [DemoRun("baseline", "dymu_llava", {"method": "none", "level": "none"})]
    runs += [DemoRun(f"ToMe-{lv}", "tome_llava", {"method": "tome", "level": lv}) for lv in LEVELS]
    runs.append(DemoRun("FastV", "fastv_llava", {"method": "fastv", "fastv_k": str(FASTV_K), "fastv_ratio": f"{FASTV_RATIO:g}"}))
    runs += [DemoRun(f"DyMU-{lv}", "dymu_llava", {"method": "dymu", "level": lv, "thresholds": thresholds})
             for lv in LEVELS]
    runs.append(DemoRun("DyMU-low w/o VTU", "dymu_llava",
                        {"method": "dymu", "level": "low", "thresholds": thresholds, "vtu": "false"}))
    return runs


def compare_runs(datasets: list[str], level: str) -> list[DemoRun]:
    """DyMU at one level with thresholds from each calibration set (the paper's Figure 5 rows)."""
    return [DemoRun(f"DyMU-{level} ({ds})", "dymu_llava", {"method": "dymu", "level": level, "thresholds": ds})
            for ds in datasets]


def demo_model() -> Path:
    """The micro LLaVA folder (built in the user cache on first use, with the shipped projector)."""
    return build_micro_llava("shipped")


def merge_map_images() -> dict[str, Path]:
    """A few photos of different complexity for the merge-map pictures."""
    return sample_photos(list(MERGE_MAP_PHOTOS))


def calibration_images() -> dict[str, Path]:
    """The colour photos that ship with installed wheels (the demo's calibration set)."""
    return sample_photos(list(COLOUR_PHOTOS))


def lmms_eval_argv(run: DemoRun, pretrained: Path, output_path: Path, include_path: Path,
                   tasks: tuple[str, ...] = DEMO_TASKS, limit: int | None = None) -> list[str]:
    """The lmms-eval command line for one run (``--include_path`` is required for plugin tasks)."""
    argv = ["lmms-eval", "--model", run.model, "--model_args", run.model_args(pretrained),
            "--tasks", ",".join(tasks), "--batch_size", "1", "--include_path", str(include_path),
            "--output_path", str(output_path / run.label.replace(" ", "_").replace("/", "_")), "--log_samples"]
    if limit is not None:
        argv += ["--limit", str(limit)]
    return argv


def describe(argv: list[str]) -> str:
    """A copy-pasteable shell line."""
    return " ".join(shlex.quote(a) for a in argv)
