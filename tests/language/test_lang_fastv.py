"""FastV: nothing dropped == baseline; dropping rows == masking them; the ranking is the last token's attention."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from dymu_eval.errors import ConfigError
from dymu_eval.language import (
    DecodeConfig,
    FastV,
    Pruning,
    VirtualLayout,
    generate,
    loglikelihood,
    prefill,
    prefill_logits,
)
from dymu_eval.language.attention import use_dymu_attention
from tests.helpers.numerics import assert_rounding_close, forward_ops, tolerance
from tests.language.lang_helpers import drop_and_mask, parts, random_layout, unique_rows


def fastv(k, ratio, image_mask, mode="drop"):
    """FastV's one cut over a batch whose image entries are ``image_mask``."""
    return Pruning(FastV(k, ratio), image_mask, mode)


def image_span(layout, start, stop):
    """Image entries: virtual entries start..stop-1 of each sample's valid part."""
    mask = torch.zeros_like(layout.valid)
    for b in range(layout.batch_size):
        first = int(layout.valid[b].nonzero()[0, 0])
        mask[b, first + start: first + stop] = True
    return mask


def test_ratio_zero_equals_baseline(model):
    dec, head = parts(model)
    layout = random_layout([8, 6], [20, 15], seed=11)
    rows = unique_rows(model, layout)
    fv = fastv(k=2, ratio=0.0, image_mask=image_span(layout, 2, 12))
    got, want = prefill_logits(dec, head, rows, layout, fv), prefill_logits(dec, head, rows, layout)
    assert_rounding_close(got[layout.valid], want[layout.valid], forward_ops(model.config, 20))
    cfg = DecodeConfig(max_new_tokens=5)
    with_fv = generate(dec, head, rows, layout, cfg, pruning=fv)
    assert with_fv.sequences == generate(dec, head, rows, layout, cfg).sequences
    assert with_fv.kept_image_tokens == [10, 10]


@pytest.mark.parametrize("vtu", [False, True])
def test_drop_equals_mask(model, vtu):
    dec, head = parts(model)
    if vtu:
        layout = random_layout([9, 7], [22, 18], seed=12)
    else:
        layout = VirtualLayout.identity([22, 18])
    rows = unique_rows(model, layout, seed=3)
    image = image_span(layout, 3, 15)
    drop = fastv(k=2, ratio=0.75, image_mask=image, mode="drop")
    mask = fastv(k=2, ratio=0.75, image_mask=image, mode="mask")
    ops = forward_ops(model.config, 22)
    kept, out_drop, out_mask = drop_and_mask(dec, head, rows, layout, drop, mask, ops)
    assert int((~kept & layout.valid).sum()) == 2 * 9  # 12 image entries, 3 kept per sample
    assert out_drop.kept_image_tokens == out_mask.kept_image_tokens == [3, 3]
    ll_drop = loglikelihood(dec, head, rows, layout, [[5, 6], [7]], pruning=drop)
    ll_mask = loglikelihood(dec, head, rows, layout, [[5, 6], [7]], pruning=mask)
    assert [g for _, g in ll_drop] == [g for _, g in ll_mask]
    for (lp_drop, _), (lp_mask, _) in zip(ll_drop, ll_mask):  # sums of two log-softmax values at most
        assert lp_drop == pytest.approx(lp_mask, rel=0, abs=tolerance(torch.float64, 2 * max(abs(lp_mask), 1.0),
                                                                        ops + dec.config.vocab_size))


def test_drop_really_removes_rows_from_later_layers(llama):
    dec, _ = parts(llama)
    layout = VirtualLayout.identity([30])
    fv = fastv(k=2, ratio=0.5, image_mask=image_span(layout, 4, 24))
    cache = DynamicCache(config=dec.config)
    with torch.no_grad(), use_dymu_attention(dec):
        run = prefill(dec, unique_rows(llama, layout), layout, fv, cache)
    assert [layer.keys.shape[2] for layer in cache.layers] == [30, 30, 20, 20]
    assert run.hidden.shape[1] == 20 and run.kept_image_tokens == [10]
    assert bool((run.layout.positions.diff(dim=1) > 0).all())  # original positions kept, with gaps
    assert int(run.layout.positions[0, -1]) == 29


def test_ranking_is_last_token_attention_of_layer_k_minus_1(llama, tmp_path):
    """Kept image entries are the top ones by the unmodified model's (eager) attention of the last token."""
    dec, _ = parts(llama)
    layout = VirtualLayout.identity([26])
    rows = unique_rows(llama, layout, seed=9)
    image = image_span(layout, 2, 22)
    with torch.no_grad():
        llama.model.config._attn_implementation = "eager"
        try:
            att = llama.model(inputs_embeds=rows, output_attentions=True).attentions[1]
        finally:
            llama.model.config._attn_implementation = "sdpa"
    score = att[0, :, -1].mean(0)[2:22]
    want = set((torch.topk(score, 5).indices + 2).tolist())
    with torch.no_grad(), use_dymu_attention(dec):
        run = prefill(dec, rows, layout, fastv(k=2, ratio=0.75, image_mask=image))
    kept = set(run.origin[0].tolist()) & set(range(2, 22))
    assert kept == want


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "fastv_k=0"),
    ({"k": 4}, "fastv_k=4"),
    ({"ratio": 1.0}, "fastv_ratio=1.0"),
    ({"ratio": -0.1}, "fastv_ratio"),
    ({"mode": "prune"}, "mode 'prune'"),
])
def test_bad_fastv_arguments(llama, kwargs, match):
    dec, head = parts(llama)
    layout = VirtualLayout.identity([10])
    args = {"k": 2, "ratio": 0.5, "image_mask": image_span(layout, 1, 6), **kwargs}
    with pytest.raises(ConfigError, match=match):
        prefill_logits(dec, head, unique_rows(llama, layout), layout, fastv(**args))


def test_bad_image_mask_shape(llama):
    dec, head = parts(llama)
    layout = VirtualLayout.identity([10])
    with pytest.raises(ConfigError, match="image_mask"):
        prefill_logits(dec, head, unique_rows(llama, layout), layout,
                       fastv(k=1, ratio=0.5, image_mask=torch.ones(1, 9, dtype=torch.bool)))
