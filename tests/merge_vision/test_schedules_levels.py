"""Schedules (constant, linear, reverse-linear) and the low/mid/high levels."""
from __future__ import annotations

import pytest

from dymu_eval.errors import ConfigError
from dymu_eval.merge import KNOWN_LEVELS, merges_per_layer, r_for_level


def test_constant_gives_remainder_to_first_layers():
    assert merges_per_layer(21, 24) == [21] * 24
    out = merges_per_layer(None, 24, r_total=100)
    assert sum(out) == 100 and out[:4] == [5] * 4 and out[4:] == [4] * 20


def test_linear_matches_reference_example():
    # DyMU reference config for CLIP, M=384 over 24 layers.
    expected = [32, 30, 29, 28, 26, 25, 24, 22, 21, 20, 18, 17, 16, 14, 13, 12, 10, 9, 8, 6, 4, 0, 0, 0]
    assert merges_per_layer(16, 24, "linear") == expected
    assert merges_per_layer(16, 24, "reverse_linear") == expected[::-1]


@pytest.mark.parametrize("schedule", ["constant", "linear", "reverse_linear"])
@pytest.mark.parametrize("total,layers", [(0, 5), (1, 24), (7, 3), (100, 3), (504, 24), (648, 27), (13, 12)])
def test_every_schedule_keeps_the_total(schedule, total, layers):
    out = merges_per_layer(None, layers, schedule, r_total=total)
    assert len(out) == layers and sum(out) == total and min(out) >= 0
    if schedule == "linear":
        assert out == sorted(out, reverse=True)


@pytest.mark.parametrize(
    "args,kwargs",
    [((8, 24, "cosine"), {}), ((-1, 24), {}), ((8, 0), {}), ((8, 24), {"r_total": 5}), ((None, 24), {})],
)
def test_schedule_errors(args, kwargs):
    with pytest.raises(ConfigError):
        merges_per_layer(*args, **kwargs)


def test_known_levels():
    assert [r_for_level("clip-vit-l-14-336", lv, 576, 23) for lv in ("low", "mid", "high")] == [21, 16, 8]
    assert [r_for_level("siglip-so400m-14-384", lv, 729, 26) for lv in ("low", "mid", "high")] == [24, 21, 15]


def test_unknown_encoder_rule_keeps_clips_token_fractions():
    # An unknown encoder with CLIP's geometry gets CLIP's numbers back.
    assert [r_for_level("other", lv, 576, 23) for lv in ("low", "mid", "high")] == [21, 16, 8]
    # DINOv2-S/14 at 336 px, LLaVA-style read of layer -2: 576 patches, 11 layers.
    rs = [r_for_level("dinov2-d384-l12-p14-336", lv, 576, 11) for lv in ("low", "mid", "high")]
    assert rs == [44, 33, 17]
    clip_left = [576 - 23 * r for r in KNOWN_LEVELS["clip-vit-l-14-336"].values()]
    for r, ref in zip(rs, clip_left):
        assert abs((576 - 11 * r) - ref) <= 11  # within one layer's worth of tokens


def test_level_errors():
    with pytest.raises(ConfigError, match="unknown level"):
        r_for_level("clip-vit-l-14-336", "extreme", 576, 23)
    with pytest.raises(ConfigError):
        r_for_level("other", "low", 0, 23)
