"""The image fetcher against a local HTTP server with slow, failing, wrong-hash and truncated answers."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dymu_eval.cli import main as cli_main
from dymu_eval.errors import ConfigError
from dymu_eval.fetch.download import Item, fetch_all, sha256_file
from dymu_eval.fetch.pixmo import load_items

GOOD = {f"/ok/{i}.jpg": bytes([i]) * (1000 + 97 * i) for i in range(4)}
FLAKY_BODY = b"flaky-but-fine" * 50
OTHER_BODY = b"not the image you asked for"
TRUNC_BODY = b"x" * 5000


class _Handler(BaseHTTPRequestHandler):
    hits: Counter = Counter()

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, body: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        _Handler.hits[self.path] += 1
        if self.path in GOOD:
            self._send(GOOD[self.path])
        elif self.path == "/slow.jpg":
            time.sleep(1.5)
            self._send(b"too late")
        elif self.path == "/flaky.jpg":
            if _Handler.hits[self.path] == 1:
                self.send_error(500, "transient")
            else:
                self._send(FLAKY_BODY)
        elif self.path == "/fail500.jpg":
            self.send_error(500, "always broken")
        elif self.path == "/wronghash.jpg":
            self._send(OTHER_BODY)
        elif self.path == "/truncated.jpg":
            self._send(TRUNC_BODY[:1000], length=len(TRUNC_BODY))
            self.close_connection = True
        else:
            self.send_error(404, "no such image")


@pytest.fixture()
def server():
    _Handler.hits = Counter()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _items(base: str) -> list[Item]:
    items = [Item(base + p, _sha(body), f"{_sha(body)}.jpg") for p, body in GOOD.items()]
    items += [
        Item(base + "/slow.jpg", _sha(b"too late"), "slow.jpg"),
        Item(base + "/flaky.jpg", _sha(FLAKY_BODY), "flaky.jpg"),
        Item(base + "/fail500.jpg", _sha(b"whatever"), "fail500.jpg"),
        Item(base + "/wronghash.jpg", _sha(b"the real image"), "wronghash.jpg"),
        Item(base + "/truncated.jpg", _sha(TRUNC_BODY), "truncated.jpg"),
        Item(base + "/missing.jpg", _sha(b"gone"), "missing.jpg"),
    ]
    return items


FAST = dict(timeout=0.5, retries=2, backoff=0.05, max_seconds=5.0)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_fault_cases_and_resume(server: str, tmp_path: Path) -> None:
    out = tmp_path / "imgs"
    items = _items(server)
    outcomes = {Path(o.path).name: o for o in fetch_all(items, out, workers=4, progress=False, **FAST)}

    for item in items[:4]:
        o = outcomes[item.name]
        assert o.status == "downloaded" and sha256_file(out / item.name) == item.sha256
    assert outcomes["flaky.jpg"].status == "downloaded" and outcomes["flaky.jpg"].attempts == 2
    assert (out / "flaky.jpg").read_bytes() == FLAKY_BODY
    # failures: nothing under the final name, no partial files, errors say why
    for name, needle, attempts in [("slow.jpg", "timed out", 3), ("fail500.jpg", "500", 3),
                                   ("wronghash.jpg", "sha256 mismatch", 1), ("truncated.jpg", "truncated", 3),
                                   ("missing.jpg", "404", 1)]:
        o = outcomes[name]
        assert o.status == "failed", name
        assert needle in o.error.lower() or needle in o.error, (name, o.error)
        assert o.attempts == attempts, (name, o.attempts)
        assert not (out / name).exists(), name
    assert _leftovers(out) == []

    # resume: verified files are not requested again; a corrupted one is re-fetched
    hits_before = dict(_Handler.hits)
    corrupt = items[1]
    (out / corrupt.name).write_bytes(b"corrupted on disk")
    again = {Path(o.path).name: o for o in fetch_all(items[:4], out, workers=2, progress=False, **FAST)}
    assert [again[i.name].status for i in items[:4]] == ["cached", "downloaded", "cached", "cached"]
    assert _Handler.hits[items[0].url[len(server):]] == hits_before[items[0].url[len(server):]]
    assert sha256_file(out / corrupt.name) == corrupt.sha256


def test_cli_report_and_exit_code(server: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    listing = tmp_path / "pixmo.jsonl"
    rows = [{"image_url": server + p, "image_sha256": _sha(b), "caption": "c"} for p, b in GOOD.items()]
    rows.insert(2, dict(rows[0]))  # the same image listed twice is fetched once
    listing.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "pixmo"
    args = ["fetch-images", "pixmo_cap", "--num", "5", "--out", str(out), "--source", str(listing), "--no-progress",
            "--timeout", "1", "--retries", "1", "--backoff", "0.01"]
    assert cli_main(args) == 0
    report = json.loads((out / "fetch_report.json").read_text())
    assert (report["requested"], report["downloaded"], report["failed"]) == (4, 4, 0)
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted(f"{_sha(b)}.jpg" for b in GOOD.values())

    rows.append({"image_url": server + "/fail500.jpg", "image_sha256": _sha(b"x")})
    listing.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert cli_main(args[:3] + ["10"] + args[4:]) == 1
    report = json.loads((out / "fetch_report.json").read_text())
    assert (report["cached"], report["failed"]) == (4, 1)
    assert "fail500.jpg" in capsys.readouterr().err


def test_bad_lists(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image_url": "http://x/a.jpg"}\n{broken\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2"):
        load_items(str(bad), 5)
    nourl = tmp_path / "nourl.jsonl"
    nourl.write_text('{"caption": "no url here"}\n')
    with pytest.raises(ConfigError, match="no image URL"):
        load_items(str(nourl), 5)
    with pytest.raises(ConfigError, match="num must be positive"):
        load_items(str(nourl), 0)


def test_hub_source_fails_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):
        load_items(None, 3)
    assert time.monotonic() - start < 2
