"""Discover lmms-eval runs on disk, pair them with the plugin's stats, resolve duplicates.

Layout read (lmms-eval 0.7.3): ``<output_path>/<model_name_sanitized>/<stamp>_results.json``
and ``<stamp>_samples_<task>.jsonl``; the plugin writes ``<output_path>/dymu_stats/
<run_stamp>_rank<k>.jsonl`` (or ``stats_dir=`` from model_args). lmms-eval exits 0 when an
evaluation fails and then writes no results file, so a run folder without one, or stats that
no results file accounts for, is reported as a failed run naming the folder or stats file.

Stats carry their own run stamp, which lmms-eval's results file does not know, so a results
file is paired with the newest stats group of the same configuration that was last written
before the results file (the model finishes before lmms-eval scores and saves).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RunError
from .benchmarks import task_metrics
from .labels import RunConfig, agrees, describe, family_of, finalize, parse_model_args

STATS_DIRNAME = "dymu_stats"
_MTIME_SLACK_S = 2.0


@dataclass
class StatsGroup:
    """All per-sample stats rows of one plugin run (one run stamp, any number of ranks)."""

    run_stamp: str
    files: list[Path]
    rows: list[dict]
    mtime: float
    used: bool = False

    def describe(self) -> dict[str, str | None]:
        first = self.rows[0]
        return describe(str(first.get("model") or "dymu_llava"), first)

    def tasks(self) -> set[str]:
        return {str(r.get("task")) for r in self.rows}


@dataclass
class ResultFile:
    """One lmms-eval results JSON with its sample files."""

    path: Path
    stamp: str
    mtime: float
    model: str
    model_args: dict[str, str]
    results: dict[str, dict]
    n_samples: dict[str, int]
    limit: object
    samples: dict[str, Path]
    stats: StatsGroup | None = None
    config: RunConfig | None = None

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


@dataclass
class MeasuredRun:
    """One table row: a configuration and its newest result per task."""

    config: RunConfig
    tasks: dict[str, TaskResult]

    def stats_rows(self) -> list[dict]:
        return [r for t in self.tasks.values() for r in t.stats_rows]


@dataclass
class Collection:
    runs: list[MeasuredRun]
    warnings: list[str]


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read lmms-eval results file {path}: {exc}") from exc
    if not isinstance(data, dict) or "results" not in data:
        raise RunError(f"{path} is not an lmms-eval results file (no 'results' key)")
    return data


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a bad line raises an error naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise RunError(f"{path}:{lineno}: expected a JSON object per line")
            rows.append(row)
    return rows


def load_result_file(path: Path) -> ResultFile:
    data = _read_json(path)
    stamp = path.name[: -len("_results.json")]
    cfg = data.get("config") or {}
    samples = {}
    prefix = f"{stamp}_samples_"
    for sample_path in path.parent.glob(f"{prefix}*.jsonl"):
        samples[sample_path.name[len(prefix): -len(".jsonl")]] = sample_path
    n_samples = {}
    for task, counts in (data.get("n-samples") or {}).items():
        if isinstance(counts, dict):
            n_samples[task] = int(counts.get("effective", counts.get("original", 0)) or 0)
    results = {t: r for t, r in data["results"].items() if isinstance(r, dict)}
    return ResultFile(path=path, stamp=stamp, mtime=path.stat().st_mtime, model=str(cfg.get("model") or ""),
                      model_args=parse_model_args(cfg.get("model_args")), results=results,
                      n_samples=n_samples, limit=cfg.get("limit"), samples=samples)


def _stamp_time(stamp: str, fallback: float) -> float:
    """Seconds of a ``YYYYMMDD_HHMMSS[...]`` run stamp (UTC), else ``fallback``."""
    import calendar
    import time

    try:
        return float(calendar.timegm(time.strptime(stamp[:15], "%Y%m%d_%H%M%S")))
    except ValueError:
        return fallback


def load_stats_dir(stats_dir: Path, launch_window_s: float = 120.0) -> list[StatsGroup]:
    """Stats rows under ``stats_dir``, one group per run (all ranks of one launch together).

    Each process stamps its own file; files of the same configuration with disjoint ranks
    started within ``launch_window_s`` of each other are taken as one multi-process launch.
    """
    per_stamp: dict[str, StatsGroup] = {}
    for path in sorted(stats_dir.glob("*.jsonl")):
        for row in read_jsonl(path):
            stamp = str(row.get("run_stamp") or path.stem.rsplit("_rank", 1)[0])
            grp = per_stamp.setdefault(stamp, StatsGroup(stamp, [], [], 0.0))
            if path not in grp.files:
                grp.files.append(path)
                grp.mtime = max(grp.mtime, path.stat().st_mtime)
            grp.rows.append(row)
    launches: list[tuple[float, set, tuple, StatsGroup]] = []
    for grp in sorted(per_stamp.values(), key=lambda g: _stamp_time(g.run_stamp, g.mtime)):
        start = _stamp_time(grp.run_stamp, grp.mtime)
        ranks = {r.get("rank", 0) for r in grp.rows}
        desc = tuple(sorted((k, str(v)) for k, v in grp.describe().items())) + (str(grp.rows[0].get("pretrained")),)
        for i, (t0, seen, d, launch) in enumerate(launches):
            if d == desc and not (ranks & seen) and start - t0 <= launch_window_s:
                launch.files += grp.files
                launch.rows += grp.rows
                launch.mtime = max(launch.mtime, grp.mtime)
                launches[i] = (t0, seen | ranks, d, launch)
                break
        else:
            launches.append((start, ranks, desc, grp))
    return [launch for _t, _s, _d, launch in launches]


def _stats_dirs_for(rf: ResultFile) -> list[Path]:
    if rf.model_args.get("stats_dir"):
        return [Path(rf.model_args["stats_dir"])]
    return [rf.path.parent.parent / STATS_DIRNAME, rf.path.parent / STATS_DIRNAME]


def _pair_stats(result_files: list[ResultFile], groups_by_dir: dict[Path, list[StatsGroup]]) -> None:
    """Attach to each results file the newest matching stats group written before it."""
    for rf in sorted(result_files, key=lambda r: r.mtime):
        from_args = describe(rf.model, rf.model_args)
        pretrained = rf.model_args.get("pretrained")
        best: StatsGroup | None = None
        for sdir in _stats_dirs_for(rf):
            for grp in groups_by_dir.get(sdir.resolve(), []):
                if grp.used or grp.mtime > rf.mtime + _MTIME_SLACK_S:
                    continue
                if not grp.tasks() <= set(rf.results):
                    continue
                if pretrained and grp.rows[0].get("pretrained") not in (None, "", pretrained):
                    continue
                if not agrees(from_args, grp.describe()):
                    continue
                if best is None or grp.mtime > best.mtime:
                    best = grp
        if best is not None:
            best.used = True
            rf.stats = best
        fields_ = best.describe() if best is not None else from_args
        if best is not None:  # model_args win where set; stats fill what they left to defaults
            fields_ = {k: (from_args.get(k) or v) for k, v in fields_.items()}
        family = family_of(pretrained or rf.model_args.get("model") or rf.model)
        rf.config = finalize(rf.model, family, fields_)


def collect(run_dirs: list[str | os.PathLike], allow_failed: bool = False) -> Collection:
    """Read every run under ``run_dirs`` into one row per configuration (newest result per task)."""
    warnings: list[str] = []
    problems: list[str] = []
    result_files: list[ResultFile] = []
    groups_by_dir: dict[Path, list[StatsGroup]] = {}
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            raise RunError(f"run folder {run_dir} does not exist")
        found = sorted(run_dir.rglob("*_results.json"))
        if not found:
            problems.append(f"{run_dir}: no lmms-eval results file (*_results.json) - the run failed "
                            f"(lmms-eval exits 0 on failure; see its log) or has not finished")
        result_files += [load_result_file(p) for p in found]
        for sdir in sorted(p for p in run_dir.rglob(STATS_DIRNAME) if p.is_dir()):
            groups_by_dir.setdefault(sdir.resolve(), load_stats_dir(sdir))
    for rf in result_files:
        if rf.model_args.get("stats_dir"):
            sdir = Path(rf.model_args["stats_dir"])
            if sdir.is_dir():
                groups_by_dir.setdefault(sdir.resolve(), load_stats_dir(sdir))
    _pair_stats(result_files, groups_by_dir)

    for groups in groups_by_dir.values():
        for grp in groups:
            if not grp.used:
                label = finalize(str(grp.rows[0].get("model") or "dymu_llava"),
                                 family_of(str(grp.rows[0].get("pretrained") or "")), grp.describe()).label()
                files = ", ".join(str(f) for f in grp.files)
                problems.append(f"run {label} (stats {files}) has no lmms-eval results file: it failed "
                                f"(lmms-eval exits 0 on failure) or was written elsewhere")
    for rf in result_files:
        if rf.stats is None:
            warnings.append(f"{rf.path}: no per-sample stats for {rf.config.label()} "
                            f"(looked in {', '.join(map(str, _stats_dirs_for(rf)))}); token columns left empty")
    if problems:
        if not allow_failed:
            raise RunError("failed runs:\n  " + "\n  ".join(problems) + "\n(pass --allow-failed to skip them)")
        warnings += [f"skipped: {p}" for p in problems]
    return Collection(runs=_resolve(result_files, warnings), warnings=warnings)


def _resolve(result_files: list[ResultFile], warnings: list[str]) -> list[MeasuredRun]:
    """One row per configuration; per task the newest results file wins (with a warning)."""
    by_key: dict[tuple, MeasuredRun] = {}
    for rf in sorted(result_files, key=lambda r: (r.stamp, r.mtime)):
        assert rf.config is not None
        run = by_key.setdefault(rf.config.key(), MeasuredRun(rf.config, {}))
        for task, task_results in rf.results.items():
            rows = [r for r in (rf.stats.rows if rf.stats else []) if str(r.get("task")) == task]
            new = TaskResult(task, task_metrics(task_results), rf.n_samples.get(task, 0), rf, _dedupe(rows))
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
