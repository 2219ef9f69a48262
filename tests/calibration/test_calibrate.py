"""Calibration: batch top-k taus, their mean over batches and processes (dymu_eval/calibrate.py),
deterministic files, and bad images that stop the run or are skipped and reported."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import FAMILIES, IMAGE, LAYERS, write_images
from PIL import Image

from dymu_eval.calibrate import CalibrationSettings, calibrate
from dymu_eval.cli import main
from dymu_eval.errors import ConfigError, InputImageError
from dymu_eval.images import FolderImages, ImageListImages
from dymu_eval.merge import BatchTopK, merges_per_layer
from dymu_eval.thresholds import load_record
from dymu_eval.vision.loading import load_runner
from dymu_eval.vision.preprocess import preprocess_for

B = 4


def _load(folder):
    runner = load_runner(str(folder), torch.float32, "cpu")
    return runner, preprocess_for(str(folder), runner)


def _pixels(pre, source, indices):
    return pre([source.load(i) for i in indices])


def _calibrate(runner, pre, source, r_per_layer, settings=None, **kw):
    settings = settings or CalibrationSettings()
    settings = replace(settings, **{"batch_size": B, "stats_images": 0, "progress": False, **kw})
    return calibrate(runner, source, r_per_layer, settings, preprocess=pre, created="fixed")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_batch_replay_merges_exactly_batch_times_r(family, tiny_dirs, image_dir):
    runner, pre = _load(tiny_dirs[family])
    source = FolderImages(image_dir).head(B)
    r = merges_per_layer(3, runner.num_layers)
    rec = _calibrate(runner, pre, source, r)
    assert all(t is not None and t > 0 for t in rec.thresholds)  # not clamped: the property is not trivial
    pixels = _pixels(pre, source, range(B))
    out = runner(pixels, rec.policy(call="batched"))  # the batch path, as calibration lays out tokens
    removed = out.counts[:, :-1] - out.counts[:, 1:]  # (B, layers) merges per image and layer
    assert removed.sum(dim=0).tolist() == [B * ri for ri in r]
    assert len(set(removed.sum(dim=1).tolist())) > 1  # images keep different numbers of tokens
    batch = runner(pixels, BatchTopK(r))
    assert torch.equal(batch.counts, out.counts)  # the very same merges, image by image


def test_running_mean_over_batches(tiny_dirs, image_dir):
    runner, pre = _load(tiny_dirs["clip"])
    source = FolderImages(image_dir).head(3 * B + 2)
    r = merges_per_layer(2, runner.num_layers)
    rec = _calibrate(runner, pre, source, r)
    per_batch = []
    for g in range(3):
        policy = BatchTopK(r)
        runner(_pixels(pre, source, range(g * B, (g + 1) * B)), policy)
        per_batch.append(policy.thresholds)
    expected = [sum(col) / 3 for col in zip(*per_batch)]
    assert rec.thresholds == pytest.approx(expected, rel=1e-12, abs=0)
    assert len({tuple(t) for t in per_batch}) == 3  # the batches really differ
    cal = rec.calibration
    assert (cal["batches"], cal["images_used"], cal["images_dropped"], cal["processes"]) == (3, 3 * B, 2, 1)


def test_layers_without_merges_are_null(tiny_dirs, image_dir):
    runner, pre = _load(tiny_dirs["siglip"])
    source = FolderImages(image_dir).head(B)
    r = merges_per_layer(1, runner.num_layers, "linear")
    assert r[-1] == 0
    rec = _calibrate(runner, pre, source, r, stats_images=B)
    assert rec.thresholds[-1] is None and all(t is not None for t in rec.thresholds[:-1])
    out = runner(_pixels(pre, source, range(B)), rec.policy())
    assert torch.equal(out.counts[:, -1], out.counts[:, -2])  # the r = 0 layer never merges
    stats = rec.token_stats
    assert stats["images"] == B and stats["mean"] == pytest.approx(out.counts[:, -1].float().mean().item())
    assert stats["min"] == out.counts[:, -1].min().item() and stats["patches"] == (IMAGE // 4) ** 2


def _save_tiny_llava(folder, seed: int):
    """A tiny LLaVA saved in small shards (so an index file exists), as a real checkpoint would be."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(seed)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
                                       intermediate_size=64, image_size=IMAGE, patch_size=4),
        text_config=LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                num_key_value_heads=4, vocab_size=64),
        image_token_id=63, vision_feature_layer=-2,
    )
    LlavaForConditionalGeneration(cfg).save_pretrained(folder, max_shard_size="20KB")


def test_llava_runs_to_the_read_layer(tmp_path, image_dir):
    _save_tiny_llava(tmp_path / "llava", seed=0)
    assert (tmp_path / "llava" / "model.safetensors.index.json").is_file()
    runner, pre = _load(tmp_path / "llava")
    assert runner.default_layers_run == LAYERS - 1
    rec = _calibrate(runner, pre or None, FolderImages(image_dir).head(B), merges_per_layer(2, LAYERS))
    assert rec.thresholds[-1] is None and all(t is not None for t in rec.thresholds[:-1])
    assert (rec.encoder.layers_run, rec.encoder.read_layer, rec.encoder.num_layers) == (LAYERS - 1, -2, LAYERS)


def test_calibrate_command_on_llava_builds_only_the_tower(tmp_path, image_dir, monkeypatch):
    from transformers import LlamaModel, LlavaForConditionalGeneration

    _save_tiny_llava(tmp_path / "llava", seed=1)
    full = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava", dtype=torch.float32)

    def forbidden(*args, **kwargs):
        raise AssertionError("calibrate must not build the language model")

    with monkeypatch.context() as patch:
        patch.setattr(LlamaModel, "__init__", forbidden)
        patch.setattr(LlavaForConditionalGeneration, "from_pretrained", forbidden)
        out = tmp_path / "llava.json"
        assert _cli(_calibrate_args(tmp_path / "llava", image_dir, out, "--num-images", 4)) == 0
    rec = load_record(out)
    rec.validate_for(full.model.vision_tower)  # thresholds are filed for the real tower weights
    assert (rec.encoder.layers_run, rec.encoder.read_layer) == (LAYERS - 1, -2)


def _cli(args):
    return main([str(a) for a in args])


def _calibrate_args(model_dir, images, out, *extra):
    return ["calibrate", "--encoder", model_dir, "--dataset", "toy", "--images", images, "--merges-per-layer", 3,
            "--batch-size", 2, "--out", out, "--no-progress", "--stats-images", 4, *extra]


def test_repeated_runs_give_identical_files(tiny_dirs, image_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert _cli(_calibrate_args(tiny_dirs["dinov2"], image_dir, a, "--num-images", 6)) == 0
    assert _cli(_calibrate_args(tiny_dirs["dinov2"], image_dir, b, "--num-images", 6)) == 0
    assert a.read_bytes() == b.read_bytes()
    rec = load_record(a)
    assert rec.created == "2023-11-14T22:13:20+00:00" and rec.calibration["r"] == 3
    assert rec.dataset["num_images"] == 6 and rec.calibration["preprocess"].startswith("BitImageProcessor")
    rec.validate_for(load_runner(str(tiny_dirs["dinov2"]), torch.float32, "cpu").model)
    assert "wrote" in capsys.readouterr().out
    assert _cli(_calibrate_args(tiny_dirs["dinov2"], image_dir, a, "--num-images", 6)) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert _cli(_calibrate_args(tiny_dirs["dinov2"], image_dir, a, "--num-images", 4, "--overwrite")) == 0
    assert load_record(a).dataset["num_images"] == 4


def test_default_output_goes_to_user_cache(tiny_dirs, image_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DYMU_EVAL_CACHE", str(tmp_path))
    args = ["calibrate", "--encoder", tiny_dirs["clip"], "--dataset", "toy", "--images", image_dir,
            "--level", "high", "--batch-size", 4, "--num-images", 4, "--no-progress", "--stats-images", 0]
    assert _cli(args) == 0
    expected = tmp_path / "thresholds" / f"{Path(tiny_dirs['clip']).name}__toy__constant__high.json"
    assert load_record(expected).level == "high"


@pytest.mark.slow
def test_two_processes_match_one(tiny_dirs, image_dir, tmp_path, monkeypatch):
    """2 processes x batch B see the batches one process sees in turn: same taus, same mean."""
    images = tmp_path / "nine"
    write_images(images, 9, seed=3)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(a) for a in _calibrate_args(tiny_dirs["clip"], images, one)]
    assert _cli(args) == 0
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "dymu_eval.cli"]
    args[args.index(str(one))] = str(two)
    done = subprocess.run(launcher + args, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    r1, r2 = load_record(one), load_record(two)
    assert r2.calibration["processes"] == 2 and r1.calibration["processes"] == 1
    assert r2.thresholds == r1.thresholds
    for key in ("batches", "images_used", "images_dropped", "batch_size"):
        assert r2.calibration[key] == r1.calibration[key], key
    assert r1.calibration["images_dropped"] == 1
    for key in ("images", "mean", "min", "max", "per_layer_mean"):
        assert r2.token_stats[key] == pytest.approx(r1.token_stats[key]), key
    assert r2.dataset == r1.dataset and r2.encoder == r1.encoder


def _folder_with_bad_images(tmp_path):
    folder = tmp_path / "mixed"
    write_images(folder, 6, seed=5)
    (folder / "img_001b.png").write_bytes(b"\x89PNG garbage")
    Image.new("RGB", (1, 1)).save(folder / "img_004b.png")
    return folder


def test_bad_image_stops_by_default(tiny_dirs, tmp_path, capsys):
    folder = _folder_with_bad_images(tmp_path)
    args = ["calibrate", "--encoder", tiny_dirs["clip"], "--dataset", "toy", "--images", folder, "--r", 2,
            "--batch-size", 4, "--out", tmp_path / "x.json", "--no-progress"]
    assert _cli(args) == 2
    err = capsys.readouterr().err
    assert str(folder / "img_001b.png") in err and "--skip-bad" in err
    assert not (tmp_path / "x.json").exists()


def test_skip_bad_reports_every_skipped_path(tiny_dirs, tmp_path, capsys):
    folder = _folder_with_bad_images(tmp_path)
    out = tmp_path / "x.json"
    args = ["calibrate", "--encoder", tiny_dirs["clip"], "--dataset", "toy", "--images", folder, "--r", 2,
            "--batch-size", 4, "--out", out, "--no-progress", "--skip-bad", "--workers", 1]
    assert _cli(args) == 0
    err = capsys.readouterr().err
    rec = load_record(out)
    skipped = {s["image"]: s["reason"] for s in rec.calibration["skipped"]}
    assert set(skipped) == {str(folder / "img_001b.png"), str(folder / "img_004b.png")}
    assert "too small" in skipped[str(folder / "img_004b.png")]
    assert all(path in err for path in skipped)
    assert rec.calibration["images_used"] == 6 and rec.calibration["batches"] == 2
    assert rec.token_stats["images"] == 6


def test_input_errors(tiny_dirs, image_dir, tmp_path, capsys):
    runner, pre = _load(tiny_dirs["clip"])
    with pytest.raises(ConfigError, match="cannot fill one batch of 64"):
        _calibrate(runner, pre, FolderImages(image_dir), merges_per_layer(2, LAYERS), batch_size=64)
    with pytest.raises(ConfigError, match="r = 0"):
        _calibrate(runner, pre, FolderImages(image_dir), [0] * LAYERS)
    with pytest.raises(ConfigError, match="2 entries but the encoder has 3"):
        _calibrate(runner, pre, FolderImages(image_dir), [1, 1])
    assert _cli(["calibrate", "--encoder", tiny_dirs["clip"], "--dataset", "toy", "--image-list",
                 tmp_path / "x.json", "--batch-size", 2]) == 2
    assert "needs --image-root" in capsys.readouterr().err
    assert _cli(["calibrate", "--encoder", tmp_path, "--dataset", "toy", "--images", image_dir,
                 "--batch-size", 2, "--out", tmp_path / "o.json"]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_image_list_source_identity(tiny_dirs, image_dir, tmp_path):
    entries = [{"image": p.name} for p in sorted(image_dir.glob("*.png"))[:B]] + [{"conversations": []}]
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps(entries))
    runner, pre = _load(tiny_dirs["clip"])
    source = ImageListImages(listing, image_dir, name="llava_instruct")
    rec = _calibrate(runner, pre, source, merges_per_layer(2, LAYERS), settings=CalibrationSettings(level=None, r=2))
    assert rec.dataset["kind"] == "image_list" and rec.dataset["num_images"] == B
    assert rec.calibration["notes"] == ["1 of 5 entries have no 'image' field and were skipped"]
    same = _calibrate(runner, pre, FolderImages(image_dir).head(B), merges_per_layer(2, LAYERS))
    assert same.thresholds == rec.thresholds  # same images, same order: same thresholds


def test_bad_image_in_api_names_it(tiny_dirs, tmp_path):
    folder = _folder_with_bad_images(tmp_path)
    runner, pre = _load(tiny_dirs["clip"])
    with pytest.raises(InputImageError, match="img_001b.png"):
        _calibrate(runner, pre, FolderImages(folder), merges_per_layer(2, LAYERS))


def test_merge_order_is_recorded_and_changes_the_thresholds(tiny_dirs, image_dir):
    runner, pre = _load(tiny_dirs["siglip"])  # no class token
    source = FolderImages(image_dir).head(B)
    r = merges_per_layer(3, runner.num_layers)
    ref = _calibrate(runner, pre, source, r, stats_images=B, settings=CalibrationSettings(r=3))
    pos = _calibrate(runner, pre, source, r, stats_images=B, settings=CalibrationSettings(r=3, merge_order="position"))
    assert ref.calibration["merge_order"] == "reference" and pos.calibration["merge_order"] == "position"
    assert pos.key == ref.key + "__position"
    assert ref.thresholds[0] == pos.thresholds[0]  # the first layer sees the same sequence
    assert ref.thresholds[1:] != pos.thresholds[1:]  # later layers pair up other tokens
    assert ref.token_stats["call"] == "per_image"
    with pytest.raises(ConfigError, match="merge_order"):
        _calibrate(runner, pre, source, r, settings=CalibrationSettings(merge_order="sorted"))
