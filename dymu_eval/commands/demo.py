"""`dymu-eval demo` (what ``make demo`` runs): the whole pipeline offline on the micro LLaVA.

Steps, each skipped when its output already exists (``--force`` redoes them):

1. build (or verify) the micro LLaVA in the user cache (real DINOv2-S + SmolLM2 weights);
2. calibrate DToMe thresholds for its encoder at low/mid/high on a set disjoint from the
   evaluation images: the photos that wheels ship plus generated scenes with seeds the
   offline tasks never use;
3. run the stock lmms-eval CLI on the offline tasks for the baseline, ToMe at three levels,
   FastV, DyMU low/mid/high and DyMU-low without VTU;
4. write the comparison tables and plots (as ``dymu-eval tables``) and merge maps of a few
   photos (as ``dymu-eval tokens --maps``);
5. thresholds from two calibration sets (the paper's LLaVA-Instruct vs Pixmo-Cap, Figure 5):
   calibrate level mid on the photos alone and on the generated scenes alone, compare them
   with ``dymu-eval thresholds compare`` (per-layer thresholds, tokens on the evaluation
   images, a plot), and score DyMU-mid with each on the POPE-style task;
and say where everything is.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ..errors import ConfigError, DymuError
from ..vocabulary import LEVELS

CALIBRATION_DATASET = "offline_mix"
CALIBRATION_SCENES = 40
CALIBRATION_SEED0 = 900_000  # the offline tasks' scenes use small seeds; these never collide
CALIBRATION_BATCH = 8
# Two calibration domains standing in for LLaVA-Instruct vs Pixmo-Cap (sub-folders of the mix).
CALIBRATION_SETS = {"offline_photos": "photos", "offline_scenes": "scenes"}
COMPARE_LEVEL = "mid"
COMPARE_TASKS = ("dymu_pope_offline",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline offline on the micro LLaVA (what `make demo` runs)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/demo", help="tables, plots and merge maps (default results/demo)")
    p.add_argument("--runs", default="runs/demo", help="lmms-eval output folders (default runs/demo)")
    p.add_argument("--limit", type=int, help="samples per task (even, for the MME-style task); default all")
    p.add_argument("--force", action="store_true", help="recalibrate and rerun everything")
    p.set_defaults(func=run)


def calibration_images(folder: Path) -> Path:
    """Photos from installed wheels (``photos/``) and generated scenes of varied complexity
    (``scenes/``), as files; the whole folder is the mixed calibration set."""
    from ..offline.photos import sample_photos
    from ..offline.synthetic import make_scene

    for sub in CALIBRATION_SETS.values():
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name, path in sorted(sample_photos().items()):
        target = folder / CALIBRATION_SETS["offline_photos"] / f"photo_{name}{path.suffix.lower()}"
        if not target.exists():
            shutil.copyfile(path, target)
    for i in range(CALIBRATION_SCENES):
        target = folder / CALIBRATION_SETS["offline_scenes"] / f"scene_{i:03d}.png"
        if not target.exists():
            make_scene(CALIBRATION_SEED0 + i)[0].save(target)
    return folder


def ensure_thresholds(model_dir: Path, images: Path, force: bool, dataset: str = CALIBRATION_DATASET,
                      levels: tuple[str, ...] = LEVELS) -> None:
    """DToMe thresholds for the micro LLaVA's encoder at every level, in the user cache."""
    from ..cli import main as cli
    from ..thresholds import ThresholdCache

    for level in levels:
        if not force:
            try:
                ThresholdCache().lookup(str(model_dir), dataset, level=level, schedule="constant")
                print(f"[demo] thresholds {dataset} for level {level}: cached")
                continue
            except DymuError:
                pass
        print(f"[demo] calibrating thresholds {dataset} for level {level} on {images}")
        rc = cli(["calibrate", "--encoder", str(model_dir), "--dataset", dataset, "--images",
                  str(images), "--level", level, "--batch-size", str(CALIBRATION_BATCH), "--overwrite"])
        if rc != 0:
            raise DymuError(f"calibration {dataset} for level {level} failed (exit {rc})")


def merge_maps(model_dir: Path, out: Path) -> None:
    """PNG overlays of what DyMU-low merged in a few photos, with their token counts."""
    from ..cli import main as cli
    from ..offline.demo import merge_map_images
    from ..thresholds import ThresholdCache

    picked = out / "_photos"
    picked.mkdir(parents=True, exist_ok=True)
    for name, path in merge_map_images().items():
        shutil.copyfile(path, picked / f"{name}{path.suffix.lower()}")
    record = ThresholdCache().lookup(str(model_dir), CALIBRATION_DATASET, level="low", schedule="constant")
    rc = cli(["tokens", "--encoder", str(model_dir), "--images", str(picked), "--thresholds",
              str(record.source_path), "--json", str(out / "tokens.json"), "--maps", str(out)])
    shutil.rmtree(picked)
    if rc != 0:
        raise DymuError(f"merge maps failed (exit {rc})")


def run_specs(specs, model_dir: Path, runs_dir: Path, tasks: tuple[str, ...], limit: int | None,
              force: bool, section: str) -> list[Path]:
    """Run each spec through the stock lmms-eval CLI (resuming finished ones); their output folders."""
    from ..offline.demo import lmms_eval_argv
    from ..paths import tasks_dir
    from ..report.reproduce import results_done, run_logged

    run_dirs, failed = [], []
    for i, spec in enumerate(specs, 1):
        argv = lmms_eval_argv(spec, model_dir, runs_dir, tasks_dir(), tasks=tasks, limit=limit)
        argv = [sys.executable, "-m", "lmms_eval", *argv[1:]]  # this environment's lmms-eval
        run_dir = Path(argv[argv.index("--output_path") + 1])
        run_dirs.append(run_dir)
        if not force and results_done(run_dir, ",".join(tasks)):
            print(f"[demo] {section} ({i}/{len(specs)}) {spec.label}: results exist, skipped (--force reruns)")
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)
        print(f"[demo] {section} ({i}/{len(specs)}) {spec.label}: lmms-eval --model {spec.model} "
              f"--model_args {spec.model_args(Path(f'<{section}>'))}", flush=True)
        t0 = time.time()
        rc = run_logged(argv, run_dir / "lmms_eval.log", echo=False)
        if rc != 0 or not results_done(run_dir, ",".join(tasks)):
            failed.append(spec.label)
            print(f"[demo] {spec.label} FAILED; see {run_dir / 'lmms_eval.log'}", file=sys.stderr)
        else:
            print(f"[demo]     finished in {time.time() - t0:.0f} s; log: {run_dir / 'lmms_eval.log'}", flush=True)
    if failed:
        raise DymuError(f"lmms-eval failed for {', '.join(failed)}; logs: {runs_dir}/<run>/lmms_eval.log")
    return run_dirs


def compare_calibration_sets(model_dir: Path, images: Path, out: Path, runs_dir: Path, limit: int | None,
                             force: bool, context: list[Path] = ()) -> Path:
    """Thresholds from the photos alone vs the scenes alone: table, plot, tokens and scores.

    ``context``: finished runs (the baseline, DyMU-mid on the mixed set) shown in the same table.
    """
    from ..cli import main as cli
    from ..offline.demo import compare_runs
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
        raise DymuError(f"thresholds compare failed (exit {rc})")
    run_dirs = run_specs(compare_runs(list(CALIBRATION_SETS), COMPARE_LEVEL), model_dir, runs_dir, COMPARE_TASKS,
                         limit, force, "calibration sets")
    make_report([*context, *run_dirs], folder / "tables", reference="none")
    return folder


def run(args: argparse.Namespace) -> int:
    from ..offline.demo import DEMO_TASKS, demo_model, demo_runs
    from ..paths import user_cache_dir
    from ..report.build import make_report

    started = time.time()
    out, runs_dir = Path(args.out), Path(args.runs)
    if args.limit is not None and (args.limit < 2 or args.limit % 2):
        raise ConfigError(f"--limit must be an even number >= 2 (the MME-style task scores pairs), got {args.limit}")
    print("[demo] building / verifying the micro LLaVA")
    model_dir = demo_model()
    print(f"[demo] model: {model_dir}")
    images = calibration_images(user_cache_dir() / "demo" / "calibration_sets")
    ensure_thresholds(model_dir, images, args.force)
    specs = demo_runs(CALIBRATION_DATASET)
    run_dirs = run_specs(specs, model_dir, runs_dir, DEMO_TASKS, args.limit, args.force, "micro-llava")
    by_label = {spec.label: path for spec, path in zip(specs, run_dirs)}
    tables = out / "tables"
    make_report(run_dirs, tables)
    merge_maps(model_dir, out / "maps")
    compared = compare_calibration_sets(model_dir, images, out, runs_dir / "calibration_sets", args.limit, args.force,
                                        [by_label["baseline"], by_label[f"DyMU-{COMPARE_LEVEL}"]])
    print(f"\n[demo] done in {(time.time() - started) / 60:.1f} min")
    print(f"[demo] lmms-eval outputs: {runs_dir}/<run>/")
    print(f"[demo] tables and plots:  {tables}/")
    print(f"[demo] merge maps:        {out / 'maps'}/")
    print(f"[demo] calibration sets:  {compared}/ (thresholds_compare.png, tables/)")
    for path in sorted(tables.glob("*.md")):
        print(f"\n{path.read_text()}")
    print(f"\nThresholds from two calibration sets (level {COMPARE_LEVEL}):")
    print((compared / "tokens_summary.csv").read_text())
    for path in sorted((compared / "tables").glob("*.md")):
        print(path.read_text())
    return 0
