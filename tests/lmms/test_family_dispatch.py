"""``--model dymu_llava`` serves every registered family: on a LLaVA-OneVision checkpoint it is
exactly ``dymu_llava_onevision`` (same family, settings, pipeline and answers); the generated model
names and classes cover every method x family."""
from __future__ import annotations

import pytest

from dymu_eval.errors import ConfigError
from dymu_eval.language import DecodeConfig
from tests.factories.media import random_image


def _construct(name, args):
    from lmms_eval.models import get_model

    return get_model(name, force_simple=True).create_from_arg_string(args, {"batch_size": "1", "device": "cpu"})


def _answers(model, images):
    from dymu_eval.vlm import llava_onevision as ov

    pipe = model.pipe
    reqs = []
    for i, img in enumerate(images):
        text, _ = ov.simple_prompt(pipe.tokenizer, "what color is it ?", 1, 0)
        reqs.append(ov.Request(text, [img], name=f"doc {i}"))
    config = DecodeConfig(max_new_tokens=4, eos_token_ids=pipe.eos_ids, tokenizer=pipe.tokenizer)
    texts, stats = pipe.generate(reqs, config)
    return texts, [(s["llm_rows"], s["virtual_positions"], s["total_flops"]) for s in stats]


def test_dymu_llava_on_a_onevision_checkpoint_is_dymu_llava_onevision(tiny_onevision, tmp_path):
    args = f"pretrained={tiny_onevision},method=tome,r=4,max_frames_num=4,stats_dir={tmp_path}"
    generic = _construct("dymu_llava", args)
    own = _construct("dymu_llava_onevision", args)
    assert generic.family is own.family and generic.args.family == "llava_onevision"
    assert (generic.args.method_args, generic.args.family_args) == (own.args.method_args, own.args.family_args)
    assert type(generic.pipe) is type(own.pipe)
    images = [random_image(40, 48 + 16 * seed, seed) for seed in range(3)]
    assert _answers(generic, images) == _answers(own, images)


def test_generated_names_cover_every_method_and_family():
    from dymu_eval.lmms import model as lmms_model
    from dymu_eval.lmms.manifests import get_manifests
    from dymu_eval.lmms.names import model_names
    from dymu_eval.methods import FAMILIES, METHODS

    names = model_names()
    for family in FAMILIES:
        for method in METHODS:
            if METHODS[method].model_name:
                assert f"{method}_{FAMILIES[family].suffix}" in names
    manifests = {m.model_id: m for m in get_manifests()}
    assert set(manifests) == set(names)
    cls = lmms_model.FastvLlavaOnevisionChat  # today's class names keep working
    assert cls.MODEL_ID == "fastv_llava_onevision" and not cls.is_simple
    assert manifests["tome_llava"].simple_class_path == "dymu_eval.lmms.model.TomeLlava"


def test_a_checkpoint_of_no_registered_family_is_one_line(tiny_llava, tmp_path):
    text_only = tmp_path / "text"
    from transformers import AutoConfig, LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=64).save_pretrained(text_only)
    assert AutoConfig.from_pretrained(text_only).model_type == "llama"
    with pytest.raises(ConfigError, match="is a llama model; dymu_llava serves llava, llava_onevision, llava_next"):
        _construct("dymu_llava", f"pretrained={text_only},stats_dir={tmp_path}")
