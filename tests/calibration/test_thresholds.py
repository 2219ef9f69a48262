"""The threshold cache: file format, validation on load and against a model, atomic writes,
no silent overwrite, lookup order, the shipped published entry and the CLI."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from dymu_eval.cli import main
from dymu_eval.errors import ThresholdCacheError
from dymu_eval.paths import thresholds_dir
from dymu_eval.thresholds import (
    EncoderIdentity,
    ThresholdCache,
    ThresholdRecord,
    encoder_fingerprint,
    fingerprints_match,
    load_record,
    save_record,
)
from tests.factories.towers import CALIB_TOWER, build_tower

LAYERS = CALIB_TOWER.layers


def build_tiny(family: str, seed: int = 0):
    return build_tower(family, CALIB_TOWER, seed)


PUBLISHED = "clip-vit-large-patch14-336__llava_instruct__constant__low"


def make_record(model=None, name="tiny-clip", dataset="toy", level="low", values=None) -> ThresholdRecord:
    model = model if model is not None else build_tiny("clip")
    return ThresholdRecord(
        encoder=EncoderIdentity(
            name=name, num_layers=LAYERS, layers_run=LAYERS, fingerprint=encoder_fingerprint(model),
            family="clip", hidden_size=32, patch_size=4, image_size=32,
        ),
        dataset={"name": dataset, "kind": "folder", "source": "/x", "num_images": 8, "fingerprint": "sha256:0"},
        calibration={"level": level, "r": 3, "r_per_layer": [3] * LAYERS, "schedule": "constant", "batch_size": 4},
        thresholds=values or [0.9, 0.8, None],
        created="2025-01-01T00:00:00+00:00",
    )


def test_roundtrip_is_byte_stable(tmp_path):
    rec = make_record()
    path = save_record(rec, tmp_path / "a.json")
    again = load_record(path)
    assert again.dumps() == rec.dumps() == path.read_text()
    assert again.key == "tiny-clip__toy__constant__low"
    assert json.loads(path.read_text())["format_version"] == 1


def test_no_silent_overwrite_and_atomic(tmp_path, monkeypatch):
    path = save_record(make_record(), tmp_path / "a.json")
    original = path.read_text()
    with pytest.raises(ThresholdCacheError, match="already exists.*--overwrite"):
        save_record(make_record(values=[0.1, 0.2, None]), path)
    assert path.read_text() == original

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_record(make_record(values=[0.1, 0.2, None]), path, overwrite=True)
    assert path.read_text() == original  # the old file survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary left behind
    monkeypatch.undo()
    save_record(make_record(values=[0.1, 0.2, None]), path, overwrite=True)
    assert load_record(path).thresholds == [0.1, 0.2, None]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: {**d, "format_version": 99}, "format_version 99"),
        (lambda d: {k: v for k, v in d.items() if k != "thresholds"}, 'lacks the "thresholds"'),
        (lambda d: {**d, "encoder": {k: v for k, v in d["encoder"].items() if k != "num_layers"}},
         "encoder.num_layers"),
        (lambda d: {**d, "thresholds": d["thresholds"][:2]}, "holds 2 thresholds but its encoder has 3 layers"),
        (lambda d: {**d, "thresholds": [0.9, "x", None]}, "layer 1 threshold 'x'"),
        (lambda d: {"hello": 1}, "not a dymu-eval thresholds file"),
    ],
)
def test_bad_files_fail_with_path_and_advice(tmp_path, mutate, message):
    data = make_record().to_json()
    bad = mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    with pytest.raises(ThresholdCacheError, match=message) as info:
        load_record(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ThresholdCacheError, match="not found"):
        load_record(tmp_path / "nothing.json")


def test_validate_for_same_weights_any_dtype():
    model = build_tiny("clip")
    rec = make_record(model)
    rec.validate_for(model)
    rec.validate_for(build_tiny("clip").to(torch.bfloat16))
    rec.validate_for(build_tiny("clip").to(torch.float16))


def test_validate_for_other_weights_says_what_to_do():
    rec = make_record(build_tiny("clip", seed=0))
    other = build_tiny("clip", seed=1)  # same architecture, different weights
    assert not fingerprints_match(rec.encoder.fingerprint, encoder_fingerprint(other))
    with pytest.raises(ThresholdCacheError, match="other weights") as info:
        rec.validate_for(other)
    assert "dymu-eval calibrate --encoder tiny-clip" in str(info.value)
    # both overrides, spelled as the commands and lmms-eval take them
    assert "--ignore-fingerprint (dymu-eval tokens, thresholds compare)" in str(info.value)
    assert "model_arg ignore_fingerprint=true (lmms-eval)" in str(info.value)
    rec.validate_for(other, ignore_fingerprint=True)


def test_the_fingerprint_override_warns_only_when_it_overrides(caplog):
    model = build_tiny("clip", seed=0)
    rec = make_record(model)
    with caplog.at_level("WARNING", logger="dymu_eval.thresholds"):
        rec.validate_for(model, ignore_fingerprint=True)
        assert caplog.text == ""
        rec.validate_for(build_tiny("clip", seed=1), ignore_fingerprint=True)
    assert "calibrated on other weights" in caplog.text and "used anyway" in caplog.text


def test_a_folder_is_named_as_a_folder(tmp_path):
    (tmp_path / "t.json").mkdir()
    with pytest.raises(ThresholdCacheError, match=r"t.json is a folder; give a thresholds .json file"):
        load_record(tmp_path / "t.json")
    with pytest.raises(ThresholdCacheError, match=r"t.json is a folder; give the thresholds file's name"):
        save_record(make_record(), tmp_path / "t.json", overwrite=True)
    assert list((tmp_path / "t.json").iterdir()) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = save_record(make_record(), tmp_path / "a.json")
        again = save_record(make_record(), path, overwrite=True)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode and again.stat().st_mode & 0o777 == mode


def test_validate_for_layer_count_and_family_shape():
    rec = make_record()
    deeper = build_tower("clip", replace(CALIB_TOWER, layers=LAYERS + 1))
    with pytest.raises(ThresholdCacheError, match="3 layers .* has 4"):
        rec.validate_for(deeper)
    with pytest.raises(ThresholdCacheError, match="3 layers"):
        rec.validate_for(deeper, ignore_fingerprint=True)  # the override never skips the layer check
    wider = build_tower("clip", replace(CALIB_TOWER, hidden=64))
    with pytest.raises(ThresholdCacheError, match="hidden_size=32"):
        rec.validate_for(wider)


def test_published_entry_shipped_and_accepted_by_name():
    rec = load_record(thresholds_dir() / f"{PUBLISHED}.json")
    assert rec.encoder.fingerprint is None and "unknown" in rec.encoder.fingerprint_note
    assert rec.key == PUBLISHED and rec.level == "low" and rec.r_per_layer == [21] * 24
    assert len(rec.thresholds) == 24 and rec.thresholds[0] == 0.99609375 and rec.thresholds[-1] == 0.81640625
    assert "2504.17040" in rec.provenance
    cache = ThresholdCache()
    assert cache.lookup("openai/clip-vit-large-patch14-336", "llava_instruct", level="low").key == PUBLISHED
    assert cache.lookup("llava-hf/llava-1.5-7b-hf", "llava_instruct", level="low").key == PUBLISHED
    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14)
    with torch.device("meta"):
        clip_l = CLIPVisionModel(config)
        rec.validate_for(clip_l)  # unknown fingerprint: the name and architecture decide
        config.num_hidden_layers = 12
        with pytest.raises(ThresholdCacheError, match="24 layers"):
            rec.validate_for(CLIPVisionModel(config))
    policy = rec.policy(layers_run=23)
    assert policy.num_layers == 23 and policy.thresholds[:2] == [0.99609375, 0.97265625]
    assert rec.merge_order == policy.merge_order == "reference"  # found by the official code


def _with_order(rec: ThresholdRecord, order: str | None, provenance: str | None = None) -> ThresholdRecord:
    calibration = {k: v for k, v in rec.calibration.items() if k != "merge_order"}
    if order is not None:
        calibration["merge_order"] = order
    rec.calibration, rec.provenance = calibration, provenance
    return rec


def test_merge_order_is_recorded_keyed_and_enforced(tmp_path):
    ref = _with_order(make_record(values=[0.5, 0.5, None]), "reference")
    pos = _with_order(make_record(values=[0.4, 0.4, None]), "position")
    assert ref.key == "tiny-clip__toy__constant__low" and pos.key == "tiny-clip__toy__constant__low__position"
    cache = ThresholdCache([tmp_path])
    cache.save(ref)
    cache.save(pos)
    assert cache.lookup("tiny-clip", "toy", level="low").thresholds[0] == 0.5
    assert cache.lookup("tiny-clip", "toy", level="low", merge_order="position").thresholds[0] == 0.4
    assert ref.policy().merge_order == "reference" and pos.policy().merge_order == "position"
    assert pos.policy(call="batched").call == "batched"
    with pytest.raises(ThresholdCacheError, match="merge_order=position.*merge_order=reference.*--merge-order"):
        ref.policy(merge_order="position")
    with pytest.raises(ThresholdCacheError, match="calibrated with merge_order=position"):
        pos.policy(merge_order="reference")


def test_files_without_merge_order(tmp_path):
    """dymu-eval's own older calibrations merged in position order; other (published) files come
    from the official code, i.e. reference order. A stale file under the reference key is skipped
    with a message, not used."""
    old = _with_order(make_record(), None, "calibrated with dymu-eval 0.1.0 (batch top-k threshold finding)")
    published = _with_order(make_record(), None, "Published by the DyMU authors")
    assert old.merge_order == "position" and published.merge_order == "reference"
    path = tmp_path / "tiny-clip__toy__constant__low.json"
    path.write_text(old.dumps().replace('"key": "tiny-clip__toy__constant__low__position"',
                                        '"key": "tiny-clip__toy__constant__low"'))
    assert load_record(path).merge_order == "position"
    cache = ThresholdCache([tmp_path])
    with pytest.raises(ThresholdCacheError, match="another merge order, not used.*--overwrite"):
        cache.lookup("tiny-clip", "toy", level="low")
    assert cache.lookup("tiny-clip", "toy", level="low", merge_order="position").source_path == path


def test_lookup_order_explicit_then_repo_then_user(tmp_path):
    repo, user, explicit = tmp_path / "repo", tmp_path / "user", tmp_path / "mine.json"
    key = make_record().key
    save_record(make_record(values=[0.3, 0.3, None]), user / f"{key}.json")
    cache = ThresholdCache([repo, user])
    assert cache.lookup("tiny-clip", "toy", level="low").thresholds[0] == 0.3
    save_record(make_record(values=[0.2, 0.2, None]), repo / f"{key}.json")
    assert cache.lookup("tiny-clip", "toy", level="low").thresholds[0] == 0.2
    save_record(make_record(values=[0.1, 0.1, None]), explicit)
    assert cache.lookup("tiny-clip", "toy", level="low", path=explicit).thresholds[0] == 0.1
    assert cache.lookup("/some/folder/tiny-clip", "toy", level="low").thresholds[0] == 0.2  # folder name works


def test_lookup_finds_renamed_file_by_content(tmp_path):
    save_record(make_record(), tmp_path / "anything.json")
    (tmp_path / "junk.json").write_text("{")
    rec = ThresholdCache([tmp_path]).lookup("tiny-clip", "toy", level="low")
    assert rec.source_path.name == "anything.json"


def test_miss_names_the_calibrate_command(tmp_path):
    cache = ThresholdCache([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ThresholdCacheError) as info:
        cache.lookup("llava-hf/llava-1.5-7b-hf", "pixmo_cap", level="mid", schedule="linear")
    text = str(info.value)
    assert "dymu-eval calibrate --encoder llava-hf/llava-1.5-7b-hf --dataset pixmo_cap" in text
    assert "--level mid --schedule linear" in text and str(tmp_path / "a") in text
    with pytest.raises(ThresholdCacheError, match="--r 7"):
        cache.lookup("enc", "llava_instruct", r=7)
    with pytest.raises(ThresholdCacheError, match="--image-list"):
        cache.lookup("enc", "llava_instruct", r=7)


def test_default_cache_uses_repo_then_user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DYMU_EVAL_CACHE", str(tmp_path))
    cache = ThresholdCache()
    assert cache.dirs == [thresholds_dir(), tmp_path / "thresholds"]
    path = cache.save(make_record())
    assert path == tmp_path / "thresholds" / "tiny-clip__toy__constant__low.json"
    assert cache.lookup("tiny-clip", "toy", level="low").source_path == path


def test_cli_list_and_show(tmp_path, capsys):
    save_record(make_record(), tmp_path / "tiny-clip__toy__constant__low.json")
    (tmp_path / "broken.json").write_text("[")
    assert main(["thresholds", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "tiny-clip__toy__constant__low" in out and "UNREADABLE" in out and "reference" in out
    assert main(["thresholds", "show", "tiny-clip__toy__constant__low", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0.900000" in out and "tiny-clip" in out and "merge_order=reference" in out
    assert main(["thresholds", "show", "nope", "--dir", str(tmp_path)]) == 2
    assert "Known keys: broken, tiny-clip__toy__constant__low" in capsys.readouterr().err
    assert main(["thresholds", "show", PUBLISHED, "--raw"]) == 0
    assert json.loads(capsys.readouterr().out)["key"] == PUBLISHED
