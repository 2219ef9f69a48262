"""The Pixmo-Cap image list (URLs + sha256 of the image bytes) from the hub or a local copy.

Pixmo-Cap (``allenai/pixmo-cap``) ships captions with image URLs and hashes; the images
must be downloaded and checked. A local copy of the list (JSONL, JSON, CSV or Parquet with
``image_url`` and ``image_sha256`` columns) makes the fetch work without hub access.
The list is untrusted input: the hash becomes a file name, so it must be 64 hex characters,
URLs must be http(s) (file:// only on request), and rows without a hash only on request.
"""
from __future__ import annotations

import json
import os
import re
import urllib.parse
from pathlib import Path

from ..errors import ConfigError
from .download import Item

HUB_ID = "allenai/pixmo-cap"
_URL_KEYS = ("image_url", "url")
_HASH_KEYS = ("image_sha256", "sha256", "hash")
_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_REMOTE_SCHEMES = ("http", "https")


def _rows_from_file(path: Path, num: int) -> list[tuple[str, dict]]:
    """(where, row) pairs: ``where`` names the row for messages (``line N`` of a JSONL file, else ``row N``)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append((f"line {lineno}", json.loads(line)))
                        except json.JSONDecodeError as exc:
                            raise ConfigError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
                    if len(rows) >= num:
                        break
            return rows
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return _numbered(list(data if isinstance(data, list) else data.get("rows", []))[:num])
        if suffix in (".parquet", ".csv"):
            import pandas as pd

            df = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
            return _numbered(df.head(num).to_dict("records"))
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read the image list {path}: {exc}") from exc
    raise ConfigError(f"image list {path}: expected a .jsonl, .json, .csv or .parquet file")


def _numbered(rows: list) -> list[tuple[str, dict]]:
    return [(f"row {i}", row) for i, row in enumerate(rows)]


def _rows_from_hub(hub_id: str, num: int) -> list[tuple[str, dict]]:
    from .net import require_hub

    require_hub(f"reading the {hub_id} image list")
    try:
        import datasets

        stream = datasets.load_dataset(hub_id, split="train", streaming=True)
        rows = []
        for row in stream:
            rows.append(dict(row))
            if len(rows) >= num:
                break
        return _numbered(rows)
    except Exception as exc:  # datasets raises many kinds; the user needs one message
        raise ConfigError(f"cannot read {hub_id} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
                          f"download its parquet files and pass --source FILE") from exc


def _pick(row: dict, keys: tuple[str, ...]) -> str | None:
    for k in keys:
        if row.get(k) not in (None, ""):
            return str(row[k])
    return None


def _file_name(url: str, sha256: str | None, index: int) -> str:
    ext = os.path.splitext(urllib.parse.urlparse(url).path)[1].lower()
    ext = ext if ext in _EXTS else ".jpg"
    return f"{sha256}{ext}" if sha256 else f"image_{index:06d}{ext}"


def _checked_url(url: str, where: str, allow_local_files: bool) -> str:
    """The URL if its scheme may be fetched: http(s), and file:// only when the user asked for local files."""
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme in _REMOTE_SCHEMES or (scheme == "file" and allow_local_files):
        return url
    if scheme == "file":
        raise ConfigError(f"{where}: image URL {url!r} is a local file; pass --allow-local-files to copy local files")
    raise ConfigError(f"{where}: image URL {url!r} is not http(s)")


def _checked_sha256(sha: str | None, where: str, allow_unverified: bool) -> str | None:
    """The lower-case hash; it becomes a file name, so anything but 64 hex characters is refused."""
    if sha is None:
        if allow_unverified:
            return None
        raise ConfigError(f"{where}: no image_sha256, so the image cannot be verified; "
                          f"pass --allow-unverified to fetch such rows unchecked")
    if not _SHA256.fullmatch(sha):
        raise ConfigError(f"{where}: image_sha256 {sha!r} is not a sha256 (64 hex characters)")
    return sha.lower()


def load_items(source: str | None, num: int, allow_local_files: bool = False,
               allow_unverified: bool = False) -> list[Item]:
    """The first ``num`` (url, sha256) entries of a local list file or a hub dataset id, checked:
    http(s) URLs (file:// with ``allow_local_files``) and a well-formed sha256 (none only with
    ``allow_unverified``)."""
    if num <= 0:
        raise ConfigError(f"num must be positive, got {num}")
    src = source or HUB_ID
    rows = _rows_from_file(Path(src), num) if os.path.exists(src) else _rows_from_hub(src, num)
    items, seen = [], set()
    for i, (where, row) in enumerate(rows):
        where = f"{src} {where}"
        url = _pick(row, _URL_KEYS)
        if url is None:
            raise ConfigError(f"{where} has no image URL (expected one of {', '.join(_URL_KEYS)})")
        url = _checked_url(url, where, allow_local_files)
        sha = _checked_sha256(_pick(row, _HASH_KEYS), where, allow_unverified)
        item = Item(url=url, sha256=sha, name=_file_name(url, sha, i))
        if item.name in seen:  # the same image listed twice (several captions): fetch it once
            continue
        seen.add(item.name)
        items.append(item)
    return items
