"""`report/` only reads files: importing it pulls in no torch, no runner, no subprocess launcher."""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import dymu_eval.report


def test_report_imports_nothing_that_runs():
    modules = [f"dymu_eval.report.{m.name}" for m in pkgutil.iter_modules(dymu_eval.report.__path__)]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "bad = [m for m in sys.modules if m in ('torch', 'lmms_eval') or "
            "m.startswith(('dymu_eval.runs', 'dymu_eval.commands', 'dymu_eval.vision', 'dymu_eval.calibrate'))]\n"
            "print(','.join(sorted(bad)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_report_launches_no_process():
    for path in Path(dymu_eval.report.__path__[0]).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("subprocess", "multiprocessing") for n in names), path.name
