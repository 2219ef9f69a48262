"""Discover lmms-eval runs on disk, pair them with the plugin's stats, resolve duplicates.

Layout read (lmms-eval 0.7.3): ``<output_path>/<model_name_sanitized>/<stamp>_results.json``
and ``<stamp>_samples_<task>.jsonl``; the plugin writes ``<output_path>/dymu_stats/
<run_stamp>_rank<k>.jsonl`` (or ``stats_dir=`` from model_args). lmms-eval exits 0 when an
evaluation fails and then writes no results file, so a run folder without one, or stats that
no results file accounts for, is reported as a failed run naming the folder or stats file.

Pairing uses what the files say, never file times (a copy need not keep them): a results file
takes the newest stats group in its output folder that is the same run, i.e. the same model,
its tasks among the results' tasks, the same ``model_args`` string (recorded in each stats row;
older rows: the same described configuration and checkpoint), and a run stamp (the launcher
process's start) no later than the results stamp (lmms-eval's start, same time zone). Its rows
must then cover each task's scored samples (``n-samples``).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RunError
from .benchmarks import task_metrics
from .labels import RunConfig, agrees, describe, family_of, finalize, parse_model_args

STATS_DIRNAME = "dymu_stats"
# Fields the tables read from every stats row; the plugin always writes them (null when unknown).
REQUIRED_STATS_FIELDS = ("task", "doc_id", "model", "method", "pretrained", "visual_tokens_before",
                         "visual_tokens_after", "llm_rows")
INCOMPLETE_MARK = "[incomplete stats]"
_CLOCK = re.compile(r"\d{8}_\d{6}")
_REDACTED = "[REDACTED]"  # lmms-eval's stand-in for secret-looking model_args values


def clock_of(stamp: object) -> str | None:
    """``YYYYMMDD_HHMMSS`` at the start of a run or results stamp (compares as a time), else None."""
    text = str(stamp or "")
    return text[:15] if _CLOCK.match(text) else None


@dataclass
class StatsGroup:
    """All per-sample stats rows of one plugin run (one run stamp, any number of ranks)."""

    run_stamp: str
    files: list[Path]
    rows: list[dict]
    used: bool = False

    @property
    def clock(self) -> str | None:
        return clock_of(self.run_stamp)

    @property
    def model(self) -> str:
        return str(self.rows[0].get("model") or "dymu_llava")

    @property
    def model_args(self) -> str | None:
        """The run's ``--model_args`` as typed (None in rows written before it was recorded, or without it)."""
        value = self.rows[0].get("model_args")
        return None if value is None else str(value)

    def describe(self) -> dict[str, str | None]:
        return describe(self.model, self.rows[0])

    def tasks(self) -> set[str]:
        return {str(r.get("task")) for r in self.rows}

    def label(self) -> str:
        return finalize(self.model, family_of(str(self.rows[0].get("pretrained") or "")), self.describe()).label()


@dataclass
class ResultFile:
    """One lmms-eval results JSON with its sample files."""

    path: Path
    stamp: str
    model: str
    model_args: dict[str, str]
    model_args_text: str | None  # config.model_args when it was a string (the CLI's --model_args)
    results: dict[str, dict]
    n_samples: dict[str, int]
    limit: object
    samples: dict[str, Path]
    stats: StatsGroup | None = None
    config: RunConfig | None = None

    @property
    def clock(self) -> str | None:
        return clock_of(self.stamp)

    @property
    def output_path(self) -> Path:
        return self.path.parent.parent if self.path.parent.name != STATS_DIRNAME else self.path.parent


@dataclass
class TaskResult:
    """The winning (newest) result of one configuration on one task."""

    task: str
    metrics: dict[str, object]
    n: int
    source: ResultFile
    stats_rows: list[dict] = field(default_factory=list)

    @property
    def stats_short(self) -> bool:
        """The run wrote stats, but not one row per scored sample (a rank's file lost, a cut file)."""
        return self.source.stats is not None and self.task in self.source.n_samples and len(self.stats_rows) != self.n


@dataclass
class MeasuredRun:
    """One table row: a configuration and its newest result per task."""

    config: RunConfig
    tasks: dict[str, TaskResult]

    def stats_rows(self) -> list[dict]:
        return [r for t in self.tasks.values() for r in t.stats_rows]

    def incomplete(self) -> list[str]:
        """One line per results file whose stats miss samples: the run, each short task's counts, the files."""
        short: dict[Path, list[TaskResult]] = {}
        for tr in sorted(self.tasks.values(), key=lambda t: t.task):
            if tr.stats_short:
                short.setdefault(tr.source.path, []).append(tr)
        return [_shortfall(self.config, trs) for trs in short.values()]


def _shortfall(config: RunConfig, short: list[TaskResult]) -> str:
    rf = short[0].source
    assert rf.stats is not None
    counts = ", ".join(f"{len(t.stats_rows)} of the {t.n} scored samples of task {t.task}" for t in short)
    return (f"run {config.label()}: per-sample stats for {counts} (results {rf.path}; stats "
            f"{', '.join(map(str, rf.stats.files))}): a rank's stats file is missing or the file was cut short")


@dataclass
class Collection:
    runs: list[MeasuredRun]
    warnings: list[str]


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read lmms-eval results file {path}: {exc}") from exc
    if not isinstance(data, dict) or "results" not in data:
        raise RunError(f"{path} is not an lmms-eval results file (no 'results' key)")
    if not isinstance(data["results"], dict):
        raise RunError(f"{path}: 'results' is {json.dumps(data['results'])[:40]}, not the table of task results "
                       f"lmms-eval writes")
    if not isinstance(data.get("config"), dict) or not data["config"].get("model"):
        raise RunError(f"{path}: no 'config' with the model name (lmms-eval records config.model and "
                       f"config.model_args), so the run that wrote it cannot be told")
    return data


def _read_rows(path: Path) -> tuple[list[tuple[int, dict]], int | None]:
    """(line number, row) of each line, and the number of a cut-off last line (no newline, not JSON)."""
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    if not line.endswith("\n"):  # only the last line can lack its newline
                        return rows, lineno
                    raise RunError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise RunError(f"{path}:{lineno}: expected a JSON object per line")
                rows.append((lineno, row))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"cannot read {path}: {exc}") from exc
    return rows, None


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a bad line raises an error naming the file and line."""
    rows, cut = _read_rows(path)
    if cut is not None:
        raise RunError(f"{path}:{cut}: not valid JSON (the last line is cut off)")
    return [row for _, row in rows]


def read_stats_file(path: Path, warnings: list[str]) -> list[dict]:
    """Rows of one plugin stats file. A cut-off last line (a run killed while writing) is skipped
    with a warning; a row without a field the tables read is an error naming file, line and field."""
    rows, cut = _read_rows(path)
    if cut is not None:
        warnings.append(f"{path}:{cut}: skipped the cut-off last line (the run was stopped while writing it)")
    for lineno, row in rows:
        missing = [name for name in REQUIRED_STATS_FIELDS if name not in row]
        if missing:
            raise RunError(f"{path}:{lineno}: stats row has no {', '.join(missing)} field(s); dymu-eval's "
                           f"plugin writes every one (docs/plugin.md), so this file is from elsewhere or edited")
    return [row for _, row in rows]


def _n_samples(path: Path, data: dict) -> dict[str, int]:
    """Scored samples per task (``n-samples``: effective, i.e. after --limit)."""
    out = {}
    for task, counts in (data.get("n-samples") or {}).items():
        if isinstance(counts, dict):
            try:
                out[task] = int(counts.get("effective", counts.get("original", 0)) or 0)
            except (TypeError, ValueError) as exc:
                raise RunError(f"{path}: n-samples of {task} is {counts!r}, not a count") from exc
    return out


def load_result_file(path: Path) -> ResultFile:
    data = _read_json(path)
    stamp = path.name[: -len("_results.json")]
    cfg = data["config"]
    samples = {}
    prefix = f"{stamp}_samples_"
    for sample_path in path.parent.glob(f"{prefix}*.jsonl"):
        samples[sample_path.name[len(prefix): -len(".jsonl")]] = sample_path
    results = {t: r for t, r in data["results"].items() if isinstance(r, dict)}
    raw_args = cfg.get("model_args")
    return ResultFile(path=path, stamp=stamp, model=str(cfg["model"]),
                      model_args=parse_model_args(raw_args), model_args_text=raw_args if isinstance(raw_args, str)
                      else None, results=results, n_samples=_n_samples(path, data), limit=cfg.get("limit"),
                      samples=samples)


def _stamp_time(stamp: str) -> float | None:
    """Seconds of a ``YYYYMMDD_HHMMSS[...]`` run stamp (read as UTC: only differences matter), else None."""
    import calendar
    import time

    clock = clock_of(stamp)
    return float(calendar.timegm(time.strptime(clock, "%Y%m%d_%H%M%S"))) if clock else None


def load_stats_dir(stats_dir: Path, warnings: list[str], launch_window_s: float = 120.0) -> list[StatsGroup]:
    """Stats rows under ``stats_dir``, one group per run (all ranks of one launch together).

    All ranks of a run share its stamp; files of the same configuration with disjoint ranks
    stamped within ``launch_window_s`` of each other are also taken as one multi-process launch.
    """
    per_stamp: dict[str, StatsGroup] = {}
    for path in sorted(stats_dir.glob("*.jsonl")):
        for row in read_stats_file(path, warnings):
            stamp = str(row.get("run_stamp") or path.stem.rsplit("_rank", 1)[0])
            grp = per_stamp.setdefault(stamp, StatsGroup(stamp, [], []))
            if path not in grp.files:
                grp.files.append(path)
            grp.rows.append(row)
    launches: list[tuple[float | None, set, tuple, StatsGroup]] = []
    for grp in sorted(per_stamp.values(), key=lambda g: (g.clock or "", g.run_stamp)):
        start = _stamp_time(grp.run_stamp)
        ranks = {r.get("rank", 0) for r in grp.rows}
        desc = tuple(sorted((k, str(v)) for k, v in grp.describe().items())) + (
            str(grp.rows[0].get("pretrained")), grp.model, str(grp.model_args))
        for i, (t0, seen, d, launch) in enumerate(launches):
            if (d == desc and not (ranks & seen) and start is not None and t0 is not None
                    and start - t0 <= launch_window_s):
                launch.files += grp.files
                launch.rows += grp.rows
                launches[i] = (t0, seen | ranks, d, launch)
                break
        else:
            launches.append((start, ranks, desc, grp))
    return [launch for _t, _s, _d, launch in launches]


def _stats_dirs_for(rf: ResultFile) -> list[Path]:
    if rf.model_args.get("stats_dir"):
        return [Path(rf.model_args["stats_dir"])]
    return [rf.path.parent.parent / STATS_DIRNAME, rf.path.parent / STATS_DIRNAME]


def _same_model_args(recorded: str, results: dict[str, str]) -> bool:
    """The stats' ``--model_args`` against the results' ``config.model_args`` (lmms-eval may redact values)."""
    mine = parse_model_args(recorded)
    return mine.keys() == results.keys() and all(_REDACTED in v or mine[k] == v for k, v in results.items())


def _same_run(rf: ResultFile, grp: StatsGroup) -> bool:
    """Whether ``grp`` can hold the per-sample stats of the run that wrote ``rf`` (module docstring)."""
    if grp.model != rf.model or not grp.tasks() <= set(rf.results):
        return False
    if rf.clock and grp.clock and grp.clock > rf.clock:  # started after lmms-eval stamped these results
        return False
    if grp.model_args is not None and rf.model_args_text is not None:
        return _same_model_args(grp.model_args, rf.model_args)
    pretrained = rf.model_args.get("pretrained")
    if pretrained and grp.rows[0].get("pretrained") not in (None, "", pretrained):
        return False
    return agrees(describe(rf.model, rf.model_args), grp.describe())


def _pair_stats(result_files: list[ResultFile], groups_by_dir: dict[Path, list[StatsGroup]]) -> None:
    """Attach to each results file (oldest first) the newest unused stats group of the same run."""
    for rf in sorted(result_files, key=lambda r: (r.clock or "", str(r.path))):
        candidates = [grp for sdir in _stats_dirs_for(rf) for grp in groups_by_dir.get(sdir.resolve(), [])
                      if not grp.used and _same_run(rf, grp)]
        best = max(candidates, key=lambda g: (g.clock or "", g.run_stamp), default=None)
        from_args = describe(rf.model, rf.model_args)
        fields_ = from_args
        if best is not None:
            best.used = True
            rf.stats = best
            # model_args win where set; stats fill what they left to defaults
            fields_ = {k: (from_args.get(k) or v) for k, v in best.describe().items()}
        family = family_of(rf.model_args.get("pretrained") or rf.model_args.get("model") or rf.model)
        rf.config = finalize(rf.model, family, fields_)


def _load_runs(run_dirs: list[str | os.PathLike], warnings: list[str],
               problems: list[str]) -> tuple[list[ResultFile], dict[Path, list[StatsGroup]]]:
    """Every results file and stats group under ``run_dirs`` (and in stats_dir= folders they name)."""
    result_files: list[ResultFile] = []
    groups_by_dir: dict[Path, list[StatsGroup]] = {}
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            raise RunError(f"run folder {run_dir} does not exist" if not run_dir.exists()
                           else f"run folder {run_dir} is a file; give an lmms-eval --output_path folder")
        found = sorted(run_dir.rglob("*_results.json"))
        if not found:
            problems.append(f"{run_dir}: no lmms-eval results file (*_results.json) - the run failed "
                            f"(lmms-eval exits 0 on failure; see its log) or has not finished")
        result_files += [load_result_file(p) for p in found]
        for sdir in sorted(p for p in run_dir.rglob(STATS_DIRNAME) if p.is_dir()):
            if sdir.resolve() not in groups_by_dir:
                groups_by_dir[sdir.resolve()] = load_stats_dir(sdir, warnings)
    for rf in result_files:
        sdir = Path(rf.model_args.get("stats_dir") or "")
        if rf.model_args.get("stats_dir") and sdir.is_dir() and sdir.resolve() not in groups_by_dir:
            groups_by_dir[sdir.resolve()] = load_stats_dir(sdir, warnings)
    return result_files, groups_by_dir


def collect(run_dirs: list[str | os.PathLike], allow_failed: bool = False) -> Collection:
    """Read every run under ``run_dirs`` into one row per configuration (newest result per task)."""
    warnings: list[str] = []
    problems: list[str] = []
    result_files, groups_by_dir = _load_runs(run_dirs, warnings, problems)
    _pair_stats(result_files, groups_by_dir)
    for groups in groups_by_dir.values():
        for grp in groups:
            if not grp.used:
                files = ", ".join(str(f) for f in grp.files)
                problems.append(f"run {grp.label()} (stats {files}) has no lmms-eval results file: it failed "
                                f"(lmms-eval exits 0 on failure) or was written elsewhere")
    for rf in result_files:
        if rf.stats is None:
            warnings.append(f"{rf.path}: no per-sample stats for {rf.config.label()} "
                            f"(looked in {', '.join(map(str, _stats_dirs_for(rf)))}); token columns left empty")
    runs = _resolve(result_files, warnings)
    incomplete = [msg for run in runs for msg in run.incomplete()]
    if problems + incomplete and not allow_failed:
        raise RunError(_refusal(problems, incomplete))
    warnings += [f"skipped: {p}" for p in problems]
    warnings += [f"{m}; its row is marked {INCOMPLETE_MARK} and its token and efficiency columns cover only "
                 f"those samples" for m in incomplete]
    if not runs:
        raise RunError(f"nothing to table: every run under {', '.join(map(str, run_dirs))} was skipped")
    return Collection(runs=runs, warnings=warnings)


def _refusal(problems: list[str], incomplete: list[str]) -> str:
    """One line for one problem; a list under a heading for several."""
    if len(problems) + len(incomplete) == 1:
        return f"{(problems + incomplete)[0]} (pass --allow-failed to {'skip' if problems else 'keep'} it)"
    parts = []
    if problems:
        parts.append("failed runs:\n  " + "\n  ".join(problems))
    if incomplete:
        parts.append("incomplete per-sample stats:\n  " + "\n  ".join(incomplete))
    return "\n".join(parts) + "\n(pass --allow-failed to skip failed runs and keep incomplete ones, marked)"


def _resolve(result_files: list[ResultFile], warnings: list[str]) -> list[MeasuredRun]:
    """One row per configuration; per task the newest results file wins (with a warning)."""
    by_key: dict[tuple, MeasuredRun] = {}
    for rf in sorted(result_files, key=lambda r: (r.clock or "", r.stamp, str(r.path))):
        assert rf.config is not None
        run = by_key.setdefault(rf.config.key(), MeasuredRun(rf.config, {}))
        for task, task_results in rf.results.items():
            rows = _dedupe([r for r in (rf.stats.rows if rf.stats else []) if str(r.get("task")) == task])
            new = TaskResult(task, task_metrics(task_results), rf.n_samples.get(task, 0), rf, rows)
            old = run.tasks.get(task)
            if old is not None:
                warnings.append(f"duplicate run of {rf.config.label()} on {task}: using {rf.path} "
                                f"(newest), ignoring {old.source.path}")
            run.tasks[task] = new
    return sorted(by_key.values(), key=lambda r: r.config.sort_key())


def _dedupe(rows: list[dict]) -> list[dict]:
    """Drop repeated (task, doc_id) rows: multi-process runs pad ranks with duplicates."""
    seen: set[tuple] = set()
    out = []
    for row in rows:
        key = (row.get("task"), row.get("doc_id"))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out
