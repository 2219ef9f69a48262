"""Real lmms-eval runs of the offline tasks on a tiny random LLaVA, made once per session.

The aggregator is tested on what lmms-eval and the plugin actually write, never on
hand-written files. Layout (each an lmms-eval --output_path):

    base/     dymu_llava level=none           pope, mme, gqa   --limit 4
    main/     tome_llava r=4                   pope, mme, gqa   --limit 4
              tome_llava r=4 again (newer)     pope             --limit 2   -> duplicate of pope
              dymu_llava thresholds=<file>     pope, mme        --limit 4
    failed/   dymu_llava level=none           mme              --limit 3   -> MME pairing assert, no results
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TASKS = "dymu_pope_offline,dymu_mme_offline,dymu_gqa_offline"


def _tiny_llava_builder():
    spec = importlib.util.spec_from_file_location("tiny_llava_for_report",
                                                  ROOT / "tests" / "llava_lmms" / "tiny_llava.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.build_tiny_llava


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(home),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", DYMU_EVAL_CACHE=str(home / "dymu"))
    return env


def lmms_eval(model: str, model_args: str, tasks: str, limit: int, out: Path, env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "lmms_eval", "--model", model, "--model_args", f"{model_args},device_map=cpu",
           "--device", "cpu", "--tasks", tasks, "--include_path", str(ROOT / "tasks"), "--limit", str(limit),
           "--log_samples", "--output_path", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="session")
def lmms_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lmms_runs")
    env = _env(root / "home")
    model = _tiny_llava_builder()(root / "tiny_llava", ROOT / "tasks")
    thresholds = root / "thresholds_offline.json"
    subprocess.run([sys.executable, "-m", "dymu_eval.cli", "calibrate", "--encoder", str(model), "--dataset",
                    "offline_tasks", "--images", str(ROOT / "tasks" / "dymu_offline" / "images"), "--r", "10",
                    "--batch-size", "8", "--stats-images", "0", "--no-progress", "--out", str(thresholds)],
                   env=env, check=True, capture_output=True, timeout=300)
    pre = f"pretrained={model}"
    lmms_eval("dymu_llava", f"{pre},level=none", TASKS, 4, root / "base", env)
    lmms_eval("tome_llava", f"{pre},r=4", TASKS, 4, root / "main", env)
    time.sleep(1.1)  # result files are named by the second they start
    lmms_eval("tome_llava", f"{pre},r=4", "dymu_pope_offline", 2, root / "main", env)
    lmms_eval("dymu_llava", f"{pre},thresholds={thresholds}", "dymu_pope_offline,dymu_mme_offline", 4,
              root / "main", env)
    lmms_eval("dymu_llava", f"{pre},level=none", "dymu_mme_offline", 3, root / "failed", env)
    return {"root": root, "base": root / "base", "main": root / "main", "failed": root / "failed", "model": model}
