"""A hostile or sloppy image list: hashes that are paths, local and odd URLs, rows without a hash,
and bad flags. Each is one line naming the row or flag, and nothing outside ``--out`` is touched."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from dymu_eval.cli import main as cli_main
from dymu_eval.errors import ConfigError
from dymu_eval.fetch.download import Item, fetch_all

BODY = b"\x89PNG pretend image bytes" * 40
SHA = hashlib.sha256(BODY).hexdigest()


def _listing(tmp_path: Path, *rows: dict) -> Path:
    path = tmp_path / "list.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _fetch(listing: Path, out: Path, *extra: str) -> int:
    return cli_main(["fetch-images", "pixmo_cap", "--num", "5", "--out", str(out), "--source", str(listing),
                     "--no-progress", "--retries", "0", "--timeout", "1", *extra])


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("dymu-eval fetch-images: error: ")
    return err


@pytest.fixture()
def victim(tmp_path: Path) -> Path:
    folder = tmp_path / "victim"
    folder.mkdir()
    for name in ("precious.jpg", "also_precious.png"):
        (folder / name).write_bytes(b"keep me")
    return folder


@pytest.mark.parametrize("bad_hash", ["../../victim/precious", "{victim}/also_precious", "ab" * 31 + "zz",
                                      "ab" * 31, SHA + "0"])
def test_a_hash_that_is_not_a_sha256_is_refused_and_nothing_is_touched(
        tmp_path: Path, victim: Path, capsys: pytest.CaptureFixture, bad_hash: str) -> None:
    bad_hash = bad_hash.format(victim=victim)
    good = {"image_url": "http://example.invalid/a.png", "image_sha256": SHA}
    listing = _listing(tmp_path, good, {"image_url": "http://example.invalid/b.png", "image_sha256": bad_hash})
    out = tmp_path / "fetch" / "a"
    assert _fetch(listing, out) == 2
    err = _one_error_line(capsys)
    assert f"{listing} line 2: image_sha256 {bad_hash!r} is not a sha256 (64 hex characters)" in err
    assert sorted(p.name for p in victim.iterdir()) == ["also_precious.png", "precious.jpg"]
    assert all(p.read_bytes() == b"keep me" for p in victim.iterdir())
    assert not out.exists()  # refused before any folder was made


def test_a_symlink_out_of_the_folder_is_refused_before_any_work(tmp_path: Path, victim: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim / "precious.jpg", out / f"{SHA}.jpg")
    with pytest.raises(ConfigError, match=rf"file name '{SHA}.jpg' would lie outside the output folder"):
        fetch_all([Item("http://example.invalid/x.jpg", SHA, f"{SHA}.jpg")], out, progress=False)
    assert (victim / "precious.jpg").read_bytes() == b"keep me"
    with pytest.raises(ConfigError, match=r"'\.\./x\.jpg' would lie outside"):
        fetch_all([Item("http://example.invalid/x.jpg", SHA, "../x.jpg")], out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [f"{SHA}.jpg"]  # no .part file either


@pytest.mark.parametrize("url, needle", [
    ("file:///etc/passwd", "is a local file; pass --allow-local-files"),
    ("ftp://example.invalid/a.jpg", "is not http(s)"),
    ("data:image/png;base64,AAAA", "is not http(s)"),
    ("/etc/passwd", "is not http(s)"),
])
def test_only_http_urls_unless_local_files_are_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          url: str, needle: str) -> None:
    listing = _listing(tmp_path, {"image_url": url, "image_sha256": SHA})
    out = tmp_path / "out"
    assert _fetch(listing, out) == 2
    err = _one_error_line(capsys)
    assert f"{listing} line 1: image URL {url!r} {needle}" in err
    assert not out.exists()


def test_a_row_without_a_hash_needs_allow_unverified_and_is_never_counted_verified(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, copy = tmp_path / "local.png", tmp_path / "copy.png"
    src.write_bytes(BODY)
    copy.write_bytes(BODY)
    listing = _listing(tmp_path, {"image_url": src.as_uri(), "image_sha256": SHA.upper()},
                       {"image_url": copy.as_uri()})
    out = tmp_path / "out"
    assert _fetch(listing, out, "--allow-local-files") == 2
    assert "line 2: no image_sha256, so the image cannot be verified; pass --allow-unverified" in \
        _one_error_line(capsys)
    assert not out.exists()

    for attempt in ("downloaded", "cached"):
        assert _fetch(listing, out, "--allow-local-files", "--allow-unverified") == 0
        summary = capsys.readouterr().out
        assert "1 of them NOT verified (no sha256 in the list" in summary
        report = json.loads((out / "fetch_report.json").read_text())
        assert (report[attempt], report["unverified"], report["failed"]) == (2, 1, 0)
        by_name = {Path(i["path"]).name: i for i in report["items"]}
        assert by_name[f"{SHA}.png"]["verified"] is True  # upper-case hash accepted, file named lower-case
        assert by_name["image_000001.png"]["verified"] is False
        assert (out / "image_000001.png").read_bytes() == BODY
        assert (out / f"{SHA}.png").stat().st_mode & 0o044 == 0o044 & ~_umask()  # readable as the umask allows


def test_out_that_is_a_file_and_bad_numbers_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    listing = _listing(tmp_path, {"image_url": "http://example.invalid/a.png", "image_sha256": SHA})
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("mine")
    assert _fetch(listing, not_a_folder) == 2
    assert f"--out {not_a_folder}: is a file; give a folder" in _one_error_line(capsys)
    assert not_a_folder.read_text() == "mine"
    with pytest.raises(ConfigError, match=f"output folder {not_a_folder}: cannot create it"):
        fetch_all([Item("http://example.invalid/x.jpg", SHA, f"{SHA}.jpg")], not_a_folder, progress=False)
    out = tmp_path / "out"
    for flags, needle in [(["--retries", "-1"], "--retries must be >= 0, got -1"),
                          (["--workers", "0"], "--workers must be >= 1, got 0"),
                          (["--backoff", "-1"], "--backoff must be >= 0, got -1"),
                          (["--timeout", "0"], "--timeout must be > 0, got 0"),
                          (["--max-seconds", "-5"], "--max-seconds must be > 0, got -5")]:
        assert _fetch(listing, out, *flags) == 2
        assert needle in _one_error_line(capsys)
    assert not out.exists()


def test_help_names_the_safety_flags(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli_main(["fetch-images", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-local-files" in text and "--allow-unverified" in text and "http(s)" in text
