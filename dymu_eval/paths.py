"""Where the project's data folders live, for editable and normal installs alike.

The top-level ``tasks/``, ``thresholds/`` and ``results/reference/`` folders sit beside the
package in a checkout (editable install) and under ``<prefix>/share/dymu-eval/`` after a
normal install (see setup.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import InstallError

_PACKAGE_ROOT = Path(__file__).resolve().parent
_SHARE = Path(sys.prefix) / "share" / "dymu-eval"


def _data_dir(name: str) -> Path:
    for base in (_PACKAGE_ROOT.parent, _SHARE):
        candidate = base / name
        if candidate.is_dir():
            return candidate
    raise InstallError(
        f"dymu-eval data folder '{name}' not found beside the package ({_PACKAGE_ROOT.parent}) "
        f"or in {_SHARE}; reinstall dymu-eval"
    )


def tasks_dir() -> Path:
    """The folder to pass to lmms-eval as ``--include_path``."""
    return _data_dir("tasks")


def thresholds_dir() -> Path:
    """Shipped threshold files (one JSON each)."""
    return _data_dir("thresholds")


def reference_dir() -> Path:
    """Reported numbers from papers, kept as data."""
    return _data_dir(os.path.join("results", "reference"))


def user_cache_dir() -> Path:
    """Per-user cache (thresholds, converted weights); ``DYMU_EVAL_CACHE`` overrides it."""
    root = os.environ.get("DYMU_EVAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dymu-eval"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
