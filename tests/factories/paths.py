"""Where the repository and its bundled offline tasks are."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tasks"
