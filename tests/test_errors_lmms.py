"""lmms-eval's own options against model_args: a clash or a bad value is one line naming what the user typed
(--batch_size, --device, batch_size=, device_map=), and the thresholds fingerprint override is a model_arg."""
import logging

import pytest
import torch

from dymu_eval.errors import ConfigError, ThresholdCacheError
from dymu_eval.lmms.args import parse_model_args
from tests.test_errors_cli import foreign_thresholds_file


def _construct(name, args, flags):
    from lmms_eval.models import get_model

    return get_model(name).create_from_arg_string(args, flags)


@pytest.mark.parametrize("model", ["dymu_llava", "tome_llava_onevision"])
def test_batch_size_in_model_args_is_refused_under_lmms_eval(model):
    with pytest.raises(ConfigError) as e:  # lmms-eval's CLI always passes its own --batch_size
        _construct(model, "pretrained=x,batch_size=2", {"batch_size": "1", "device": None})
    msg = str(e.value)
    assert msg == ("model_arg batch_size=2: lmms-eval passes its own --batch_size; use --batch_size instead of "
                   "batch_size= in --model_args")


@pytest.mark.parametrize("value", ["0", "auto", "-3"])
def test_a_bad_cli_batch_size_names_the_flag(value):
    with pytest.raises(ConfigError) as e:
        _construct("dymu_llava", "pretrained=x", {"batch_size": value, "max_batch_size": None})
    assert str(e.value) == f"--batch_size {value}: dymu-eval models need an integer >= 1 (not auto)"


def test_a_bad_model_arg_batch_size_still_names_the_model_arg():
    # the Python API (simple_evaluate without batch_size=) passes it as a model_arg only
    with pytest.raises(ConfigError, match=r"^model_arg batch_size=0 must be an integer >= 1$"):
        parse_model_args({"pretrained": "x", "batch_size": 0})
    assert parse_model_args({"pretrained": "x", "batch_size": "3"}, flags=("batch_size",)).batch_size == 3


@pytest.mark.parametrize("model_args, flags, says", [
    ("pretrained=x", {"batch_size": "1", "device": "cuda"},
     "--device cuda but no CUDA device is available; use --device cpu"),
    ("pretrained=x,device_map=cuda:0", {"batch_size": "1", "device": "cuda"},
     "device_map=cuda:0 but no CUDA device is available; use device_map=cpu"),
    ("pretrained=x,device=cuda", {"batch_size": "1"},
     "device=cuda but no CUDA device is available; use device=cpu"),
])
def test_a_missing_gpu_names_where_the_device_came_from(monkeypatch, model_args, flags, says):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        _construct("dymu_llava", model_args, flags)
    assert str(e.value) == says


def test_ignore_fingerprint_is_a_dymu_model_arg():
    assert parse_model_args({"pretrained": "x"}).ignore_fingerprint is False
    assert parse_model_args({"pretrained": "x", "ignore_fingerprint": "true"}).ignore_fingerprint is True
    with pytest.raises(ConfigError, match="ignore_fingerprint='maybe' must be true or false"):
        parse_model_args({"pretrained": "x", "ignore_fingerprint": "maybe"})
    with pytest.raises(ConfigError, match="ignore_fingerprint do not apply to method=tome"):
        parse_model_args({"pretrained": "x", "r": 4, "ignore_fingerprint": True}, model="tome_llava")


@pytest.fixture
def foreign_thresholds(tiny_llava, tmp_path):
    return foreign_thresholds_file(tiny_llava, tmp_path / "foreign.json")


def test_the_fingerprint_override_works_as_the_message_says(tiny_llava, foreign_thresholds, tmp_path, caplog):
    base = f"pretrained={tiny_llava},thresholds={foreign_thresholds},stats_dir={tmp_path / 'stats'}"
    flags = {"batch_size": "1", "device": "cpu"}
    with pytest.raises(ThresholdCacheError) as e:
        _construct("dymu_llava", base, flags)
    assert "the model_arg ignore_fingerprint=true (lmms-eval)" in str(e.value)
    with caplog.at_level(logging.WARNING, logger="dymu_eval.thresholds"):
        model = _construct("dymu_llava", base + ",ignore_fingerprint=true", flags)
    assert model.args.ignore_fingerprint and model.pipe.reduction.method == "dymu"
    assert f"thresholds {foreign_thresholds} were calibrated on other weights" in caplog.text
    assert "used anyway" in caplog.text


def test_thresholds_naming_a_folder_says_so(tiny_llava, tmp_path):
    (tmp_path / "hand").mkdir()
    with pytest.raises(ThresholdCacheError) as e:
        _construct("dymu_llava", f"pretrained={tiny_llava},thresholds={tmp_path / 'hand'},stats_dir={tmp_path}",
                   {"batch_size": "1", "device": "cpu"})
    assert str(e.value) == f"thresholds={tmp_path / 'hand'}: is a folder; give a thresholds .json file or a cache key"
