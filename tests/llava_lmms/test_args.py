"""model_args parsing: types as lmms-eval hands them over, defaults per preset, clear refusals."""
import pytest

from dymu_eval.errors import ConfigError
from dymu_eval.lmms.args import VALID_ARGS, parse_model_args


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
    for name in VALID_ARGS:
        assert name in str(e.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"level": "ultra"}, ["level", "ultra", "low, mid, high, none"]),
    ({"method": "pruning"}, ["method", "dymu, tome, fastv, random, pool, visionzip, none"]),
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
    ({"method": "random", "vtu": True}, ["vtu=true", "method=random"]),
    ({"method": "random", "pool_factor": 2}, ["pool_factor", "keep, seed"]),
    ({"method": "random", "level": "low"}, ["level", "keep="]),
    ({"method": "pool", "pool_factor": 0}, ["pool_factor", ">= 1"]),
    ({"method": "pool", "r": 4}, ["r", "pool_factor="]),
    ({"method": "visionzip", "contextual": 0}, ["contextual", ">= 1"]),
    ({"method": "visionzip", "keep": 64}, ["keep", "dominant, contextual"]),
    ({"method": "visionzip", "fastv_ratio": 0.5}, ["fastv_ratio", "dominant= and contextual="]),
])
def test_bad_or_contradictory_arguments(kwargs, words):
    with pytest.raises(ConfigError) as e:
        parse_model_args({"pretrained": "x", **kwargs})
    for w in words:
        assert w in str(e.value)


def test_presets():
    tome = parse_model_args({"pretrained": "x", "r": 8}, preset="tome")
    assert (tome.method, tome.r, tome.vtu, tome.thresholds) == ("tome", 8, False, None)
    assert parse_model_args({"pretrained": "x", "r": 8, "vtu": True}, preset="tome").vtu is True
    with pytest.raises(ConfigError, match="needs r="):
        parse_model_args({"pretrained": "x"}, preset="tome")
    with pytest.raises(ConfigError, match="thresholds"):
        parse_model_args({"pretrained": "x", "r": 8, "thresholds": "pixmo_cap"}, preset="tome")
    fastv = parse_model_args({"pretrained": "x"}, preset="fastv")
    assert (fastv.method, fastv.fastv_k, fastv.fastv_ratio, fastv.vtu) == ("fastv", 2, 0.5, False)
    with pytest.raises(ConfigError, match="fastv_ratio"):
        parse_model_args({"pretrained": "x", "fastv_ratio": 1.0}, preset="fastv")
    with pytest.raises(ConfigError, match="contradicts"):
        parse_model_args({"pretrained": "x", "method": "dymu"}, preset="fastv")
    # the unreduced baseline is reachable from every preset
    for preset in ("dymu", "tome", "fastv"):
        base = parse_model_args({"pretrained": "x", "method": "none"}, preset=preset)
        assert (base.method, base.level) == ("none", "none")
    assert parse_model_args({"pretrained": "x", "level": "none"}).method == "none"


def test_selection_presets_and_defaults():
    rnd = parse_model_args({"pretrained": "x", "keep": "64"}, preset="random")
    assert (rnd.method, rnd.keep, rnd.seed, rnd.vtu) == ("random", 64, 0, False)
    assert parse_model_args({"pretrained": "x", "keep": 0.25, "seed": 3}, preset="random").keep == 0.25
    assert parse_model_args({"pretrained": "x", "keep": "0.5"}, preset="random").keep == 0.5
    assert parse_model_args({"pretrained": "x"}, preset="random").keep == 0.25
    pool = parse_model_args({"pretrained": "x", "vtu": "true"}, preset="pool")
    assert (pool.method, pool.pool_factor, pool.vtu, pool.keep) == ("pool", 2, True, None)
    vz = parse_model_args({"pretrained": "x", "dominant": 108, "contextual": 20}, preset="visionzip")
    assert (vz.method, vz.dominant, vz.contextual, vz.vtu) == ("visionzip", 108, 20, False)
    assert (parse_model_args({"pretrained": "x"}, preset="visionzip").dominant,) == (54,)
    # method= on the main model reaches them too; another preset refuses them
    assert parse_model_args({"pretrained": "x", "method": "pool"}).method == "pool"
    with pytest.raises(ConfigError, match="contradicts"):
        parse_model_args({"pretrained": "x", "method": "random"}, preset="visionzip")
    for preset in ("random", "pool", "visionzip"):
        assert parse_model_args({"pretrained": "x", "method": "none"}, preset=preset).method == "none"
