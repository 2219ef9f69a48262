"""model_args parsing: types as lmms-eval hands them over, defaults per preset, clear refusals."""
import pytest

from dymu_eval.errors import ConfigError
from dymu_eval.lmms.args import parse_model_args, valid_args


def test_lmms_eval_style_values_are_accepted():
    # lmms-eval adds batch_size as a string, and device / max_batch_size
    a = parse_model_args({"pretrained": "x", "level": "mid", "batch_size": "4", "device": "cpu",
                          "max_batch_size": None, "vtu": False})
    assert (a.method, a.level, a.batch_size, a.device_map, a.vtu) == ("dymu", "mid", 4, "cpu", False)
    assert a.thresholds == "llava_instruct"


def test_unknown_argument_lists_every_valid_one():
    with pytest.raises(ConfigError) as e:
        parse_model_args({"pretrained": "x", "levle": "low"})
    assert "levle" in str(e.value)
    for name in valid_args():
        assert name in str(e.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"level": "ultra"}, ["level", "ultra", "low, mid, high, none"]),
    ({"method": "pruning"}, ["method", "random, pool, fastv", "visionzip", "tome", "dymu, none"]),
    ({"level": "none", "r": 4}, ["r", "baseline"]),
    ({"method": "none", "level": "low"}, ["method=none", "level=low"]),
    ({"level": "low", "r": 8}, ["level", "r"]),
    ({"fastv_k": 2}, ["fastv_k", "method=dymu"]),
    ({"vtu": "maybe"}, ["vtu", "true or false"]),
    ({"batch_size": "auto"}, ["batch_size", "integer"]),
    ({"schedule": "cosine"}, ["schedule", "constant, linear, reverse_linear"]),
    ({"keep": 64}, ["keep", "method=dymu"]),
    ({"method": "random", "keep": 0}, ["keep=0", "fraction"]),
    ({"method": "random", "keep": "lots"}, ["keep='lots'"]),
    ({"method": "random", "keep": 1.5}, ["keep=1.5", "whole number"]),
    ({"method": "random", "vtu": True}, ["vtu", "method=random", "no VTU"]),
    ({"method": "random", "pool_factor": 2}, ["pool_factor", "keep=", "seed="]),
    ({"method": "random", "level": "low"}, ["level", "keep="]),
    ({"method": "pool", "pool_factor": 0}, ["pool_factor", ">= 1"]),
    ({"method": "pool", "r": 4}, ["r", "pool_factor="]),
    ({"method": "visionzip", "contextual": 0}, ["contextual", ">= 1"]),
    ({"method": "visionzip", "keep": 64}, ["keep", "dominant= and contextual="]),
    ({"method": "visionzip", "fastv_ratio": 0.5}, ["fastv_ratio", "dominant= and contextual="]),
    ({"merge_order": "sorted"}, ["merge_order", "reference, position"]),
    ({"level": "none", "merge_order": "position"}, ["merge_order", "baseline"]),
])
def test_bad_or_contradictory_arguments(kwargs, words):
    with pytest.raises(ConfigError) as e:
        parse_model_args({"pretrained": "x", **kwargs})
    for w in words:
        assert w in str(e.value)


def test_merge_order_defaults_to_the_reference():
    assert parse_model_args({"pretrained": "x"}).merge_order == "reference"
    tome = parse_model_args({"pretrained": "x", "r": 8, "merge_order": "position"}, model="tome_llava")
    assert tome.merge_order == "position"
    assert parse_model_args({"pretrained": "x"}, model="fastv_llava").merge_order is None
    with pytest.raises(ConfigError, match="merge_order"):
        parse_model_args({"pretrained": "x", "merge_order": "position"}, model="fastv_llava")


def test_presets():
    tome = parse_model_args({"pretrained": "x", "r": 8}, model="tome_llava")
    assert (tome.method, tome.r, tome.vtu, tome.thresholds) == ("tome", 8, False, None)
    assert parse_model_args({"pretrained": "x", "r": 8, "vtu": True}, model="tome_llava").vtu is True
    with pytest.raises(ConfigError, match="needs r="):
        parse_model_args({"pretrained": "x"}, model="tome_llava")
    with pytest.raises(ConfigError, match="thresholds"):
        parse_model_args({"pretrained": "x", "r": 8, "thresholds": "pixmo_cap"}, model="tome_llava")
    fastv = parse_model_args({"pretrained": "x"}, model="fastv_llava")
    assert (fastv.method, fastv.fastv_k, fastv.fastv_ratio, fastv.vtu) == ("fastv", 2, 0.5, False)
    with pytest.raises(ConfigError, match="fastv_ratio"):
        parse_model_args({"pretrained": "x", "fastv_ratio": 1.0}, model="fastv_llava")
    with pytest.raises(ConfigError, match="contradicts"):
        parse_model_args({"pretrained": "x", "method": "dymu"}, model="fastv_llava")
    # the unreduced baseline is reachable from every preset
    for model in ("dymu_llava", "tome_llava", "fastv_llava"):
        base = parse_model_args({"pretrained": "x", "method": "none"}, model=model)
        assert (base.method, base.level) == ("none", "none")
    assert parse_model_args({"pretrained": "x", "level": "none"}).method == "none"


def test_selection_presets_and_defaults():
    rnd = parse_model_args({"pretrained": "x", "keep": "64"}, model="random_llava")
    assert (rnd.method, rnd.keep, rnd.seed, rnd.vtu) == ("random", 64, 0, False)
    assert parse_model_args({"pretrained": "x", "keep": 0.25, "seed": 3}, model="random_llava").keep == 0.25
    assert parse_model_args({"pretrained": "x", "keep": "0.5"}, model="random_llava").keep == 0.5
    assert parse_model_args({"pretrained": "x"}, model="random_llava").keep == 0.25
    pool = parse_model_args({"pretrained": "x", "vtu": "true"}, model="pool_llava")
    assert (pool.method, pool.pool_factor, pool.vtu, pool.keep) == ("pool", 2, True, None)
    vz = parse_model_args({"pretrained": "x", "dominant": 108, "contextual": 20}, model="visionzip_llava")
    assert (vz.method, vz.dominant, vz.contextual, vz.vtu) == ("visionzip", 108, 20, False)
    assert (parse_model_args({"pretrained": "x"}, model="visionzip_llava").dominant,) == (54,)
    # method= on the main model reaches them too; another preset refuses them
    assert parse_model_args({"pretrained": "x", "method": "pool"}).method == "pool"
    with pytest.raises(ConfigError, match="contradicts"):
        parse_model_args({"pretrained": "x", "method": "random"}, model="visionzip_llava")
    for model in ("random_llava", "pool_llava", "visionzip_llava"):
        assert parse_model_args({"pretrained": "x", "method": "none"}, model=model).method == "none"
