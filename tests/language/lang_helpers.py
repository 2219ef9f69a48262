"""Helpers for the language tests (and the VLM tests that check VTU): random VTU layouts, the rows they
index, and eager attention over the explicitly expanded sequence. The decoders come from
``tests.factories.decoders``."""
from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from dymu_eval.language import VirtualLayout, split_causal_lm


def random_layout(lengths_u, lengths_v, k=1, seed=0):
    """A random VTU layout: every unique row used at least once, extra entries random, weights random if k > 1."""
    g = torch.Generator().manual_seed(seed)
    maps, weights = [], []
    for nu, nv in zip(lengths_u, lengths_v):
        cover = torch.randperm(nu, generator=g)
        extra = torch.randint(0, nu, (nv - nu,), generator=g)
        order = torch.cat([cover, extra])[torch.randperm(nv, generator=g)]
        if k == 1:
            maps.append(order)
            weights.append(torch.ones(nv))
        else:
            m = torch.cat([order[:, None], torch.randint(0, nu, (nv, k - 1), generator=g)], 1)
            maps.append(m)
            weights.append(torch.rand(nv, k, generator=g) + 0.1)
    return VirtualLayout.from_mappings(maps, lengths_u, weights)


def parts(model):
    return split_causal_lm(model)


def unique_rows(model, layout, seed=0):
    """Random-token embeddings for the unique rows (padding rows left at zero)."""
    g = torch.Generator().manual_seed(seed)
    dec, _ = parts(model)
    ids = torch.randint(0, model.config.vocab_size, layout.unique_valid.shape, generator=g)
    with torch.no_grad():
        emb = dec.embed_tokens(ids)
    return emb * layout.unique_valid.unsqueeze(-1)


def reference_attention(q, k, v, layout, rotary):
    """Eager attention over the explicitly expanded and rotated sequence: (B, H, Nv, Dh)."""
    _, h, _, d = q.shape
    cos, sin = rotary(q, position_ids=torch.where(layout.valid, layout.positions, 0))
    exp = [torch.stack([layout.expand(t[:, i]) for i in range(t.shape[1])], 1) for t in (q, k, v)]
    qv, kv = apply_rotary_pos_emb(exp[0], exp[1], cos, sin)
    kv, vv = repeat_kv(kv, h // k.shape[1]), repeat_kv(exp[2], h // k.shape[1])
    scores = qv @ kv.transpose(-1, -2) * d ** -0.5
    nv = layout.virtual_len
    allowed = torch.ones(nv, nv, dtype=torch.bool).tril()[None] & layout.valid[:, None, :]
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return scores.softmax(-1) @ vv


class AttentionStub(torch.nn.Module):
    """The attributes an attention module must have for ``virtual_attention``."""

    layer_idx = 0
    num_key_value_groups = 2
    is_causal = True


def run_with_cuts(model, rows, image, choose, contiguous):
    """The plain HF decoder layers over one sample ``rows`` (1, N, D), at positions 0..N-1, with cuts:
    before layer L in ``choose``, ``choose[L](inputs, positions, alive)`` returns the original indices
    of the image entries (``image``, a set) that stay; ``inputs[i]`` is what entered layer i, over the
    entries alive then (``inputs[L]``: the rows entering the cut layer), ``alive`` the original index
    of each current entry. ``contiguous`` renumbers the survivors 0, 1, ...; otherwise they keep their
    positions. Returns (logits (1, n, V) of the survivors, their original indices, each cut's kept set)."""
    dec = model.model
    n = rows.shape[1]
    h, alive, pos = rows, torch.arange(n), torch.arange(n)
    inputs, kept_sets = [], []
    with torch.no_grad():
        for i, layer in enumerate(dec.layers):
            if i in choose:
                kept = set(choose[i](inputs + [h], pos, alive))
                stay = torch.tensor([a not in image or a in kept for a in alive.tolist()])
                alive, h, pos = alive[stay], h[:, stay], pos[stay]
                inputs = [x[:, stay] for x in inputs]
                if contiguous:
                    pos = torch.arange(alive.numel())
                kept_sets.append(kept)
            inputs.append(h)
            out = layer(h, attention_mask=None, position_embeddings=dec.rotary_emb(h, pos[None]))
            h = out[0] if isinstance(out, tuple) else out
        return model.lm_head(dec.norm(h)), alive, kept_sets


def rotated_qk(model, layer_index, h, pos):
    """Layer ``layer_index``'s rotated queries (1, H, n, Dh) and keys (1, Hkv, n, Dh) on ``input_layernorm(h)``."""
    layer = model.model.layers[layer_index]
    attn = layer.self_attn
    d = attn.head_dim
    x = layer.input_layernorm(h)
    q = attn.q_proj(x).view(1, x.shape[1], -1, d).transpose(1, 2)
    k = attn.k_proj(x).view(1, x.shape[1], -1, d).transpose(1, 2)
    cos, sin = model.model.rotary_emb(h, pos[None])
    return apply_rotary_pos_emb(q, k, cos, sin)


def drop_and_mask(dec, head, rows, layout, drop, mask, ops, steps=6):
    """Run a pruning that drops rows and the same pruning that masks them; check that the kept
    entries' logits, the greedy tokens and every step's scores agree at the rounding bound of
    ``ops`` operations. Returns (mask of entries kept at prefill, generate outputs drop, mask)."""
    from dymu_eval.language import DecodeConfig, generate, prefill_logits
    from tests.helpers.numerics import assert_rounding_close

    got, want = prefill_logits(dec, head, rows, layout, drop), prefill_logits(dec, head, rows, layout, mask)
    kept = ~torch.isnan(got[..., 0])
    assert_rounding_close(got[kept], want[kept], ops)
    cfg = DecodeConfig(max_new_tokens=steps)
    out_drop = generate(dec, head, rows, layout, cfg, pruning=drop, return_scores=True)
    out_mask = generate(dec, head, rows, layout, cfg, pruning=mask, return_scores=True)
    assert out_drop.sequences == out_mask.sequences
    for a, b in zip(out_drop.scores, out_mask.scores):
        assert_rounding_close(a, b, ops)
    return kept, out_drop, out_mask
