"""Supported decoder families and RoPE kinds; everything else is refused with a message naming it."""
from __future__ import annotations

import pytest
import torch

from dymu_eval.errors import ConfigError
from dymu_eval.language import VirtualLayout, describe_decoder, prefill_logits, split_causal_lm
from tests.factories.decoders import tiny_decoder
from tests.helpers.numerics import assert_rounding_close, forward_ops
from tests.language.lang_helpers import parts, random_layout, unique_rows

LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16}


@pytest.mark.parametrize("rope", [LLAMA3, YARN, {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}])
def test_scaled_rope_identity_and_vtu_layer(tmp_path, rope):
    model = tiny_decoder(tmp_path, "llama", rope_parameters=rope)
    dec, head = parts(model)
    assert describe_decoder(dec).rope_type == rope["rope_type"]
    ids = torch.randint(0, model.config.vocab_size, (1, 40))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        got = prefill_logits(dec, head, dec.embed_tokens(ids), VirtualLayout.identity([40]))
    assert_rounding_close(got, want, forward_ops(model.config, 40))
    # rows used once each but in shuffled order: keys are rotated at their virtual positions, not row order
    layout = random_layout([30], [30], seed=1)
    rows = unique_rows(model, layout)
    with torch.no_grad():
        want = head(model.model(inputs_embeds=layout.expand(rows)).last_hidden_state)
    got = prefill_logits(dec, head, rows, layout)
    assert_rounding_close(got, want, forward_ops(model.config, 30))


@pytest.mark.parametrize("rope, kind", [
    ({"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}, "dynamic"),
    ({"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * 8, "long_factor": [2.0] * 8,
      "original_max_position_embeddings": 16}, "longrope"),
])
def test_unsupported_rope_is_refused(tmp_path, rope, kind):
    model = tiny_decoder(tmp_path, "llama", rope_parameters=rope)
    with pytest.raises(ConfigError, match=f"RoPE type '{kind}'.*not supported"):
        prefill_logits(model.model, model.lm_head, torch.zeros(1, 3, 64), VirtualLayout.identity([3]))


def test_qwen2_sliding_window_is_refused(tmp_path):
    model = tiny_decoder(tmp_path, "qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=0)
    with pytest.raises(ConfigError, match="sliding-window"):
        split_causal_lm(model)


def test_not_a_decoder_or_unknown_family():
    with pytest.raises(ConfigError, match="not a base text decoder"):
        describe_decoder(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="no .model/.lm_head"):
        split_causal_lm(torch.nn.Linear(2, 2))


def test_unknown_family_is_refused(tmp_path):
    from transformers import Phi3Config, Phi3Model

    dec = Phi3Model(Phi3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               num_key_value_heads=1, vocab_size=10, pad_token_id=0))
    with pytest.raises(ConfigError, match="family 'phi3' is not supported; supported: \\['llama', 'mistral', "
                                          "'qwen2'\\]"):
        describe_decoder(dec)


def test_mistral_with_a_sliding_window_is_refused():
    """LLaVA-NeXT's Mistral decoder (v0.2: no window) is served; a windowed one is refused in one line."""
    from transformers import MistralConfig, MistralModel

    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 1, "vocab_size": 10}
    assert describe_decoder(MistralModel(MistralConfig(**shape, sliding_window=None))).family == "mistral"
    with pytest.raises(ConfigError, match="mistral decoder with sliding-window attention \\(sliding_window=4096\\)"):
        describe_decoder(MistralModel(MistralConfig(**shape, sliding_window=4096)))


def test_split_finds_llava_language_model(tmp_path):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from tests.factories.decoders import TINY

    cfg = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                     num_attention_heads=2, image_size=28, patch_size=14),
                      text_config=LlamaConfig(**TINY), image_token_index=5)
    model = LlavaForConditionalGeneration(cfg)
    dec, head = split_causal_lm(model)
    assert dec is model.model.language_model and head is model.lm_head
