"""The demo (`dymu-eval demo`, ``make demo``): the whole pipeline offline on the micro LLaVA and OneVision.

Steps, each skipped when its output already exists (``force`` redoes them):

1. build (or verify) the micro LLaVA in the user cache (real DINOv2-S + SmolLM2 weights);
2. calibrate DToMe thresholds for its encoder at low/mid/high on a set disjoint from the
   evaluation images: the photos that wheels ship plus generated scenes with seeds the
   offline tasks never use;
3. run the stock lmms-eval CLI on the offline tasks for the baseline, ToMe at three levels,
   FastV, the fixed-budget baselines (random, 2x2 pooling, VisionZip), DyMU low/mid/high and
   DyMU-low without VTU;
4. write the comparison tables and plots (as ``dymu-eval tables``) and merge maps of a few
   photos (as ``dymu-eval tokens --maps``);
5. thresholds from two calibration sets (the paper's LLaVA-Instruct vs Pixmo-Cap, Figure 5):
   calibrate level mid on the photos alone and on the generated scenes alone, compare them
   with ``dymu-eval thresholds compare`` (per-layer thresholds, tokens on the evaluation
   images, a plot), and score DyMU-mid with each on the POPE-style task;
6. the OneVision section (:mod:`dymu_eval.runs.demo_onevision`): the micro OneVision with its
   own thresholds, baseline, ToMe, FastV and DyMU low/mid/high on an AnyRes image task and the
   video task (a few samples each), tables, tokens per frame vs clip complexity, frame merge maps;
7. the LLaVA-NeXT section (:mod:`dymu_eval.runs.demo_next`): the micro LLaVA-NeXT with its own
   thresholds, baseline, DyMU low/mid, ToMe-mid, FastV and VisionZip on the AnyRes image task, tables;
and say where everything is.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from ..errors import DymuError, RunError
from ..vocabulary import DEFAULT_METHOD, DEFAULT_SCHEDULE, LEVELS
from .demo_next import NEXT_LIMIT, next_section
from .demo_onevision import ONEVISION_LIMIT, onevision_section
from .demo_plan import section_runs
from .spec import RunSpec, lmms_eval_argv, results_done, run_logged

DEMO_TASKS = ("dymu_pope_offline", "dymu_mme_offline", "dymu_gqa_offline")
CALIBRATION_DATASET = "offline_mix"
CALIBRATION_SCENES = 40
CALIBRATION_SEED0 = 900_000  # the offline tasks' scenes use small seeds; these never collide
CALIBRATION_BATCH = 8
# Two calibration domains standing in for LLaVA-Instruct vs Pixmo-Cap (sub-folders of the mixed set).
CALIBRATION_SETS = {"offline_photos": "photos", "offline_scenes": "scenes"}
COMPARE_LEVEL = "mid"
COMPARE_TASKS = ("dymu_pope_offline",)
MERGE_MAP_PHOTOS = ("chelsea", "astronaut", "coffee", "hubble_deep_field")
# Questions per task when the user gives neither --limit nor --full: the first 36 of each LLaVA task
# (POPE 18 yes / 18 no, MME 18 pairs, GQA 36), so that the whole `make demo` stays within 35 minutes on
# the slower 2-core machines (an AVX2-only one took 57 minutes for every question; see the README).
LLAVA_LIMIT = 36


def section_limit(default: int, limit: int | None, full: bool) -> int | None:
    """Questions per task for a section: every one with ``full``, else the user's ``limit``, else the
    section's ``default``."""
    return None if full else (default if limit is None else limit)


def demo_runs(thresholds: str = CALIBRATION_DATASET) -> list[RunSpec]:
    """Every registered method's runs of the main section (the built-ins: baseline, random, 2x2 pooling,
    FastV, VisionZip, ToMe and DyMU at three levels, DyMU-low without VTU; the fixed budgets keep 64
    of the micro LLaVA's 256 patch tokens each)."""
    return section_runs("llava", thresholds, LEVELS, main=True)


def compare_runs(datasets: list[str], level: str = COMPARE_LEVEL) -> list[RunSpec]:
    """DyMU at one level with thresholds from each calibration set (the paper's Figure 5 rows)."""
    return [RunSpec(f"DyMU-{level} ({ds})", f"{DEFAULT_METHOD}_llava",
                    {"method": DEFAULT_METHOD, "level": level, "thresholds": ds}) for ds in datasets]


def demo_model() -> Path:
    """The micro LLaVA folder (built in the user cache on first use, with the shipped projector)."""
    from ..offline.micro_llava import build_micro_llava

    return build_micro_llava("shipped")


def merge_map_images() -> dict[str, Path]:
    """A few photos of different complexity for the merge-map pictures."""
    from ..offline.photos import sample_photos

    return sample_photos(list(MERGE_MAP_PHOTOS))


def calibration_images(folder: Path) -> Path:
    """Photos from installed wheels (``photos/``) and generated scenes of varied complexity
    (``scenes/``), as files; the whole folder is the mixed calibration set."""
    from ..offline.photos import sample_photos
    from ..offline.synthetic import make_scene

    photos, scenes = (folder / CALIBRATION_SETS[k] for k in ("offline_photos", "offline_scenes"))
    for sub in (photos, scenes):
        sub.mkdir(parents=True, exist_ok=True)
    for name, path in sorted(sample_photos().items()):
        target = photos / f"photo_{name}{path.suffix.lower()}"
        if not target.exists():
            shutil.copyfile(path, target)
    for i in range(CALIBRATION_SCENES):
        target = scenes / f"scene_{i:03d}.png"
        if not target.exists():
            make_scene(CALIBRATION_SEED0 + i)[0].save(target)
    return folder


def ensure_thresholds(model_dir: Path, images: Path, force: bool, dataset: str = CALIBRATION_DATASET,
                      levels: tuple[str, ...] = LEVELS) -> None:
    """DToMe thresholds of ``dataset`` for the model's encoder at ``levels``, in the user cache."""
    from ..cli import main as cli
    from ..thresholds import ThresholdCache

    for level in levels:
        if not force:
            try:
                ThresholdCache().lookup(str(model_dir), dataset, level=level, schedule=DEFAULT_SCHEDULE)
                print(f"[demo] thresholds {dataset} for level {level}: cached")
                continue
            except DymuError:
                pass
        print(f"[demo] calibrating thresholds {dataset} for level {level} on {images}")
        rc = cli(["calibrate", "--encoder", str(model_dir), "--dataset", dataset, "--images",
                  str(images), "--level", level, "--batch-size", str(CALIBRATION_BATCH), "--overwrite"])
        if rc != 0:
            raise RunError(f"calibration {dataset} for level {level} failed (exit {rc})")


def tokens_maps(model_dir: Path, picked: Path, out: Path, dataset: str = CALIBRATION_DATASET) -> None:
    """``dymu-eval tokens --maps``: DyMU-low (thresholds of ``dataset``) merge maps and token counts of
    the images in ``picked`` into ``out``; ``picked`` is removed afterwards."""
    from ..cli import main as cli
    from ..thresholds import ThresholdCache

    record = ThresholdCache().lookup(str(model_dir), dataset, level="low", schedule=DEFAULT_SCHEDULE)
    rc = cli(["tokens", "--encoder", str(model_dir), "--images", str(picked), "--thresholds",
              str(record.source_path), "--json", str(out / "tokens.json"), "--maps", str(out)])
    shutil.rmtree(picked)
    if rc != 0:
        raise RunError(f"merge maps of {picked} failed (exit {rc})")


def merge_maps(model_dir: Path, out: Path) -> None:
    """PNG overlays of what DyMU-low merged in a few photos, with their token counts."""
    picked = out / "_photos"
    picked.mkdir(parents=True, exist_ok=True)
    for name, path in merge_map_images().items():
        shutil.copyfile(path, picked / f"{name}{path.suffix.lower()}")
    tokens_maps(model_dir, picked, out)


def run_specs(runs: list[RunSpec], model_dir: Path, runs_dir: Path, limit: int | None, force: bool,
              tasks: tuple[str, ...] = DEMO_TASKS, section: str = "micro-llava") -> list[Path]:
    """Run every spec not yet done (one lmms-eval process each); their output folders."""
    from ..paths import tasks_dir

    tasks = ",".join(tasks)
    run_dirs, failed = [], []
    for i, spec in enumerate(runs, 1):
        run_dir = spec.folder(runs_dir)
        run_dirs.append(run_dir)
        model_args = spec.model_args(model_dir)
        if not force and results_done(run_dir, tasks, model_args, limit):
            print(f"[demo] {section} ({i}/{len(runs)}) {spec.name}: results exist, skipped (--force reruns)")
            continue
        if run_dir.exists():
            if not force:
                print(f"[demo] {spec.name}: {run_dir} holds no results of these settings and limit; rerunning")
            shutil.rmtree(run_dir)
        print(f"[demo] {section} ({i}/{len(runs)}) {spec.name}: lmms-eval --model {spec.model} "
              f"--model_args {spec.model_args(f'<{section}>')}", flush=True)
        t0 = time.time()
        rc = run_logged(lmms_eval_argv(spec, model_dir, tasks, runs_dir, tasks_dir(), limit), run_dir / "lmms_eval.log",
                        echo=False, progress=sys.stdout.isatty())  # a redrawn bar only on a terminal
        if rc != 0 or not results_done(run_dir, tasks, model_args, limit):
            failed.append(spec.name)
            print(f"[demo] {spec.name} FAILED; see {run_dir / 'lmms_eval.log'}", file=sys.stderr)
        else:
            print(f"[demo]     finished in {time.time() - t0:.0f} s; log: {run_dir / 'lmms_eval.log'}", flush=True)
    if failed:
        raise RunError(f"lmms-eval failed for {', '.join(failed)}; logs: {runs_dir}/<run>/lmms_eval.log")
    return run_dirs


def compare_calibration_sets(model_dir: Path, images: Path, out: Path, runs_dir: Path, limit: int | None,
                             force: bool, context: tuple[Path, ...] = ()) -> Path:
    """Thresholds from the photos alone vs the scenes alone: table, plot, tokens and scores.

    ``context``: finished runs (the baseline, DyMU-mid on the mixed set) shown in the same table.
    """
    from ..cli import main as cli
    from ..paths import tasks_dir
    from ..report.build import make_report

    for dataset, sub in CALIBRATION_SETS.items():
        ensure_thresholds(model_dir, images / sub, force, dataset=dataset, levels=(COMPARE_LEVEL,))
    folder = out / "thresholds_compare"
    print(f"[demo] thresholds compare: {' vs '.join(CALIBRATION_SETS)} (level {COMPARE_LEVEL})", flush=True)
    rc = cli(["thresholds", "compare", "--encoder", str(model_dir), "--datasets", ",".join(CALIBRATION_SETS),
              "--level", COMPARE_LEVEL, "--images", str(tasks_dir() / "dymu_offline" / "images"),
              "--batch-size", str(CALIBRATION_BATCH), "--out", str(folder), "--no-progress"])
    if rc != 0:
        raise RunError(f"thresholds compare failed (exit {rc})")
    run_dirs = run_specs(compare_runs(list(CALIBRATION_SETS)), model_dir, runs_dir, limit, force, COMPARE_TASKS,
                         "calibration sets")
    make_report([*context, *run_dirs], folder / "tables", reference="none")
    return folder


def demo(out: Path, runs_dir: Path, limit: int | None = None, force: bool = False, full: bool = False) -> None:
    """All the steps; prints where everything is and the tables. ``limit``: questions per task in
    every section (default: each section's own, ``section_limit``); ``full``: every question."""

    from ..paths import user_cache_dir
    from ..report.build import make_report

    started = time.time()
    print("[demo] building / verifying the micro LLaVA")
    model_dir = demo_model()
    print(f"[demo] model: {model_dir}")
    images = calibration_images(user_cache_dir() / "demo" / "calibration_sets")
    ensure_thresholds(model_dir, images, force)
    specs = demo_runs(CALIBRATION_DATASET)
    llava_limit = section_limit(LLAVA_LIMIT, limit, full)
    run_dirs = run_specs(specs, model_dir, runs_dir, llava_limit, force)
    tables = out / "tables"
    make_report(run_dirs, tables)
    merge_maps(model_dir, out / "maps")
    by_name = {spec.name: path for spec, path in zip(specs, run_dirs)}
    compared = compare_calibration_sets(model_dir, images, out, runs_dir / "calibration_sets", llava_limit, force,
                                        (by_name["baseline"], by_name[f"DyMU-{COMPARE_LEVEL}"]))
    onevision = onevision_section(images, CALIBRATION_DATASET, out / "onevision", runs_dir / "onevision",
                                  section_limit(ONEVISION_LIMIT, limit, full), force)
    nxt = next_section(images, CALIBRATION_DATASET, out / "next", runs_dir / "next",
                       section_limit(NEXT_LIMIT, limit, full), force)
    print(f"\n[demo] done in {(time.time() - started) / 60:.1f} min")
    print(f"[demo] lmms-eval outputs: {runs_dir}/<run>/")
    print(f"[demo] tables and plots:  {tables}/")
    print(f"[demo] merge maps:        {out / 'maps'}/")
    print(f"[demo] calibration sets:  {compared}/ (thresholds_compare.png, tables/)")
    print(f"[demo] OneVision:         {onevision['tables']}/, {onevision['plot']}, merge maps {onevision['maps']}/")
    print(f"[demo] LLaVA-NeXT:        {nxt['tables']}/")
    for path in sorted(tables.glob("*.md")):
        print(f"\n{path.read_text()}")
    print(f"\nThresholds from two calibration sets (level {COMPARE_LEVEL}), tokens on the task images:")
    print((compared / "tokens_summary.csv").read_text())
    for path in sorted((compared / "tables").glob("*.md")):
        print(path.read_text())
    print("\nLLaVA-OneVision (micro): AnyRes images and video")
    for path in sorted(onevision["tables"].glob("*.md")):
        print(path.read_text())
    print("\nLLaVA-NeXT (micro): AnyRes images")
    for path in sorted(nxt["tables"].glob("*.md")):
        print(path.read_text())
