"""Parallel, resumable, verified downloads of many small files (calibration images).

Each file is streamed into a temporary file in the target folder, checked (length against
Content-Length, sha256 against the expected hash) and only then moved into place with
``os.replace``, so a partial or mismatched file is never left under its final name.
Existing files whose hash verifies are skipped, which makes a re-run resume. Every file,
the temporary ones included, stays directly inside the output folder: a name that is not a
plain file name, or that resolves elsewhere (a symlink), is refused before any work. Items
without a hash are fetched unchecked and their outcomes say ``verified: false``.
"""
from __future__ import annotations

import hashlib
import os
import secrets
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
    verified: bool = False  # the file's sha256 was checked against the list (never for items without one)
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
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    # 0o666 less the umask, like any file the user writes (mkstemp's 0600 would hide a shared image folder)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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
    """Fetch one item with retries (exponential backoff). A failed download does not raise (the
    outcome says what happened); only a name that would lie outside ``out_dir`` does."""
    target = target_path(out_dir, item.name)
    outcome = Outcome(item.url, item.sha256, str(target), "failed")
    if target.exists():
        if not item.sha256:  # nothing to check it against: kept, and reported as unverified
            outcome.status, outcome.bytes = "cached", target.stat().st_size
            return outcome
        if sha256_file(target) == item.sha256.lower():
            outcome.status, outcome.verified, outcome.bytes = "cached", True, target.stat().st_size
            return outcome
        target.unlink()  # a mismatched file under the final name is never kept
    for attempt in range(1, retries + 2):
        outcome.attempts = attempt
        try:
            outcome.bytes = _fetch_once(item, target, timeout, max_seconds)
            outcome.status, outcome.verified, outcome.error = "downloaded", bool(item.sha256), None
            return outcome
        except _Permanent as exc:
            outcome.error = str(exc)
            return outcome
        except (OSError, urllib.error.URLError, TimeoutError, ValueError) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            if attempt <= retries:
                time.sleep(backoff * 2 ** (attempt - 1))
    return outcome


def target_path(out_dir: Path, name: str) -> Path:
    """``out_dir / name``, refused unless it is a plain file name that resolves directly inside ``out_dir``."""
    target = out_dir / name
    if name in ("", ".", "..") or Path(name).name != name or target.resolve().parent != out_dir.resolve():
        raise ConfigError(f"fetch list: file name {name!r} would lie outside the output folder {out_dir}")
    return target


def prepare_out_dir(out_dir: Path) -> None:
    """Create the output folder, or say in one line why it cannot be one."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # FileExistsError: a file of that name
        raise ConfigError(f"output folder {out_dir}: cannot create it ({exc.strerror or exc})") from exc


def fetch_all(items: list[Item], out_dir: Path, workers: int = 8, progress: bool = True,
              **kwargs: float) -> list[Outcome]:
    """Fetch every item with a thread pool; outcomes are returned in the order of ``items``."""
    names = [i.name for i in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"fetch list names the same file more than once: {', '.join(repeated[:5])}")
    for name in names:
        target_path(out_dir, name)
    prepare_out_dir(out_dir)
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
    """Counts per status, plus ``unverified``: files present (downloaded or kept) whose hash was never checked."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("downloaded", "cached", "failed")}
    unverified = sum(o.status != "failed" and not o.verified for o in outcomes)
    return {"source": source, "requested": len(outcomes), **counts, "unverified": unverified,
            "items": [asdict(o) for o in outcomes]}
