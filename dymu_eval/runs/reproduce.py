"""The DyMU paper's comparison matrices through the stock lmms-eval CLI.

LLaVA-1.5 (family ``llava``, the default) runs, one lmms-eval output folder each: the unreduced
baseline; ToMe at 21/16/8 merges per layer; DyMU low/mid/high; DyMU-low without VTU and ToMe
(r=21) with VTU (Table 6); the linear and reverse-linear schedules at mid (Table 5); FastV at its
paper setting (K=2, R=50%); DyMU-mid with Pixmo-Cap thresholds (Table 7). Then the baselines
beside them (``--baselines``, all by default): random pruning at 192/128/64 tokens (seed 0), 2x2
pooling of the patch grid (144 tokens) with and without VTU, and VisionZip at its published
162+30, 108+20 and 54+10 settings (192/128/64 tokens).

LLaVA-OneVision (family ``onevision``) runs Table 4's setting: the baseline, ToMe at 24/21/15
merges per layer, DyMU low/mid/high and FastV, on the Table 4 benchmarks lmms-eval has plus the
usual video protocol (32 frames per video), then the same baselines at the same fractions of
each crop's and frame's 729 patches (random 243/162/81, 3x3 pooling, VisionZip 205+38, 137+25,
68+13).

LLaVA-NeXT (family ``next``, LLaVA-NeXT-7B with Vicuna, the model the peer papers compare on
after LLaVA-1.5) runs the peer tables' setting: the baseline, ToMe at 21/16/8 merges per layer
(the same CLIP ViT-L/14-336 shape; LLaVA-1.6 fine-tuned its weights), DyMU low/mid/high (thresholds
calibrated on NeXT's own tower) and FastV, then the fixed-budget methods at 640/320/160 tokens, which
the papers count as 5 crops x 128/64/32: budgets of 128/64/32 per crop of 576 patches.

Then ``dymu-eval tables``, which shows the papers' rows beside the measured ones.

Before anything starts it checks, with short timeouts, that the model is a local folder or the
hub is reachable, that lmms-eval's hub datasets can be read, and that every threshold entry
exists (calibrating missing ones from images the user points to, or stopping with the
``dymu-eval calibrate`` command that would make them).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DymuError, RunError
from ..methods import METHODS
from ..methods.reproduce import MatrixContext
from ..vocabulary import (
    DEFAULT_METHOD,
    DEFAULT_THRESHOLDS,
    LEVELS,
    LLAVA_15,
    MAX_FRAMES,
    NEXT_VICUNA_7B,
    ONEVISION_7B,
)
from .spec import RunSpec, lmms_eval_argv, results_done, run_logged

# Table-2 image benchmarks lmms-eval scores without a paid judge (MMBench falls back to GPT,
# MM-Vet and LLaVA-Bench-in-the-Wild are GPT-judged).
DEFAULT_TASKS = "mme,gqa,pope,scienceqa_img,seedbench,textvqa_val"
TOME_ENCODER = "clip-vit-l-14-336"  # LLaVA-1.5's encoder: ToMe's r per level from merge.levels (paper Table 2)
LLAVA_PATCHES = 24 * 24

# LLaVA-OneVision (paper Table 4): its benchmarks lmms-eval has (MMBench-Video is not one), then
# the usual video protocol of reducers on OneVision. egoschema_subset is the 500-question split
# lmms-eval scores locally (the full set only writes a submission file).
ONEVISION_TASKS = ("mmbench_en_dev,mme,seedbench,mathvista_testmini,videomme,"
                   "mvbench,egoschema_subset,longvideobench_val_v,mlvu_dev")
ONEVISION_TOME_ENCODER = "siglip-so400m-14-384"  # SigLIP SO400M in OneVision (paper Table 4)
# The baselines on OneVision (the DyMU paper has none there) run at the LLaVA-1.5 budgets' fractions
# of a crop's and frame's 27x27 = 729 patches (each method's ``reproduce`` hook scales its own).
ONEVISION_PATCHES = 27 * 27
# LLaVA-NeXT-7B: the benchmarks the peer tables report (DART Table 3, VisionZip Table 2) that lmms-eval
# scores without a paid judge; 576 patches per crop; the papers' 640/320/160 tokens over 5 crops.
NEXT_TASKS = "mme,gqa,pope,textvqa_val,scienceqa_img,mmbench_en_dev"
NEXT_PATCHES = 24 * 24
NEXT_BUDGETS = (128, 64, 32)
# family -> (default checkpoint, default tasks)
FAMILIES = {"llava": (LLAVA_15, DEFAULT_TASKS), "onevision": (ONEVISION_7B, ONEVISION_TASKS),
            "next": (NEXT_VICUNA_7B, NEXT_TASKS)}
# family -> (ToMe's encoder key, patches per crop or frame, run-folder prefix, lmms-eval model-name suffix,
# per-crop budgets of the fixed-budget methods (empty: LLaVA-1.5's 192/128/64 at the same fraction), extra
# model_args)
_MATRIX = {
    "llava": (TOME_ENCODER, LLAVA_PATCHES, "", "", (), {}),
    "onevision": (ONEVISION_TOME_ENCODER, ONEVISION_PATCHES, "ov_", "_onevision", (),
                  {"max_frames_num": str(MAX_FRAMES)}),
    "next": (TOME_ENCODER, NEXT_PATCHES, "next_", "_next", NEXT_BUDGETS, {}),
}
PIXMO = "pixmo_cap"  # the Table 7 calibration set (the dymu method's matrix reads it)
# the calibration sets the matrix reads, and the option (make variable) that points at their images
IMAGE_OPTIONS = {DEFAULT_THRESHOLDS: "CALIB_IMAGES", PIXMO: "PIXMO_IMAGES"}


@dataclass
class Settings:
    """What `dymu-eval reproduce` was asked for."""

    family: str = "llava"
    pretrained: str = ""  # default: the family's checkpoint
    tasks: str = ""  # default: the family's benchmarks
    levels: tuple[str, ...] = LEVELS
    baselines: tuple[str, ...] | None = None  # the fixed-budget baselines to run (None: all registered)
    limit: str | None = None
    out: Path = Path("runs/reproduce")
    num_gpus: int = 1
    images: dict[str, str] | None = None  # calibration dataset -> image folder
    dry_run: bool = False
    force: bool = False


def _check_levels(levels: list[str] | tuple[str, ...]) -> None:
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise ConfigError(f"levels must be a comma list of {', '.join(LEVELS)}; got {','.join(levels) or 'nothing'}")


def baseline_methods() -> tuple[str, ...]:
    """The registered fixed-budget baselines (``reproduce --baselines`` chooses among them)."""
    return tuple(m for m in METHODS if METHODS[m].baseline)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ConfigError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")


def matrix(levels: list[str] | tuple[str, ...], family: str = "llava",
           baselines: list[str] | tuple[str, ...] | None = None) -> list[RunSpec]:
    """Every registered method's runs for ``family`` (llava: LLaVA-1.5, onevision: LLaVA-OneVision,
    next: LLaVA-NeXT) restricted to ``levels``, the fixed-budget ``baselines`` among them (all by default)."""
    from ..merge.levels import KNOWN_LEVELS

    _check_family(family)
    _check_levels(levels)
    known = baseline_methods()
    baselines = known if baselines is None else tuple(baselines)
    bad = [b for b in baselines if b not in known]
    if bad:
        raise ConfigError(f"baselines must be a comma list of {', '.join(known)} (or empty); got {','.join(bad)}")
    encoder, patches, prefix, suffix, budgets, frames = _MATRIX[family]
    context = MatrixContext(family, tuple(levels), KNOWN_LEVELS[encoder], patches, budgets)
    runs = []
    for method in METHODS:
        spec = METHODS[method]
        if spec.reproduce is None or (spec.baseline and method not in baselines):
            continue
        model = f"{method if spec.model_name else DEFAULT_METHOD}_llava{suffix}"
        runs += [RunSpec(prefix + run.name, model, {**run.args, **frames}, run.needs)
                 for run in spec.reproduce(context)]
    return runs


def missing_thresholds(pretrained: str, runs: list[RunSpec]) -> dict[tuple[str, str, str], str]:
    """Threshold entries the runs need that the cache lacks -> the cache's miss message."""
    from ..thresholds import ThresholdCache

    cache = ThresholdCache()
    missing: dict[tuple[str, str, str], str] = {}
    for need in sorted({n for r in runs for n in r.needs}):
        dataset, level, schedule = need
        try:
            cache.lookup(pretrained, dataset, level=level, schedule=schedule)
        except DymuError as exc:
            missing[need] = str(exc)
    return missing


def _model_available(pretrained: str) -> tuple[bool, str]:
    if os.path.isdir(pretrained):
        ok = (Path(pretrained) / "config.json").is_file()
        return ok, "" if ok else f"model folder {pretrained} has no config.json"
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    try:
        if isinstance(try_to_load_from_cache(pretrained, "config.json"), str):
            return True, ""
    except HFValidationError:
        return False, f"{pretrained}: no such folder, and not a hub id"
    from ..fetch.net import hub_reachable

    ok, why = hub_reachable()
    return ok, "" if ok else (f"{pretrained} is not a local folder nor in the Hugging Face cache, and the hub is "
                              f"unreachable ({why}). Download it on a connected machine "
                              f"(`huggingface-cli download {pretrained}`) or pass MODEL=/path/to/local/folder")


def _token_file() -> Path:
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "token"


def preflight(pretrained: str, tasks: str) -> list[str]:
    """What would make the runs fail early: no model, no hub for hub-hosted tasks, no token."""
    problems = []
    ok, why = _model_available(pretrained)
    if not ok:
        problems.append(why)
    local_tasks = all(t.startswith("dymu_") for t in tasks.split(","))
    offline = os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not local_tasks and not offline:
        from ..fetch.net import hub_reachable

        hub_ok, why = hub_reachable()
        if not hub_ok:
            problems.append(f"tasks {tasks} load their data from the Hugging Face hub, which is unreachable ({why}); "
                            f"use TASKS=dymu_offline for the bundled offline tasks")
        elif not (os.environ.get("HF_TOKEN") or _token_file().is_file()):
            problems.append("lmms-eval's built-in tasks load datasets with token=True, which fails without a "
                            "Hugging Face token even for public sets: set HF_TOKEN or run `huggingface-cli login`")
    return problems


def _calibrations(s: Settings, runs: list[RunSpec]) -> tuple[list[list[str]], list[str]]:
    """Calibration commands for the missing threshold entries, and why the rest cannot be made."""
    from ..thresholds import calibrate_command

    images = s.images or {}
    calibrations, stops = [], []
    for (dataset, level, schedule), message in missing_thresholds(s.pretrained, runs).items():
        option = IMAGE_OPTIONS.get(dataset, "CALIB_IMAGES")
        folder = images.get(dataset) or (f"<{dataset} images: {option}=DIR>" if s.dry_run else None)
        if folder is None:
            stops.append(f"{message}\n  or point `make reproduce` at the images with {option}=DIR")
            continue
        argv = calibrate_command(s.pretrained, dataset, level, None, schedule, images=["--images", folder])
        calibrations.append([sys.executable, "-m", "dymu_eval.cli", *argv[1:]])
    if stops:
        stops = [f"{len(stops)} threshold entr{'y is' if len(stops) == 1 else 'ies are'} missing:\n" + "\n".join(stops)]
    return calibrations, stops


def reproduce(s: Settings) -> int:
    """Calibrate what is missing, run every spec not yet done, then build the tables; the exit code."""
    from ..paths import tasks_dir

    if s.num_gpus < 1:
        raise ConfigError(f"num_gpus must be at least 1, got {s.num_gpus}")
    _check_family(s.family)
    s.pretrained = s.pretrained or FAMILIES[s.family][0]
    s.tasks = ",".join(t.strip() for t in (s.tasks or FAMILIES[s.family][1]).split(",") if t.strip())
    if not s.tasks:
        raise ConfigError("tasks is empty")
    runs = matrix(s.levels, s.family, s.baselines)
    calibrations, stops = _calibrations(s, runs)
    commands = [lmms_eval_argv(r, s.pretrained, s.tasks, s.out, tasks_dir(), s.limit, s.num_gpus) for r in runs]
    tables = [sys.executable, "-m", "dymu_eval.cli", "tables", *[str(r.folder(s.out)) for r in runs],
              "--out", str(s.out / "tables")]
    if s.dry_run:
        print(f"# {len(calibrations)} calibration(s), {len(runs)} lmms-eval run(s), then the tables")
        for cmd in calibrations + commands + [tables]:
            print(shlex.join(cmd))
        return 0
    problems = preflight(s.pretrained, s.tasks) + stops
    if problems:
        raise ConfigError("cannot start:\n  " + "\n  ".join(problems))
    for cmd in calibrations:
        print("+ " + shlex.join(cmd), flush=True)
        if subprocess.call(cmd) != 0:
            raise RunError(f"calibration failed: {shlex.join(cmd)}")
    for spec, cmd in zip(runs, commands):
        _run_one(spec, cmd, s)
    print("+ " + shlex.join(tables), flush=True)
    return subprocess.call(tables)


def _run_one(spec: RunSpec, cmd: list[str], s: Settings) -> None:
    run_dir = spec.folder(s.out)
    model_args = spec.model_args(s.pretrained)
    if not s.force and results_done(run_dir, s.tasks, model_args, s.limit):
        print(f"= {spec.name}: results present, skipped (FORCE=1 reruns it)", flush=True)
        return
    print("+ " + shlex.join(cmd), flush=True)
    rc = run_logged(cmd, run_dir / "lmms_eval.log")
    if rc != 0 or not results_done(run_dir, s.tasks, model_args, s.limit):
        raise RunError(f"run {spec.name} failed (exit {rc}; lmms-eval exits 0 even on failure and then "
                       f"writes no results file): see {run_dir / 'lmms_eval.log'}")
