"""Run lmms-eval as a subprocess (as users do) and read what it wrote."""
from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

from tests.factories import ROOT, TASKS

VENV_BIN = Path(sys.executable).parent


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
