"""``make reproduce``: the DyMU paper's LLaVA-1.5 comparison matrix through the stock lmms-eval CLI.

Runs (one lmms-eval output folder each, under OUT): the unreduced baseline; ToMe at 21/16/8
merges per layer; DyMU low/mid/high; DyMU-low without VTU and ToMe (r=21) with VTU (Table 6);
the linear and reverse-linear schedules at mid (Table 5); FastV at its paper setting (K=2,
R=50%); DyMU-mid with Pixmo-Cap thresholds (Table 7). Then ``dymu-eval tables``.

Before anything starts it checks, with short timeouts, that the model is a local folder or
the hub is reachable, that lmms-eval's hub datasets can be read, and that every threshold
entry exists (calibrating missing ones from images the user points to, or stopping with the
``dymu-eval calibrate`` command that would make them). ``--dry-run`` prints every command.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DymuError
from ..merge.levels import KNOWN_LEVELS
from ..vocabulary import DEFAULT_THRESHOLDS, FASTV_K, FASTV_RATIO, LEVELS, LLAVA_15

DEFAULT_MODEL = LLAVA_15
# Table-2 image benchmarks lmms-eval scores without a paid judge (MMBench falls back to GPT,
# MM-Vet and LLaVA-Bench-in-the-Wild are GPT-judged).
DEFAULT_TASKS = "mme,gqa,pope,scienceqa_img,seedbench,textvqa_val"
TOME_R = KNOWN_LEVELS["clip-vit-l-14-336"]  # LLaVA-1.5's encoder (paper Table 2)


@dataclass
class RunSpec:
    """One lmms-eval invocation of the matrix."""

    name: str
    model: str
    args: dict[str, str]
    needs: list[tuple[str, str, str]] = field(default_factory=list)  # (dataset, level, schedule)

    def model_args(self, pretrained: str) -> str:
        return ",".join([f"pretrained={pretrained}"] + [f"{k}={v}" for k, v in self.args.items()])


def matrix(levels: list[str]) -> list[RunSpec]:
    """The paper's LLaVA-1.5 runs restricted to ``levels`` (baseline and FastV always)."""
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise ConfigError(f"LEVELS must be a comma list of {', '.join(LEVELS)}; got {','.join(levels) or 'nothing'}")
    runs = [RunSpec("baseline", "dymu_llava", {"level": "none"})]
    for lv in levels:
        runs.append(RunSpec(f"tome_r{TOME_R[lv]}", "tome_llava", {"r": str(TOME_R[lv])}))
    for lv in levels:
        runs.append(RunSpec(f"dymu_{lv}", "dymu_llava", {"level": lv, "thresholds": DEFAULT_THRESHOLDS},
                            [(DEFAULT_THRESHOLDS, lv, "constant")]))
    if "low" in levels:
        runs.append(RunSpec("dymu_low_no_vtu", "dymu_llava", {"level": "low", "thresholds": DEFAULT_THRESHOLDS,
                                                              "vtu": "false"}, [(DEFAULT_THRESHOLDS, "low", "constant")]))
        runs.append(RunSpec(f"tome_r{TOME_R['low']}_vtu", "tome_llava", {"r": str(TOME_R["low"]), "vtu": "true"}))
    if "mid" in levels:
        for sched in ("linear", "reverse_linear"):
            runs.append(RunSpec(f"dymu_mid_{sched}", "dymu_llava",
                                {"level": "mid", "thresholds": DEFAULT_THRESHOLDS, "schedule": sched},
                                [(DEFAULT_THRESHOLDS, "mid", sched)]))
        runs.append(RunSpec("dymu_mid_pixmo_cap", "dymu_llava", {"level": "mid", "thresholds": "pixmo_cap"},
                            [("pixmo_cap", "mid", "constant")]))
    runs.append(RunSpec(f"fastv_k{FASTV_K}_r{FASTV_RATIO:g}", "fastv_llava",
                        {"fastv_k": str(FASTV_K), "fastv_ratio": f"{FASTV_RATIO:g}"}))
    return runs


def lmms_command(spec: RunSpec, pretrained: str, tasks: str, out: Path, num_gpus: int, limit: str | None,
                 include_path: str) -> list[str]:
    cmd = ["accelerate", "launch", "--num_processes", str(num_gpus), "-m", "lmms_eval",
           "--model", spec.model, "--model_args", spec.model_args(pretrained), "--tasks", tasks,
           "--include_path", include_path, "--batch_size", "1", "--log_samples",
           "--output_path", str(out / spec.name)]
    if limit:
        cmd += ["--limit", str(limit)]
    return cmd


def calibrate_command(pretrained: str, dataset: str, level: str, schedule: str, images: str) -> list[str]:
    return [sys.executable, "-m", "dymu_eval.cli", "calibrate", "--encoder", pretrained, "--dataset", dataset,
            "--images", images, "--level", level, "--schedule", schedule, "--batch-size", "64"]


def _missing_thresholds(pretrained: str, runs: list[RunSpec]) -> dict[tuple[str, str, str], str]:
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
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(pretrained, "config.json"), str):
            return True, ""
    except Exception:  # an unusual id or cache layout: fall through to the hub check
        pass
    from ..fetch.net import hub_reachable

    ok, why = hub_reachable()
    return ok, "" if ok else (f"{pretrained} is not a local folder nor in the Hugging Face cache, and the hub is "
                              f"unreachable ({why}). Download it on a connected machine "
                              f"(`huggingface-cli download {pretrained}`) or pass MODEL=/path/to/local/folder")


def _preflight(pretrained: str, tasks: str) -> list[str]:
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


def _token_file() -> Path:
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "token"


def results_done(out_dir: Path, tasks: str) -> bool:
    """A previous run of this spec already produced results for every task (resume)."""
    import json

    for path in sorted(out_dir.rglob("*_results.json"), reverse=True):
        try:
            done = set(json.loads(path.read_text()).get("results", {}))
        except (OSError, ValueError):
            continue
        if set(tasks.split(",")) <= done:
            return True
    return False


def run_logged(cmd: list[str], log: Path, echo: bool = True) -> int:
    """Run ``cmd``, keeping its output in ``log`` (and echoing it unless ``echo`` is False); its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if echo:
                sys.stdout.write(line)
            fh.write(line)
        return proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--tasks", default=DEFAULT_TASKS)
    p.add_argument("--levels", default=",".join(LEVELS))
    p.add_argument("--limit", default="")
    p.add_argument("--out", default="runs/reproduce")
    p.add_argument("--num-gpus", type=int, default=1)
    p.add_argument("--calib-images", default="", help="image folder to calibrate missing llava_instruct thresholds")
    p.add_argument("--pixmo-images", default="", help="image folder to calibrate missing pixmo_cap thresholds "
                   "(get one with `dymu-eval fetch-images pixmo_cap --num 1000 --out DIR`)")
    p.add_argument("--dry-run", action="store_true", help="print every command, run nothing")
    p.add_argument("--force", action="store_true", help="rerun runs that already have results")
    a = p.parse_args(argv)
    try:
        return _main(a)
    except DymuError as exc:
        print(f"make reproduce: error: {exc}", file=sys.stderr)
        return 2


def _main(a: argparse.Namespace) -> int:
    from ..paths import tasks_dir

    if a.num_gpus < 1:
        raise ConfigError(f"NUM_GPUS must be at least 1, got {a.num_gpus}")
    tasks = ",".join(t.strip() for t in a.tasks.split(",") if t.strip())
    if not tasks:
        raise ConfigError("TASKS is empty")
    runs = matrix([lv.strip() for lv in a.levels.split(",") if lv.strip()])
    out = Path(a.out)
    include = str(tasks_dir())
    images = {"llava_instruct": a.calib_images, "pixmo_cap": a.pixmo_images}
    missing = _missing_thresholds(a.model, runs)
    calibrations, stops = [], []
    for (dataset, level, schedule), message in missing.items():
        if images.get(dataset):
            calibrations.append(calibrate_command(a.model, dataset, level, schedule, images[dataset]))
        elif a.dry_run:
            calibrations.append(calibrate_command(a.model, dataset, level, schedule,
                                                 f"<{dataset} images: {'CALIB_IMAGES' if dataset == 'llava_instruct' else 'PIXMO_IMAGES'}=DIR>"))
        else:
            var = "CALIB_IMAGES" if dataset == "llava_instruct" else "PIXMO_IMAGES"
            stops.append(f"{message}\n  or point `make reproduce` at the images with {var}=DIR")
    if stops:
        stops = [f"{len(stops)} threshold entr{'y is' if len(stops) == 1 else 'ies are'} missing:\n"
                 + "\n".join(stops)]
    commands = [lmms_command(r, a.model, tasks, out, a.num_gpus, a.limit or None, include) for r in runs]
    tables = [sys.executable, "-m", "dymu_eval.cli", "tables", *[str(out / r.name) for r in runs],
              "--out", str(out / "tables")]
    if a.dry_run:
        print(f"# {len(calibrations)} calibration(s), {len(runs)} lmms-eval run(s), then the tables")
        for cmd in calibrations + commands + [tables]:
            print(shlex.join(cmd))
        return 0
    problems = _preflight(a.model, tasks) + stops
    if problems:
        raise ConfigError("cannot start:\n  " + "\n  ".join(problems))
    for cmd in calibrations:
        print("+ " + shlex.join(cmd), flush=True)
        if subprocess.call(cmd) != 0:
            raise DymuError(f"calibration failed: {shlex.join(cmd)}")
    for spec, cmd in zip(runs, commands):
        run_dir = out / spec.name
        if not a.force and results_done(run_dir, tasks):
            print(f"= {spec.name}: results present, skipped (FORCE=1 reruns it)", flush=True)
            continue
        print("+ " + shlex.join(cmd), flush=True)
        rc = run_logged(cmd, run_dir / "lmms_eval.log")
        if rc != 0 or not results_done(run_dir, tasks):
            raise DymuError(f"run {spec.name} failed (exit {rc}; lmms-eval exits 0 even on failure and then "
                            f"writes no results file): see {run_dir / 'lmms_eval.log'}")
    print("+ " + shlex.join(tables), flush=True)
    return subprocess.call(tables)


if __name__ == "__main__":
    sys.exit(main())
