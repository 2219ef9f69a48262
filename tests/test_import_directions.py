"""Import directions: core modules never reach into the demo package, the CLI or the run launchers."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "dymu_eval"


def _imports(path: Path) -> set[str]:
    """dymu_eval subpackages a module imports (relative and absolute imports alike)."""
    package = path.relative_to(PKG.parent).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            parts = base + (node.module.split(".") if node.module else [])
            if node.module is None:
                found |= {".".join(parts + [a.name]) for a in node.names}
            else:
                found.add(".".join(parts))
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {name.split(".")[1] for name in found if name.startswith("dymu_eval.") and name.count(".") >= 1}


@pytest.mark.parametrize("where, forbidden", [
    ("images.py", {"offline", "commands", "runs", "cli"}),
    ("vocabulary.py", {"merge", "vision", "language", "vlm", "lmms", "report", "commands", "runs"}),
    ("vision", {"offline", "commands", "runs", "cli", "report", "lmms"}),
    ("merge", {"vision", "language", "vlm", "lmms", "offline", "commands", "runs", "report"}),
    ("report", {"commands", "runs", "vision", "calibrate", "lmms", "vlm", "fetch", "offline", "cli"}),
])
def test_core_does_not_import_outward(where, forbidden):
    target = PKG / where
    files = [target] if target.is_file() else sorted(target.rglob("*.py"))
    for path in files:
        bad = _imports(path) & forbidden
        assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"
