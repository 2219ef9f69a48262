"""Build-once directories in the user cache, safe when several processes ask at the same time.

A cached asset is a folder plus a ``manifest.json`` written last. The manifest records the
size and modification time of every file, so a truncated or half-written folder is noticed
without rehashing hundreds of megabytes on every load; whatever else the owner wants to
check (a reference forward, say) goes in ``extra``. Builds happen under a file lock into a
temporary sibling folder that is renamed into place, so readers never see half a folder.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from dymu_eval.paths import user_cache_dir

MANIFEST = "manifest.json"


def assets_root() -> Path:
    """``<user cache>/assets``: the parent of every converted-weights folder."""
    root = user_cache_dir() / "assets"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _file_table(folder: Path) -> dict[str, list[int]]:
    table = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            st = path.stat()
            table[path.relative_to(folder).as_posix()] = [st.st_size, st.st_mtime_ns]
    return table


def write_manifest(folder: Path, source: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Seal a finished folder: ``source`` says what it was built from, ``extra`` holds checks."""
    manifest = {"source": source, "files": _file_table(folder), "extra": extra or {}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def read_manifest(folder: Path, source: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest if ``folder`` is complete, unchanged and built from ``source``; else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("source") != source:
        return None
    if manifest.get("files") != _file_table(folder) or not manifest["files"]:
        return None
    return manifest


def _remove(folder: Path) -> None:
    if folder.exists():
        trash = folder.with_name(f".trash-{folder.name}-{uuid.uuid4().hex[:8]}")
        os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)


def ensure_built(
    folder: Path,
    source: dict[str, Any],
    build: Callable[[Path], dict[str, Any] | None],
    force: bool = False,
) -> dict[str, Any]:
    """Return ``folder``'s manifest, building it first if missing, stale or corrupt.

    ``build(tmp_dir)`` fills ``tmp_dir`` and returns the ``extra`` dict for the manifest.
    ``force`` rebuilds even a valid folder (used after a failed reference check).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    if not force:
        manifest = read_manifest(folder, source)
        if manifest is not None:
            return manifest
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if not force:
            manifest = read_manifest(folder, source)  # another process may have built it meanwhile
            if manifest is not None:
                return manifest
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{folder.name}-", dir=folder.parent))
        try:
            extra = build(tmp)
            write_manifest(tmp, source, extra)
            _remove(folder)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        manifest = read_manifest(folder, source)
        if manifest is None:  # pragma: no cover - would mean the file system lost our files
            raise OSError(f"cache folder {folder} was not sealed correctly; delete it and retry")
        return manifest
