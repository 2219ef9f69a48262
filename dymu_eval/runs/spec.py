"""One lmms-eval run: which plugin model, which model_args, and the command line that runs it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RunSpec:
    """One row of a comparison: a plugin model and its model_args (``pretrained`` is added at launch).

    ``needs`` lists the threshold cache entries (dataset, level, schedule) the run reads.
    """

    name: str
    model: str
    args: dict[str, str] = field(default_factory=dict)
    needs: tuple[tuple[str, str, str], ...] = ()

    def model_args(self, pretrained: str | Path, **extra: str) -> str:
        """lmms-eval's ``--model_args`` string for this run on ``pretrained``."""
        items = {"pretrained": str(pretrained), **self.args, **extra}
        return ",".join(f"{k}={v}" for k, v in items.items())

    def folder(self, root: str | Path) -> Path:
        """This run's ``--output_path`` under ``root`` (the name without spaces or slashes)."""
        return Path(root) / self.name.replace(" ", "_").replace("/", "_")


def lmms_eval_argv(spec: RunSpec, pretrained: str | Path, tasks: str, out_root: str | Path,
                   include_path: str | Path, limit: int | str | None = None,
                   num_processes: int | None = None) -> list[str]:
    """The command line for one run: this environment's lmms-eval, or ``accelerate launch`` over
    ``num_processes`` processes (``--include_path`` is required for the plugin's tasks)."""
    launcher = ([sys.executable, "-m", "lmms_eval"] if num_processes is None
                else ["accelerate", "launch", "--num_processes", str(num_processes), "-m", "lmms_eval"])
    argv = launcher + ["--model", spec.model, "--model_args", spec.model_args(pretrained), "--tasks", tasks,
                       "--include_path", str(include_path), "--batch_size", "1", "--log_samples",
                       "--output_path", str(spec.folder(out_root))]
    if limit not in (None, ""):
        argv += ["--limit", str(limit)]
    return argv


def results_done(out_dir: Path, tasks: str, model_args: str | None = None,
                 limit: int | float | str | None = None) -> bool:
    """A previous run already produced results for every task with these ``model_args`` (when
    given) and this ``--limit`` (resume). Results of another limit or other settings are stale:
    a full run never reuses the output of a ``LIMIT=2`` look."""
    for path in sorted(Path(out_dir).rglob("*_results.json"), reverse=True):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        config = report.get("config") or {}
        if not set(tasks.split(",")) <= set(report.get("results", {})):
            continue
        if model_args is not None and config.get("model_args") != model_args:
            continue
        if _limit_value(config.get("limit")) == _limit_value(limit):
            return True
    return False


def _limit_value(limit: int | float | str | None) -> float | None:
    """lmms-eval's ``--limit`` as it records it: None for every sample, else a float."""
    if limit in (None, "") or float(limit) < 0:
        return None
    return float(limit)


# the plugin model's own bar in lmms-eval's output, e.g. "dymu_llava generate:  40%|####  | 8/20 [...]"
_MODEL_BAR = re.compile(r"^\S+ (?:generate|loglikelihood): +\d+%\|[^|]*\| *\d+/\d+ \[[^\]]*\]")


def progress_line(line: str) -> str | None:
    """The model's progress bar when ``line`` starts with a refresh of it (what to show while a run
    lasts), else None. A log message written right after a refresh shares its line; it is cut off."""
    bar = _MODEL_BAR.match(line.strip())
    return bar.group(0) if bar else None


def run_logged(cmd: list[str], log: Path, echo: bool = True, progress: bool = False) -> int:
    """Run ``cmd``, keeping its output in ``log``; its exit code. ``echo`` shows all of the output;
    otherwise ``progress`` shows only the model's progress bar, redrawn on one line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = 0  # width of the bar on screen
    with open(log, "w", encoding="utf-8") as fh:
        # text mode reads tqdm's carriage-return refreshes as lines of their own
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if echo:
                sys.stdout.write(line)
            elif progress and (bar := progress_line(line)):
                sys.stdout.write(f"\r    {bar.ljust(shown)}")  # padded over a longer previous bar
                sys.stdout.flush()
                shown = max(shown, len(bar))
        if shown:
            sys.stdout.write("\n")
        return proc.wait()
