"""The error boundary: user mistakes become one-line DymuErrors naming the culprit, never tracebacks."""
import pytest
from PIL import Image

from dymu_eval import paths
from dymu_eval.cli import main
from dymu_eval.errors import ConfigError, DymuError, InstallError
from dymu_eval.fetch.download import Item, fetch_all


def test_bad_encoder_path_says_no_folder_and_no_hub_id(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    rc = main(["tokens", "--encoder", str(tmp_path / "missing" / "model"), "--images", str(tmp_path / "img"),
               "--json", str(tmp_path / "out.json")])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    assert f"encoder {tmp_path / 'missing' / 'model'}: no such folder, and not a hub id" in err
    assert "repo" not in err.lower()  # not the hub's repo-id format rules
    assert err.startswith("dymu-eval tokens: error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("device, says", [("gpu0", "not a torch device"), ("cuda:0", "no CUDA device is available")])
@pytest.mark.parametrize("command", ["tokens", "calibrate", "thresholds compare"])
def test_a_bad_device_is_named_before_anything_runs(tmp_path, capsys, monkeypatch, command, device, says):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    args = {"tokens": ["tokens", "--encoder", "enc", "--images", str(tmp_path / "img"), "--json", "o.json"],
            "calibrate": ["calibrate", "--encoder", "enc", "--dataset", "d", "--images", str(tmp_path / "img"),
                          "--batch-size", "1", "--out", str(tmp_path / "t.json")],
            "thresholds compare": ["thresholds", "compare", "--encoder", "enc", "--datasets", "a,b",
                                   "--images", str(tmp_path / "img")]}[command]
    rc = main([*args, "--device", device])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"--device {device}: {says}" in err


def test_missing_data_folder_is_an_install_error(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "_PACKAGE_ROOT", tmp_path / "pkg")
    monkeypatch.setattr(paths, "_SHARE", tmp_path / "share")
    with pytest.raises(InstallError, match="tasks"):
        paths.tasks_dir()
    assert issubclass(InstallError, DymuError)


def test_cli_prints_an_install_error_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(paths, "_PACKAGE_ROOT", tmp_path / "pkg")
    monkeypatch.setattr(paths, "_SHARE", tmp_path / "share")
    assert main(["paths", "tasks"]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "data folder 'tasks' not found" in err


def test_duplicate_fetch_names_are_named(tmp_path):
    items = [Item("http://x/a.jpg", None, "a.jpg"), Item("http://y/a.jpg", None, "a.jpg")]
    with pytest.raises(ConfigError, match="a.jpg"):
        fetch_all(items, tmp_path, progress=False)
