"""Sampling, eos, stop strings and the errors bad generation inputs raise."""
from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from dymu_eval.errors import ConfigError
from dymu_eval.language import DecodeConfig, VirtualLayout, generate, loglikelihood, prefill_logits
from tests.language.lang_helpers import parts, random_layout, unique_rows


def word_tokenizer(vocab_size):
    """Token i decodes to the word "w<i>"; an offline stand-in for a real tokenizer."""
    vocab = {f"w{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.fixture(scope="module")
def setup(llama):
    dec, head = parts(llama)
    layout = random_layout([5, 8], [11, 14], seed=21)
    return dec, head, layout, unique_rows(llama, layout)


def test_sampling_seeded_batched_equals_single_and_tiny_top_p_is_greedy(setup):
    dec, head, layout, rows = setup
    cfg = DecodeConfig(max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.9, seed=123)
    batched = generate(dec, head, rows, layout, cfg).sequences
    again = generate(dec, head, rows, layout, cfg).sequences
    assert batched == again
    for b in range(2):
        single = generate(dec, head, rows[b, layout.unique_valid[b]][None], layout.sample(b), cfg).sequences[0]
        assert single == batched[b]
    greedy = generate(dec, head, rows, layout, DecodeConfig(max_new_tokens=8)).sequences
    nucleus = DecodeConfig(max_new_tokens=8, do_sample=True, top_p=1e-6, seed=5)
    assert generate(dec, head, rows, layout, nucleus).sequences == greedy


def test_eos_and_stop_strings_end_each_sample(setup):
    dec, head, layout, rows = setup
    greedy = generate(dec, head, rows, layout, DecodeConfig(max_new_tokens=8)).sequences
    eos = greedy[0][2]
    out = generate(dec, head, rows, layout, DecodeConfig(max_new_tokens=8, eos_token_ids=torch.tensor(eos)))
    first = greedy[0].index(eos)
    assert out.sequences[0] == greedy[0][: first + 1] and out.finish_reasons[0] == "eos"
    tok = word_tokenizer(dec.config.vocab_size)
    stop = f"w{greedy[1][3]}"
    out = generate(dec, head, rows, layout, DecodeConfig(max_new_tokens=8, stop_strings=[stop], tokenizer=tok))
    cut = [f"w{t}" for t in greedy[1]].index(stop)
    assert out.sequences[1] == greedy[1][: cut + 1] and out.finish_reasons[1] == "stop"
    assert out.texts[1] == " ".join(f"w{t}" for t in greedy[1][:cut]) + " "
    assert stop not in out.texts[1]


@pytest.mark.parametrize("kwargs, match", [
    ({"max_new_tokens": -1}, "max_new_tokens=-1"),
    ({"do_sample": True, "temperature": 0.0}, "temperature=0.0"),
    ({"top_p": 0.0}, "top_p=0.0"),
    ({"stop_strings": ["x"]}, "need a tokenizer"),
    ({"eos_token_ids": ["2"]}, "must be token ids"),
    ({"stop_strings": "x", "tokenizer": object()}, "list of strings"),
])
def test_bad_decode_config(setup, kwargs, match):
    dec, head, layout, rows = setup
    with pytest.raises(ConfigError, match=match):
        generate(dec, head, rows, layout, DecodeConfig(**kwargs))


def test_inputs_that_disagree_with_the_layout(setup):
    dec, head, layout, rows = setup
    with pytest.raises(ConfigError, match="layout and sequence lengths disagree"):
        prefill_logits(dec, head, rows[:, 1:], layout)
    with pytest.raises(ConfigError, match="3 samples but the layout has 2"):
        prefill_logits(dec, head, torch.cat([rows, rows[:1]]), layout)
    with pytest.raises(ConfigError, match="hidden size is 64"):
        prefill_logits(dec, head, rows[..., :32], layout)
    right = VirtualLayout(layout.index.flip(1), layout.weight.flip(1), layout.positions.flip(1).neg() + 20,
                          layout.valid.flip(1), layout.unique_valid)  # padding at the right
    with pytest.raises(ConfigError, match="sample 0 ends in padding"):
        generate(dec, head, rows, right, DecodeConfig(max_new_tokens=1))
    with pytest.raises(ConfigError, match="continuation of sample 1 is empty"):
        loglikelihood(dec, head, rows, layout, [[1], []])
