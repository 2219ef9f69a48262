"""Markdown, CSV and LaTeX writers, and readers that parse them back to the same numbers.

Measured and reported rows never share a table: Markdown and LaTeX give each its own
section ("<family> — measured" / "<family> — reported"), the CSV a ``source`` column.
Mean±std and min–max of the visual tokens are one cell in Markdown and LaTeX and two
columns in the CSV; the readers split them again, so all three formats round-trip.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from .tables import DECIMALS, FamilyTable

TEXT_COLUMNS = ["run", "method", "level", "threshold_data", "schedule", "vtu", "model", "table", "source"]
_DISPLAY = {
    "tokens_pct": "% tokens",
    "avg": "Avg",
    "avg_pct_baseline": "% of baseline Avg",
    "avg_paper": "Avg (paper, 9 benchmarks)",
    "prefill_tflops": "prefill TFLOPs",
    "flops_pct_baseline": "% of baseline FLOPs",
    "ttft_ms": "TTFT ms",
    "speedup": "speed-up",
    "kv_mb": "KV MB",
    "peak_mem_mb": "peak mem MB",
}
_MEANSTD, _MINMAX = "tokens mean±std", "tokens min–max"
_MEASURED, _REPORTED = "measured", "reported"
_SEP = " — "


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)):
        text = f"{float(value):.{DECIMALS}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


def _num(text: str) -> float:
    text = text.strip()
    return math.nan if text in ("-", "") else float(text)


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric frame -> strings, with the token columns combined for reading."""
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        if col in ("tokens_std", "tokens_max"):
            continue
        if col == "tokens_mean":
            std = df["tokens_std"] if "tokens_std" in df else pd.Series(math.nan, index=df.index)
            out[_MEANSTD] = [_fmt(m) if (isinstance(s, float) and math.isnan(s)) or _fmt(m) == "-"
                             else f"{_fmt(m)}±{_fmt(s)}" for m, s in zip(df["tokens_mean"], std)]
        elif col == "tokens_min":
            out[_MINMAX] = ["-" if _fmt(a) == "-" else f"{_fmt(a)}–{_fmt(b)}"
                            for a, b in zip(df["tokens_min"], df["tokens_max"])]
        elif col in TEXT_COLUMNS:
            text = df[col].fillna("").astype(str)
            if (text != "").any():  # all-empty label columns only widen the table
                out[col] = text
        else:
            out[_DISPLAY.get(col, col)] = [_fmt(v) for v in df[col]]
    return out


def undisplay_frame(disp: pd.DataFrame) -> pd.DataFrame:
    """Inverse of :func:`display_frame` (strings -> numbers, combined cells split)."""
    reverse = {v: k for k, v in _DISPLAY.items()}
    out = pd.DataFrame(index=disp.index)
    for col in disp.columns:
        cells = disp[col].astype(str)
        if col == _MEANSTD:
            parts = [c.split("±") for c in cells]
            out["tokens_mean"] = [_num(p[0]) for p in parts]
            out["tokens_std"] = [_num(p[1]) if len(p) > 1 else math.nan for p in parts]
        elif col == _MINMAX:
            parts = [c.split("–") for c in cells]
            out["tokens_min"] = [_num(p[0]) for p in parts]
            out["tokens_max"] = [_num(p[1]) if len(p) > 1 else math.nan for p in parts]
        elif col in TEXT_COLUMNS:
            out[col] = cells
        else:
            out[reverse.get(col, col)] = [_num(c) for c in cells]
    return out


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical form for comparing round trips: text as str, numbers as float, empty columns dropped."""
    df = df.drop(columns=[c for c in ("source",) if c in df.columns]).reset_index(drop=True)
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        if col in TEXT_COLUMNS:
            vals = df[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
            if (vals != "").any():
                out[col] = vals
        else:
            vals = pd.to_numeric(df[col], errors="coerce").astype(float)
            if vals.notna().any():
                out[col] = vals
    return out


def sections(tables: list[FamilyTable]) -> list[tuple[str, str, pd.DataFrame, list[str]]]:
    """(family, source, numeric frame, notes) for every non-empty section, in output order."""
    out = []
    for t in tables:
        out.append((t.family, _MEASURED, t.measured, t.notes))
        if t.reported is not None and len(t.reported):
            out.append((t.family, _REPORTED, t.reported, t.reported_notes))
    return out


# ---------------------------------------------------------------- Markdown
def to_markdown(tables: list[FamilyTable]) -> str:
    lines = ["# dymu-eval results", ""]
    for family, source, df, notes in sections(tables):
        title = f"{family}{_SEP}{source}" + (" (from papers, not measured here)" if source == _REPORTED else "")
        lines += [f"## {title}", ""]
        disp = display_frame(df)
        lines.append("| " + " | ".join(disp.columns) + " |")
        lines.append("|" + "|".join("---" for _ in disp.columns) + "|")
        for _, row in disp.iterrows():
            lines.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
        lines.append("")
        lines += [f"- {n}" for n in notes]
        lines.append("")
    return "\n".join(lines)


def read_markdown(text: str) -> dict[tuple[str, str], pd.DataFrame]:
    """Tables of a file written by :func:`to_markdown`, keyed by (family, source)."""
    result: dict[tuple[str, str], pd.DataFrame] = {}
    key: tuple[str, str] | None = None
    rows: list[list[str]] = []

    def flush() -> None:
        if key is not None and rows:
            header, body = rows[0], rows[2:]
            result[key] = undisplay_frame(pd.DataFrame(body, columns=header))

    for line in text.splitlines():
        if line.startswith("## "):
            flush()
            family, _, source = line[3:].rpartition(_SEP)
            key, rows = (family, source.split(" ")[0]), []
        elif line.startswith("|") and key is not None:
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    flush()
    return result


# ---------------------------------------------------------------- CSV
def to_csv_frame(table: FamilyTable) -> pd.DataFrame:
    """One family's rows with a ``source`` column: measured first, then reported."""
    parts = [table.measured.assign(source=_MEASURED)]
    if table.reported is not None and len(table.reported):
        parts.append(table.reported.assign(source=_REPORTED))
    df = pd.concat(parts, ignore_index=True)
    return df[["source"] + [c for c in df.columns if c != "source"]]


def read_csv_sections(path: Path | str) -> dict[tuple[str, str], pd.DataFrame]:
    """A family CSV split back by source; the family is the file's stem."""
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={c: str for c in TEXT_COLUMNS})
    family = Path(path).stem
    return {(family, src): part.drop(columns=["source"]).reset_index(drop=True)
            for src, part in df.groupby("source", sort=False)}


# ---------------------------------------------------------------- LaTeX
_LATEX_ESC = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
              ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}")]


def _tex(text: str) -> str:
    out = []
    for ch in str(text):
        for raw, esc in _LATEX_ESC:
            if ch == raw:
                out.append(esc)
                break
        else:
            out.append({"±": r"$\pm$", "–": "--", "—": "---"}.get(ch, ch))
    return "".join(out)


def _untex(text: str) -> str:
    text = text.replace(r"$\pm$", "±").replace("---", "—").replace("--", "–")
    text = text.replace(r"\textbackslash{}", "\\").replace(r"\textasciitilde{}", "~")
    text = text.replace(r"\textasciicircum{}", "^")
    return re.sub(r"\\([&%$#_{}])", r"\1", text).strip()


def to_latex(tables: list[FamilyTable]) -> str:
    out = ["% dymu-eval results (booktabs). Reported rows come from papers and were not measured."]
    for family, source, df, notes in sections(tables):
        disp = display_frame(df)
        out += ["", f"% {family}{_SEP}{source}"] + [f"% {n}" for n in notes]
        out += [r"\begin{table}[t]", r"\centering", f"\\caption{{{_tex(family)}{_tex(_SEP)}{source}}}",
                r"\resizebox{\linewidth}{!}{%",
                r"\begin{tabular}{" + "l" * 7 + "r" * max(0, len(disp.columns) - 7) + "}",
                r"\toprule", " & ".join(_tex(c) for c in disp.columns) + r" \\", r"\midrule"]
        out += [" & ".join(_tex(v) for v in row) + r" \\" for _, row in disp.iterrows()]
        out += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(out) + "\n"


def read_latex(text: str) -> dict[tuple[str, str], pd.DataFrame]:
    """Tables of a file written by :func:`to_latex`, keyed by (family, source)."""
    result: dict[tuple[str, str], pd.DataFrame] = {}
    key: tuple[str, str] | None = None
    rows: list[list[str]] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(r"\caption{"):
            family, _, source = _untex(line[len(r"\caption{"):-1]).rpartition(_SEP)
            key, rows = (family, source), []
        elif line.startswith(r"\toprule"):
            inside = True
        elif line.startswith(r"\bottomrule"):
            inside = False
            if key is not None:
                header, body = rows[0], rows[1:]
                result[key] = undisplay_frame(pd.DataFrame(body, columns=header))
        elif inside and line.endswith(r"\\"):
            cells = re.split(r"(?<!\\)&", line[: -2])
            rows.append([_untex(c) for c in cells])
    return result


def write_all(tables: list[FamilyTable], out_dir: Path, formats: list[str]) -> list[Path]:
    """Write ``results.md``, ``results.tex`` and one ``<family>.csv`` per family; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if "md" in formats:
        written.append(out_dir / "results.md")
        written[-1].write_text(to_markdown(tables), encoding="utf-8")
    if "latex" in formats:
        written.append(out_dir / "results.tex")
        written[-1].write_text(to_latex(tables), encoding="utf-8")
    if "csv" in formats:
        for t in tables:
            path = out_dir / f"{t.family}.csv"
            to_csv_frame(t).to_csv(path, index=False)
            written.append(path)
    return written
