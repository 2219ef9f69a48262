"""The environment lmms-eval subprocesses run in (the tiny models and thresholds are fixtures of
tests/conftest.py, the helpers that run lmms-eval are in lmms_runs.py)."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def lmms_env(tmp_path_factory) -> dict[str, str]:
    """Environment for lmms-eval subprocesses: offline, one thread, scratch caches."""
    scratch = tmp_path_factory.mktemp("lmms_home")
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               HF_HOME=str(scratch / "hf"), DYMU_EVAL_CACHE=str(scratch / "dymu_cache"), TOKENIZERS_PARALLELISM="false")
    return env
