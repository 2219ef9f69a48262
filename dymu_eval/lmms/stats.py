"""Per-sample stats JSONL written beside lmms-eval's outputs (read by ``dymu-eval tables``).

Location: ``<--output_path>/dymu_stats/<run_stamp>_rank<k>.jsonl`` (the ``stats_dir`` model_arg
overrides the folder). lmms-eval does not tell a model where its outputs go, so the folder
comes from the command line the process was started with (``--output_path``); without it
(e.g. the Python API) the files go to ``./dymu_stats`` and a warning says so.

Each row also records the run's ``--model_args`` as typed, which lmms-eval copies into its
results file (``config.model_args``), so ``dymu-eval tables`` pairs a stats file with its
results by content, not by file times. Rows are appended one whole line per write, so a
killed run leaves at most a cut-off last line, never a broken line in the middle.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

# Fields every row carries, in this order (documented in docs/plugin.md). The method's own model_args
# (its registered arguments: r, fastv_k, keep, ...), the family's and a pruner's stages follow them.
FIELDS = (
    "task", "doc_id", "request", "model", "family", "method", "level", "vtu", "pretrained",
    "visual_tokens_before", "visual_tokens_after", "unique_len", "virtual_len",
    "encoder_ms", "prefill_ms", "decode_ms", "new_tokens", "image_bytes_per_pixel", "run_stamp", "rank", "model_args",
    # efficiency accounting (definitions in dymu_eval.accounting, docs/plugin.md)
    "encoder_rows", "llm_rows", "virtual_positions", "layer_avg_rows", "flop_equiv_tokens",
    "encoder_flops", "projector_flops", "prefill_flops", "prefill_attn_flops", "decode_flops", "total_flops",
    "paper_prefill_qk_macs", "kv_cache_bytes", "kv_full_bytes", "ttft_ms", "decode_tok_per_s",
    "peak_mem_bytes", "memory_note", "attn_backend", "device", "warmup",
)
# Written after FIELDS when a model family reports them (LLaVA-OneVision: per request, the images,
# AnyRes crops, video frames sampled and distinct, encoder output tokens per crop or frame, visual
# positions in the unmodified sequence and distinct visual rows the LLM processes).
OPTIONAL_FIELDS = (
    "images", "crops", "frames", "distinct_frames", "encoder_tokens", "visual_positions", "visual_rows",
    "max_frames_num", "layout", "multi_image",
)


# Stats-row fields averaged into lmms-eval's own results (its "throughput" block, as avg_<key>):
# key in the block -> (row field, scale). Times leave out warm-up rows; null fields are left out.
THROUGHPUT_TIMES = {"encoder_ms": ("encoder_ms", 1.0), "prefill_ms": ("prefill_ms", 1.0),
                    "decode_ms": ("decode_ms", 1.0), "ttft_ms": ("ttft_ms", 1.0),
                    "decode_tok_per_s": ("decode_tok_per_s", 1.0), "peak_mem_mb": ("peak_mem_bytes", 1e-6)}
THROUGHPUT_COUNTS = {"encoder_tflops": ("encoder_flops", 1e-12), "projector_tflops": ("projector_flops", 1e-12),
                     "prefill_tflops": ("prefill_flops", 1e-12), "decode_tflops": ("decode_flops", 1e-12),
                     "total_tflops": ("total_flops", 1e-12), "encoder_rows": ("encoder_rows", 1.0),
                     "llm_rows": ("llm_rows", 1.0), "virtual_positions": ("virtual_positions", 1.0),
                     "layer_avg_rows": ("layer_avg_rows", 1.0), "flop_equiv_tokens": ("flop_equiv_tokens", 1.0),
                     "kv_cache_mb": ("kv_cache_bytes", 1e-6), "kv_full_mb": ("kv_full_bytes", 1e-6)}


def throughput_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The additional metrics one request contributes to lmms-eval's throughput block."""
    wanted = dict(THROUGHPUT_COUNTS)
    if not row.get("warmup"):
        wanted.update(THROUGHPUT_TIMES)
    return {key: float(row[field]) * scale for key, (field, scale) in wanted.items() if row.get(field) is not None}


def _argv_value(flag: str, argv: Sequence[str] | None = None) -> str | None:
    """The value of ``flag`` (``--flag V`` or ``--flag=V``) in a command line, if any."""
    argv = list(sys.argv if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


def output_path_from_argv(argv: Sequence[str] | None = None) -> str | None:
    """The value of ``--output_path`` in an lmms-eval command line, if any."""
    return _argv_value("--output_path", argv)


def model_args_from_argv(argv: Sequence[str] | None = None) -> str | None:
    """``--model_args`` as typed on the lmms-eval command line: the results file's ``config.model_args``."""
    return _argv_value("--model_args", argv)


def stats_dir(explicit: str | None, argv: Sequence[str] | None = None) -> tuple[Path, bool]:
    """(folder, found): ``explicit`` > ``<--output_path>/dymu_stats`` > ``./dymu_stats`` (found=False)."""
    if explicit:
        return Path(explicit), True
    out = output_path_from_argv(argv)
    if out:
        return Path(out) / "dymu_stats", True
    return Path(os.getcwd()) / "dymu_stats", False


def _launcher() -> tuple[int, float]:
    """(pid, start time) of the process that started this run: the launcher's when several
    processes run (accelerate/torchrun children share it), else this process's own."""
    import psutil

    proc = psutil.Process(os.getpid())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and proc.parent() is not None:
        proc = proc.parent()
    return proc.pid, proc.create_time()


def new_run_stamp(argv: Sequence[str] | None = None) -> str:
    """``YYYYMMDD_HHMMSS_<pid>``: when the run's (launcher) process started, in lmms-eval's
    ``--timezone`` (Asia/Singapore by default, like its results files), and its pid. All ranks
    of one run compute the same stamp without talking to each other."""
    import datetime

    import pytz

    tz = _argv_value("--timezone", argv) or "Asia/Singapore"
    pid, started = _launcher()
    try:
        zone = pytz.timezone(tz)
    except pytz.UnknownTimeZoneError:  # lmms-eval itself refuses such a name later
        zone = pytz.utc
    when = datetime.datetime.fromtimestamp(started, tz=datetime.timezone.utc).astimezone(zone)
    return f"{when.strftime('%Y%m%d_%H%M%S')}_{pid}"


class StatsWriter:
    """Appends one JSON object per request to ``<folder>/<run_stamp>_rank<k>.jsonl``."""

    def __init__(self, folder: Path, run_stamp: str, rank: int, constant: dict[str, Any],
                 argv: Sequence[str] | None = None):
        self.path = Path(folder) / f"{run_stamp}_rank{rank}.jsonl"
        self.constant = {**constant, "run_stamp": run_stamp, "rank": rank, "model_args": model_args_from_argv(argv)}

    def line(self, row: dict[str, Any]) -> bytes:
        """One row as a JSON line: every field of FIELDS in order, then the family's optional ones, then
        everything else the row carries (the method's and family's arguments, a pruner's stages)."""
        full = {**self.constant, **row}
        extra = {k: full[k] for k in OPTIONAL_FIELDS if k in full}
        rest = {k: v for k, v in full.items() if k not in FIELDS and k not in extra}
        return (json.dumps({**{k: full.get(k) for k in FIELDS}, **extra, **rest}) + "\n").encode("utf-8")

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append ``rows``, each with its own unbuffered write of one whole line (a kill mid-batch
        loses whole rows, and can cut at most the one line being written)."""
        if not rows:
            return
        lines = [self.line(row) for row in rows]  # serialise first: a bad row writes nothing
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for data in lines:
                _write_whole(fd, data)
        finally:
            os.close(fd)


def _write_whole(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is out (a regular file takes it in one call)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
