"""VTU attention against explicit expansion: before the re-merge it is ordinary attention over the expanded
sequence at virtual positions; after it, each unique row holds the weighted mean over its copies (float64,
at its rounding bound)."""
from __future__ import annotations

import pytest
import torch

from dymu_eval.language import dymu_attention, prefill, use_dymu_attention, virtual_attention
from dymu_eval.language.state import ForwardState, Segment, Side
from tests.helpers.numerics import SMALL_OPS, assert_rounding_close, forward_ops
from tests.language.lang_helpers import AttentionStub, parts, random_layout, reference_attention, unique_rows


def reference_remerge(out, layout):
    """(B, H, Nv, Dh) -> (B, Nu, H, Dh) with explicit loops: weighted mean over each row's copies."""
    b, h, nv, d = out.shape
    res = torch.zeros(b, layout.unique_len, h, d, dtype=out.dtype)
    tot = torch.zeros(b, layout.unique_len, dtype=out.dtype)
    for bi in range(b):
        for i in range(nv):
            if not layout.valid[bi, i]:
                continue
            for j in range(layout.index.shape[2]):
                u, w = int(layout.index[bi, i, j]), float(layout.weight[bi, i, j])
                res[bi, u] += w * out[bi, :, i]
                tot[bi, u] += w
    return res / tot.clamp_min(1e-30)[..., None, None]


@pytest.mark.parametrize("k", [1, 2])
def test_virtual_attention_equals_explicit_expansion(llama, k):
    dec, _ = parts(llama)
    layout = random_layout([5, 7], [9, 12], k=k, seed=k)
    torch.manual_seed(0)
    q = torch.randn(2, 4, layout.unique_len, 16, dtype=torch.float64)
    key, val = (torch.randn(2, 2, layout.unique_len, 16, dtype=torch.float64) for _ in range(2))
    side = Side.from_layout(layout, dec.rotary_emb, q)
    seg = Segment(range(1), side, side)
    got = virtual_attention(AttentionStub(), q, key, val, seg, scaling=16 ** -0.5)
    want = reference_attention(q, key, val, layout, dec.rotary_emb)
    valid = layout.valid[:, None, :, None].expand_as(want)
    assert_rounding_close(got[valid], want[valid], SMALL_OPS)
    # after the re-merge: weighted mean over copies, through the registered function itself
    merged, _ = dymu_attention(AttentionStub(), q, key, val, None, scaling=16 ** -0.5,
                               dymu_state=ForwardState([Segment(range(1), side, side)]))
    rows = layout.unique_valid
    assert_rounding_close(merged[rows], reference_remerge(want, layout)[rows], SMALL_OPS)


def test_without_state_it_is_plain_sdpa(llama):
    ids = torch.randint(0, llama.config.vocab_size, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :4] = 0
    with torch.no_grad():
        want = llama(input_ids=ids, attention_mask=mask).logits
        llama.model.config._attn_implementation = "dymu"
        try:
            got = llama(input_ids=ids, attention_mask=mask).logits
        finally:
            llama.model.config._attn_implementation = "sdpa"
    assert_rounding_close(got[mask.bool()], want[mask.bool()], forward_ops(llama.config, 9))


def test_full_forward_with_duplicate_rows_matches_unmodified_layer0(model):
    """Unique rows that are exact duplicates: VTU's layer-0 attention output of a row equals the mean of the
    unmodified model's layer-0 attention outputs at that row's copies in the expanded sequence."""
    dec, _ = parts(model)
    layout = random_layout([6, 9], [14, 17], seed=3)
    rows = unique_rows(model, layout)
    expanded = layout.expand(rows)
    seen = []
    hook = dec.layers[0].self_attn.register_forward_hook(lambda m, a, out: seen.append(out[0]))
    try:
        with torch.no_grad():
            model.model(inputs_embeds=expanded, attention_mask=layout.valid.long(),
                        position_ids=torch.where(layout.valid, layout.positions, 0))
            with use_dymu_attention(dec):
                prefill(dec, rows, layout)
    finally:
        hook.remove()
    full, vtu = seen
    # mean over copies of the unmodified outputs (one-hot layout)
    want = torch.zeros_like(vtu)
    count = torch.zeros(vtu.shape[:2], dtype=vtu.dtype)
    for b in range(2):
        for i in layout.valid[b].nonzero()[:, 0].tolist():
            u = int(layout.index[b, i, 0])
            want[b, u] += full[b, i]
            count[b, u] += 1
    want = want / count.clamp_min(1)[..., None]
    assert_rounding_close(vtu[layout.unique_valid], want[layout.unique_valid], forward_ops(model.config, 17))
