"""Ship the top-level tasks/ and thresholds/ folders with normal (non-editable) installs.

They live at the repository root (users pass ``--include_path tasks/``), so they are
installed as data files under ``<prefix>/share/dymu-eval/``; ``dymu_eval.paths`` finds
them there or, for editable installs, beside the package.
"""
import os

from setuptools import setup


def tree(root: str) -> list[tuple[str, list[str]]]:
    out = []
    for folder, _dirs, files in os.walk(root):
        if "__pycache__" in folder:
            continue
        keep = [os.path.join(folder, f) for f in sorted(files) if not f.endswith(".pyc")]
        if keep:
            out.append((os.path.join("share", "dymu-eval", folder), keep))
    return out


setup(data_files=tree("tasks") + tree("thresholds") + tree("results/reference"))
