"""The prefill/decode loop: identity layout == the unmodified model; batched == single; cache == recompute.

Proven in float64 at its rounding bound (tests.helpers.numerics), where greedy picks cannot flip on a
near-tie either; the fp32 users run is checked at the fp32 bound."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from dymu_eval.language import DecodeConfig, Decoding, VirtualLayout, generate, loglikelihood, prefill, prefill_logits
from dymu_eval.language.attention import use_dymu_attention
from dymu_eval.language.loop import append_tokens
from tests.helpers.numerics import assert_loglik_close, assert_rounding_close, forward_ops
from tests.language.lang_helpers import parts, random_layout, unique_rows


def padded_batch(model, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    ids = torch.randint(1, model.config.vocab_size, (len(lengths), n), generator=g)
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for b, length in enumerate(lengths):
        mask[b, n - length:] = 1
    ids = ids * mask
    return ids, mask


def _assert_identity_logits(model):
    dec, head = parts(model)
    ids, mask = padded_batch(model, [11, 7, 4])
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0)).logits
        emb = dec.embed_tokens(ids)
    got = prefill_logits(dec, head, emb, VirtualLayout.identity([11, 7, 4]))
    assert_rounding_close(got[mask.bool()], want[mask.bool()], forward_ops(model.config, 11))


def test_identity_logits_equal_unmodified_model(model):
    _assert_identity_logits(model)


def test_identity_logits_in_fp32_are_the_unmodified_models_within_fp32_rounding(llama32):
    _assert_identity_logits(llama32)


def test_identity_greedy_tokens_equal_hf_generate(model):
    dec, head = parts(model)
    ids, mask = padded_batch(model, [9, 5], seed=1)
    with torch.no_grad():
        want = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                              pad_token_id=0, eos_token_id=None)[:, ids.shape[1]:]
        emb = dec.embed_tokens(ids)
    out = generate(dec, head, emb, VirtualLayout.identity([9, 5]), DecodeConfig(max_new_tokens=12))
    assert out.sequences == want.tolist()
    assert out.finish_reasons == ["length", "length"]
    assert [t.new_tokens for t in out.timings] == [12, 12]
    assert all(t.prefill_ms > 0 and t.decode_ms > 0 for t in out.timings)


def test_vtu_batched_equals_one_by_one(model):
    dec, head = parts(model)
    layout = random_layout([5, 9, 3], [12, 15, 8], seed=2)
    rows = unique_rows(model, layout)
    cfg = DecodeConfig(max_new_tokens=6)
    batched_logits = prefill_logits(dec, head, rows, layout)
    batched = generate(dec, head, rows, layout, cfg)
    for b in range(3):
        single = layout.sample(b)
        r = rows[b, layout.unique_valid[b]][None]
        got = prefill_logits(dec, head, r, single)[0]
        assert_rounding_close(got, batched_logits[b, layout.valid[b]], forward_ops(model.config, 15))
        assert generate(dec, head, r, single, cfg).sequences[0] == batched.sequences[b]


@pytest.mark.parametrize("k", [1, 2])
def test_cached_decoding_equals_recomputing_the_prefix(model, k):
    dec, head = parts(model)
    layout = random_layout([6, 4], [13, 10], k=k, seed=4)
    rows = unique_rows(model, layout)
    out = generate(dec, head, rows, layout, DecodeConfig(max_new_tokens=5), return_scores=True)
    with torch.no_grad():
        for t in range(5):
            prefix = [seq[:t] for seq in out.sequences]
            if t == 0:
                full_rows, full_layout = rows, layout
            else:
                full_rows, full_layout = append_tokens(dec, rows, layout, prefix)
            logits = prefill_logits(dec, head, full_rows, full_layout)[:, -1]
            assert_rounding_close(out.scores[t], logits, forward_ops(model.config, 13 + t))


def test_kv_cache_holds_unique_rows_only(llama):
    dec, _ = parts(llama)
    layout = random_layout([4, 7], [20, 16], seed=5)
    cache = DynamicCache(config=dec.config)
    with torch.no_grad(), use_dymu_attention(dec):
        prefill(dec, unique_rows(llama, layout), layout, cache=cache)
    assert [layer.keys.shape[2] for layer in cache.layers] == [layout.unique_len] * len(dec.layers)
    assert layout.unique_len == 7 and layout.virtual_len == 20


def test_loglikelihood_equals_unmodified_model(model):
    dec, head = parts(model)
    ids, mask = padded_batch(model, [8, 5], seed=6)
    conts = [[3, 14, 15], [9]]
    with torch.no_grad():
        emb = dec.embed_tokens(ids)
    got = loglikelihood(dec, head, emb, VirtualLayout.identity([8, 5]), conts)
    for b, cont in enumerate(conts):
        full = torch.cat([ids[b, mask[b].bool()], torch.tensor(cont)])[None]
        with torch.no_grad():
            logits = model(input_ids=full).logits[0, -len(cont) - 1:-1].log_softmax(-1)
        want = float(logits.gather(1, torch.tensor(cont)[:, None]).sum())
        assert_loglik_close(got[b][0], want, logits, forward_ops(model.config, full.shape[1]))
        assert got[b][1] == bool((logits.argmax(-1) == torch.tensor(cont)).all())


def test_loglikelihood_greedy_flag_matches_generation(llama):
    dec, head = parts(llama)
    layout = random_layout([5], [11], seed=7)
    rows = unique_rows(llama, layout)
    greedy = generate(dec, head, rows, layout, DecodeConfig(max_new_tokens=3)).sequences[0]
    (logp, is_greedy), = loglikelihood(dec, head, rows, layout, [greedy])
    assert is_greedy and logp < 0


def test_without_vtu_layout_is_the_plain_short_sequence(llama):
    dec, head = parts(llama)
    layout = VirtualLayout.consecutive([4, 6])
    rows = unique_rows(llama, layout)
    assert layout.virtual_len == layout.unique_len == 6
    assert torch.equal(layout.positions[1], torch.arange(6))
    with torch.no_grad():
        want = llama.model(inputs_embeds=rows, attention_mask=layout.unique_valid.long(),
                           position_ids=torch.where(layout.valid, layout.positions, 0)).last_hidden_state
        want = head(want)
    got = prefill_logits(dec, head, rows, layout)
    assert_rounding_close(got[layout.valid], want[layout.valid], forward_ops(llama.config, 6))


def test_decodings_stepped_in_lockstep_equal_each_run_alone(model):
    """What the bench's lockstep timing relies on: steps of two decodings, with HF's own forward
    between them, change neither, and the decoder's attention routing is HF's between steps."""
    dec, head = parts(model)
    layout = random_layout([6, 4], [13, 10], seed=6)
    rows = unique_rows(model, layout)
    ids, mask = padded_batch(model, [9, 5], seed=7)
    with torch.no_grad():
        emb = dec.embed_tokens(ids)
    cfg = DecodeConfig(max_new_tokens=5)
    alone = [generate(dec, head, rows, layout, cfg, return_scores=True),
             generate(dec, head, emb, VirtualLayout.identity([9, 5]), cfg, return_scores=True)]
    hf_routing = dec.config._attn_implementation
    with torch.no_grad():
        hf_alone = model(input_ids=ids, attention_mask=mask).logits
    runs = [Decoding(dec, head, rows, layout, cfg, return_scores=True),
            Decoding(dec, head, emb, VirtualLayout.identity([9, 5]), cfg, return_scores=True)]
    live, steps = list(runs), 0
    while live:
        for run in list(live):
            if not run.step():
                live.remove(run)
            assert dec.config._attn_implementation == hf_routing
            with torch.no_grad():
                assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, hf_alone)
        steps += 1
    assert steps == 5
    for run, want in zip(runs, alone):
        got = run.output()
        assert got.sequences == want.sequences and got.finish_reasons == want.finish_reasons
        assert all(torch.equal(a, b) for a, b in zip(got.scores, want.scores))
        assert [t.new_tokens for t in got.timings] == [5, 5]
        assert not run.step()


def test_a_decoding_of_no_new_tokens_takes_no_step(llama):
    dec, head = parts(llama)
    layout = random_layout([3], [5], seed=8)
    run = Decoding(dec, head, unique_rows(llama, layout), layout, DecodeConfig(max_new_tokens=0))
    assert not run.step()
    assert run.output().sequences == [[]] and run.output().finish_reasons == ["length"]
