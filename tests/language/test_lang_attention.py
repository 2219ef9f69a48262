"""VTU attention against explicit expansion: before the re-merge it is ordinary attention over the expanded
sequence at virtual positions; after it, each unique row holds the weighted mean over its copies (float64,
at its rounding bound)."""
from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from dymu_eval.language import ATTENTION_NAME, dymu_attention, prefill, use_dymu_attention, virtual_attention
from dymu_eval.language.attention import _one_query, _one_query_attend
from dymu_eval.language.state import ForwardState, Segment, Side, rotary_at
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
        llama.model.config._attn_implementation = ATTENTION_NAME
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


@pytest.mark.parametrize("hkv", [4, 2])
@pytest.mark.parametrize("k", [1, 2])
def test_a_decoding_step_equals_attention_over_the_expanded_keys(llama, k, hkv):
    """One new query over a VTU key side (a decoding step: RoPE folded into per-row products, softmax
    weights summed onto rows) equals eager attention over the expanded, rotated keys and values."""
    dec, _ = parts(llama)
    layout = random_layout([5, 7], [9, 12], k=k, seed=10 + k)
    torch.manual_seed(1)
    b, h, d, nu = 2, 4, 16, layout.unique_len
    q = torch.randn(b, h, 1, d, dtype=torch.float64)
    key, val = (torch.randn(b, hkv, nu + 1, d, dtype=torch.float64) for _ in range(2))  # cached rows + the new one
    nxt = torch.where(layout.valid, layout.positions, -1).amax(1) + 1
    cos, sin = rotary_at(dec.rotary_emb, q, nxt[:, None])
    kv = Side.from_layout(layout, dec.rotary_emb, q).append(nxt, cos, sin)
    seg = Segment(range(1), Side.single(nxt, cos, sin), kv)
    assert _one_query(seg, h, hkv) == (hkv == h)  # the fold serves one key head per query head
    if hkv == h:  # through the registered function, as a decoding step reaches it
        got, _ = dymu_attention(AttentionStub(), q, key, val, None, scaling=d ** -0.5,
                                dymu_state=ForwardState([seg]))
    else:  # the fold itself is exact for grouped keys too
        got = _one_query_attend(q, key, val, seg, d ** -0.5).transpose(1, 2)
    # reference: every virtual key/value built by hand, rotated at its position with HF's own RoPE
    pos = torch.where(kv.valid, kv.positions, 0)
    kcos, ksin = dec.rotary_emb(q, position_ids=pos)
    want = torch.zeros(b, 1, h, d, dtype=torch.float64)
    for bi in range(b):
        ent = [j for j in range(kv.positions.shape[1]) if kv.valid[bi, j]]
        mix = lambda t, j: sum(float(kv.weight[bi, j, c]) * t[bi, :, int(kv.index[bi, j, c])]  # noqa: E731
                               for c in range(kv.index.shape[2]))
        keys = torch.stack([mix(key, j) for j in ent], 1)  # (Hkv, N, Dh)
        vals = torch.stack([mix(val, j) for j in ent], 1)
        qr, _ = apply_rotary_pos_emb(q[bi:bi + 1], q[bi:bi + 1], cos[bi:bi + 1, 0], sin[bi:bi + 1, 0])
        _, kr = apply_rotary_pos_emb(keys[None], keys[None], kcos[bi:bi + 1, ent], ksin[bi:bi + 1, ent])
        scores = qr[0] @ repeat_kv(kr, h // hkv)[0].transpose(-1, -2) * d ** -0.5  # (H, 1, N)
        want[bi, 0] = (scores.softmax(-1) @ repeat_kv(vals[None], h // hkv)[0])[:, 0]
    assert_rounding_close(got, want, SMALL_OPS)
