"""The build-once cache: builds once, survives concurrent callers, rebuilds what is damaged."""
import threading

import pytest

from dymu_eval.offline.cache import ensure_built, read_manifest

SOURCE = {"what": "numbers", "version": 1}


def _builder(calls):
    def build(tmp):
        calls.append(tmp)
        (tmp / "data.txt").write_text("0123456789")
        return {"probe": [1.0]}
    return build


def test_builds_once_and_reuses(tmp_path):
    calls = []
    folder = tmp_path / "thing"
    first = ensure_built(folder, SOURCE, _builder(calls))
    second = ensure_built(folder, SOURCE, _builder(calls))
    assert len(calls) == 1
    assert first == second and first["extra"] == {"probe": [1.0]}
    assert (folder / "data.txt").read_text() == "0123456789"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".build-", ".trash-"))]


def test_concurrent_callers_build_once(tmp_path):
    calls = []
    folder = tmp_path / "thing"
    threads = [threading.Thread(target=ensure_built, args=(folder, SOURCE, _builder(calls))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert read_manifest(folder, SOURCE) is not None


@pytest.mark.parametrize("damage", ["truncate", "delete", "extra_file", "no_manifest"])
def test_damaged_folder_is_rebuilt(tmp_path, damage):
    calls = []
    folder = tmp_path / "thing"
    ensure_built(folder, SOURCE, _builder(calls))
    if damage == "truncate":
        (folder / "data.txt").write_text("01234")
    elif damage == "delete":
        (folder / "data.txt").unlink()
    elif damage == "extra_file":
        (folder / "junk.bin").write_bytes(b"x")
    else:
        (folder / "manifest.json").unlink()
    assert read_manifest(folder, SOURCE) is None
    ensure_built(folder, SOURCE, _builder(calls))
    assert len(calls) == 2
    assert (folder / "data.txt").read_text() == "0123456789"
    assert not (folder / "junk.bin").exists()


def test_other_source_or_force_rebuilds(tmp_path):
    calls = []
    folder = tmp_path / "thing"
    ensure_built(folder, SOURCE, _builder(calls))
    ensure_built(folder, {**SOURCE, "version": 2}, _builder(calls))
    ensure_built(folder, {**SOURCE, "version": 2}, _builder(calls), force=True)
    assert len(calls) == 3


def test_failed_build_leaves_old_folder_and_no_debris(tmp_path):
    calls = []
    folder = tmp_path / "thing"
    ensure_built(folder, SOURCE, _builder(calls))

    def broken(tmp):
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        ensure_built(folder, SOURCE, broken, force=True)
    assert read_manifest(folder, SOURCE) is not None
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["thing"]
