"""`dymu-eval tokens` end to end on tiny saved encoders, and the merge-map overlay."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dymu_eval.calibrate import encoder_identity
from dymu_eval.cli import main
from dymu_eval.merge import BatchTopK, Threshold, merges_per_layer
from dymu_eval.thresholds import ThresholdRecord, save_record
from dymu_eval.vision import VisionRunner
from dymu_eval.vision.maps import merge_map
from dymu_eval.vision.preprocess import ImageTransform
from tests.factories.towers import TOWER

LAYERS = TOWER.layers


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.new("RGB", (80, 64), (30, 90, 200)).save(folder / "flat.png")
    Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(folder / "noise.jpg")
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    Image.fromarray(ramp).save(folder / "sub" / "ramp.png")  # greyscale
    return folder


def _run(*argv) -> int:
    return main(["tokens", *map(str, argv)])


def test_tome_counts_and_maps(tiny_dirs, image_dir, tmp_path):
    out = tmp_path / "out.json"
    maps = tmp_path / "maps"
    assert _run("--encoder", tiny_dirs["clip"], "--images", image_dir, "--r", 5, "--json", out, "--maps", maps) == 0
    data = json.loads(out.read_text())
    assert data["method"] == "tome" and data["r_per_layer"] == [5] * LAYERS
    # names relative to the folders recorded once, so the JSON reads the same on any machine
    assert [e["image"] for e in data["images"]] == ["flat.png", "noise.jpg", "sub/ramp.png"]
    assert [e["map"] for e in data["images"]] == ["flat.png", "noise.png", "sub__ramp.png"]
    assert data["images_folder"] == str(image_dir) and data["maps_folder"] == str(maps)
    for e in data["images"]:
        assert e["tokens_per_layer"] == [65, 60, 55, 50, 45]
        assert e["final_tokens"] == 45 and e["visual_tokens"] == 44
    assert data["images"][1]["width"] == 90 and data["images"][1]["height"] == 70
    pngs = sorted(p.name for p in maps.iterdir())
    assert pngs == ["flat.png", "noise.png", "sub__ramp.png"]
    assert Image.open(maps / "noise.png").size == (64, 64)


def test_thresholds_file_gives_dtome(tiny_dirs, tiny_models, image_dir, tmp_path):
    runner = VisionRunner.from_model(tiny_models["siglip"])
    transform = ImageTransform.for_encoder("siglip", 64)
    images = [Image.open(p).convert("RGB") for p in sorted(image_dir.rglob("*.*"))]
    pixels, _ = transform(images)
    r = merges_per_layer(6, LAYERS)
    calib = BatchTopK(r)
    runner(pixels, calib)
    thr = tmp_path / "thr.json"
    record = ThresholdRecord(
        encoder=encoder_identity(runner, "tiny-siglip"),
        dataset={"name": "tiny"},
        calibration={"r_per_layer": r, "schedule": "constant", "r": 6},
        thresholds=calib.thresholds,
    )
    save_record(record, thr)
    out = tmp_path / "out.json"
    assert _run("--encoder", tiny_dirs["siglip"], "--images", image_dir, "--thresholds", thr, "--json", out) == 0
    data = json.loads(out.read_text())
    expected = runner(pixels, Threshold(calib.thresholds, r)).counts
    got = torch.tensor([e["tokens_per_layer"] for e in data["images"]])
    assert data["method"] == "dtome" and torch.equal(got, expected)
    assert data["images"][0]["visual_tokens"] == data["images"][0]["final_tokens"]  # SigLIP: no CLS


def test_llava_folder_runs_to_the_read_layer(tiny_llava_dir, image_dir, tmp_path):
    out = tmp_path / "out.json"
    assert _run("--encoder", tiny_llava_dir, "--images", image_dir, "--level", "low", "--json", out) == 0
    data = json.loads(out.read_text())
    assert data["layers_run"] == LAYERS - 1 and data["family"] == "clip"
    assert all(len(e["tokens_per_layer"]) == LAYERS for e in data["images"])
    assert data["r"] >= 1


def test_bad_inputs_name_the_culprit(tiny_dirs, image_dir, tmp_path, capsys):
    out = tmp_path / "o.json"
    thr = tmp_path / "thr.json"
    thr.write_text(json.dumps({"thresholds": [0.9, 0.9]}))
    assert _run("--encoder", tiny_dirs["clip"], "--images", image_dir, "--thresholds", thr, "--json", out) == 2
    assert f"{thr} is not a dymu-eval thresholds file" in capsys.readouterr().err
    missing = tmp_path / "nope.json"
    assert _run("--encoder", tiny_dirs["clip"], "--images", image_dir, "--thresholds", missing, "--json", out) == 2
    assert "not found" in capsys.readouterr().err
    assert _run("--encoder", tiny_dirs["clip"], "--images", image_dir, "--r", -1, "--json", out) == 2
    assert "--r must be >= 0" in capsys.readouterr().err
    bogus = tmp_path / "bert"
    bogus.mkdir()
    (bogus / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert _run("--encoder", bogus, "--images", image_dir, "--json", out) == 2
    assert "'bert' is not supported" in capsys.readouterr().err
    assert not out.exists()


def test_merge_map_colours_only_merged_groups():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    alone = merge_map(img, torch.arange(16), (4, 4))
    assert np.array_equal(np.asarray(alone), np.asarray(img))
    groups = torch.arange(16)
    groups[5] = 0  # patch (1,1) merged with patch (0,0)
    groups = torch.unique(groups, return_inverse=True)[1]
    shown = np.asarray(merge_map(img, groups, (4, 4))).astype(int)
    base = np.asarray(img).astype(int)
    assert (shown[8:16, 8:16] != base[8:16, 8:16]).any() and (shown[0:8, 0:8] != base[0:8, 0:8]).any()
    assert np.array_equal(shown[24:, 24:], base[24:, 24:])  # far from the merged group
