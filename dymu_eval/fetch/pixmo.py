"""The Pixmo-Cap image list (URLs + sha256 of the image bytes) from the hub or a local copy.

Pixmo-Cap (``allenai/pixmo-cap``) ships captions with image URLs and hashes; the images
must be downloaded and checked. A local copy of the list (JSONL, JSON, CSV or Parquet with
``image_url`` and ``image_sha256`` columns) makes the fetch work without hub access.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

from ..errors import ConfigError
from .download import Item

HUB_ID = "allenai/pixmo-cap"
_URL_KEYS = ("image_url", "url")
_HASH_KEYS = ("image_sha256", "sha256", "hash")
_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}


def _rows_from_file(path: Path, num: int) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise ConfigError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
                    if len(rows) >= num:
                        break
            return rows
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return list(data if isinstance(data, list) else data.get("rows", []))[:num]
        if suffix in (".parquet", ".csv"):
            import pandas as pd

            df = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
            return df.head(num).to_dict("records")
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read the image list {path}: {exc}") from exc
    raise ConfigError(f"image list {path}: expected a .jsonl, .json, .csv or .parquet file")


def _rows_from_hub(hub_id: str, num: int) -> list[dict]:
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
        return rows
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
    return f"{sha256.lower()}{ext}" if sha256 else f"image_{index:06d}{ext}"


def load_items(source: str | None, num: int) -> list[Item]:
    """The first ``num`` (url, sha256) entries of a local list file or a hub dataset id."""
    if num <= 0:
        raise ConfigError(f"num must be positive, got {num}")
    src = source or HUB_ID
    rows = _rows_from_file(Path(src), num) if os.path.exists(src) else _rows_from_hub(src, num)
    items, seen = [], set()
    for i, row in enumerate(rows):
        url = _pick(row, _URL_KEYS)
        if url is None:
            raise ConfigError(f"{src}: row {i} has no image URL (expected one of {', '.join(_URL_KEYS)})")
        sha = _pick(row, _HASH_KEYS)
        item = Item(url=url, sha256=sha.lower() if sha else None, name=_file_name(url, sha, i))
        if item.name in seen:  # the same image listed twice (several captions): fetch it once
            continue
        seen.add(item.name)
        items.append(item)
    return items
