"""Parallel, resumable, verified downloads of many small files (calibration images).

Each file is streamed into a temporary file in the target folder, checked (length against
Content-Length, sha256 against the expected hash) and only then moved into place with
``os.replace``, so a partial or mismatched file is never left under its final name.
Existing files whose hash verifies are skipped, which makes a re-run resume.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import ConfigError

_CHUNK = 1 << 16
USER_AGENT = "dymu-eval-fetch/0.1"


@dataclass(frozen=True)
class Item:
    """One file to fetch: where from, its expected sha256 (hex), and its file name."""

    url: str
    sha256: str | None
    name: str


@dataclass
class Outcome:
    url: str
    sha256: str | None
    path: str
    status: str  # downloaded | cached | failed
    attempts: int = 0
    bytes: int = 0
    error: str | None = None


class _Permanent(Exception):
    """A failure that retrying cannot fix (HTTP 4xx, wrong hash)."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_once(item: Item, target: Path, timeout: float, max_seconds: float) -> int:
    """One attempt: stream to a temp file, verify, move into place. Returns the byte count."""
    req = urllib.request.Request(item.url, headers={"User-Agent": USER_AGENT})
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        start = time.monotonic()
        h = hashlib.sha256()
        size = 0
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise _Permanent(f"HTTP {exc.code} {exc.reason}") from exc
            raise
        with resp, os.fdopen(fd, "wb") as out:
            fd = -1
            expected_len = resp.headers.get("Content-Length")
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                size += len(chunk)
                if time.monotonic() - start > max_seconds:
                    raise TimeoutError(f"download took longer than {max_seconds:g} s")
        if expected_len is not None and size != int(expected_len):
            raise OSError(f"truncated: got {size} of {expected_len} bytes")
        digest = h.hexdigest()
        if item.sha256 and digest != item.sha256.lower():
            raise _Permanent(f"sha256 mismatch: expected {item.sha256}, got {digest}")
        os.replace(tmp, target)
        return size
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp.exists():
            tmp.unlink()


def fetch_one(item: Item, out_dir: Path, timeout: float = 15.0, retries: int = 3, backoff: float = 0.5,
              max_seconds: float = 120.0) -> Outcome:
    """Fetch one item with retries (exponential backoff); never raises, the outcome says what happened."""
    target = out_dir / item.name
    outcome = Outcome(item.url, item.sha256, str(target), "failed")
    if target.exists():
        if item.sha256 and sha256_file(target) == item.sha256.lower():
            outcome.status, outcome.bytes = "cached", target.stat().st_size
            return outcome
        if not item.sha256:
            outcome.status, outcome.bytes = "cached", target.stat().st_size
            return outcome
        target.unlink()  # a mismatched file under the final name is never kept
    for attempt in range(1, retries + 2):
        outcome.attempts = attempt
        try:
            outcome.bytes = _fetch_once(item, target, timeout, max_seconds)
            outcome.status, outcome.error = "downloaded", None
            return outcome
        except _Permanent as exc:
            outcome.error = str(exc)
            return outcome
        except (OSError, urllib.error.URLError, TimeoutError, ValueError) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            if attempt <= retries:
                time.sleep(backoff * 2 ** (attempt - 1))
    return outcome


def fetch_all(items: list[Item], out_dir: Path, workers: int = 8, progress: bool = True,
              **kwargs: float) -> list[Outcome]:
    """Fetch every item with a thread pool; outcomes are returned in the order of ``items``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [i.name for i in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"fetch list names the same file more than once: {', '.join(repeated[:5])}")
    results: dict[int, Outcome] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(fetch_one, item, out_dir, **kwargs): i for i, item in enumerate(items)}
        bar = tqdm(total=len(items), desc="images", unit="img", disable=not progress)
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            bar.update(1)
        bar.close()
    return [results[i] for i in range(len(items))]


def summarise(outcomes: list[Outcome], source: str) -> dict:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("downloaded", "cached", "failed")}
    return {"source": source, "requested": len(outcomes), **counts, "items": [asdict(o) for o in outcomes]}
