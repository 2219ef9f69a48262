"""The Python API in three lines gives what the pipeline gives, with the same stats, for both families."""
from __future__ import annotations

import pytest

from dymu_eval import api
from dymu_eval.errors import ConfigError
from dymu_eval.vlm import llava
from tests.factories import TASKS

IMAGE = TASKS / "dymu_offline" / "images" / "photo_astronaut.jpg"


def test_three_lines_generate_and_score(tiny_llava):
    img = llava.Image.open(IMAGE).convert("RGB")
    vlm = api.load(str(tiny_llava), method="tome", r=4, device_map="cpu")
    answers, stats = vlm.generate(["What is shown?"], [[img]], max_new_tokens=3)
    assert len(answers) == 1 and stats[0]["llm_rows"] < stats[0]["visual_tokens_before"]
    scores, stats = vlm.loglikelihood(["What is shown?"], ["a person"], [[img]])
    assert len(scores) == 1 and scores[0][0] < 0 and stats[0]["new_tokens"] == 0

    # the same request through the family's pipeline directly
    text, _ = llava.simple_prompt(vlm.pipe.tokenizer, "What is shown?", 1)
    from dymu_eval.language import DecodeConfig

    direct, _ = vlm.pipe.generate([llava.Request(text, [img])],
                                  DecodeConfig(max_new_tokens=3, eos_token_ids=vlm.pipe.eos_ids,
                                               tokenizer=vlm.pipe.tokenizer))
    assert direct == answers


def test_the_family_comes_from_the_checkpoint(tiny_onevision):
    vlm = api.load(str(tiny_onevision), method="none", device_map="cpu", max_frames_num=4)
    assert vlm.family.suffix == "llava_onevision" and vlm.family_args["max_frames_num"] == 4


def test_bad_settings_are_one_line(tiny_llava):
    with pytest.raises(ConfigError, match="fastv_k"):
        api.load(str(tiny_llava), method="tome", r=4, fastv_k=2, device_map="cpu")
    vlm = api.load(str(tiny_llava), method="none", device_map="cpu")
    with pytest.raises(ConfigError, match="one of each per request"):
        vlm.generate(["a", "b"], [[]])
