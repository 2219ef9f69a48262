"""The "dymu_vtu" attention function, registered with transformers' AttentionInterface.

The model's attention module computes q/k/v on unique rows, applies its RoPE (the loop passes
cos = 1, sin = 0, so raw keys reach the cache), updates the cache and then calls this function
with the ``dymu_state`` keyword it received from the decoder layer. Here queries, keys and
values are expanded to virtual entries, rotated at their virtual positions with the model's own
cos/sin, attended causally over the virtual sequence and averaged back onto unique rows.
Without ``dymu_state`` it is plain SDPA, so a model left on "dymu_vtu" behaves as usual.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .state import ForwardState, Segment, rotate

__all__ = ["ATTENTION_NAME", "dymu_attention", "use_dymu_attention", "virtual_attention"]

ATTENTION_NAME = "dymu_vtu"


def virtual_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      segment: Segment, scaling: float | None = None) -> torch.Tensor:
    """Attention over the virtual sequence, before the re-merge: (B, H, Nq_virtual, Dh).

    ``query`` (B, H, n_q_rows, Dh) and ``key``/``value`` (B, Hkv, n_kv_rows, Dh) are un-rotated rows.
    """
    return _attend(query, key, value, segment, scaling)[0]


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, segment: Segment,
            scaling: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, rotated virtual queries, rotated virtual keys)."""
    if segment.prerotated:  # the model's RoPE already turned them (identity layout)
        q, k = segment.q.expand(query), segment.kv.expand(key)
    else:
        q, k = segment.q.expand_rotated(query), segment.kv.expand_rotated(key)
    v = segment.kv.expand(value)
    mask, is_causal = segment.mask()
    gqa = q.shape[1] != k.shape[1]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scaling,
                                         enable_gqa=gqa)
    return out, q, k


def _one_query(segment: Segment, heads: int, kv_heads: int) -> bool:
    """A decoding step over a VTU key side that ``_one_query_attend`` serves: one query entry per
    sample (its own row), keys the attention function rotates (not the identity layout), RoPE
    halves that repeat, and one key head per query head. With grouped keys (Qwen2: 7 query heads
    per key head) expanding the few key heads costs less than folding per query head, so SDPA
    over the expanded keys stays (``accounting.decode_value_rows`` counts the two cases)."""
    return (heads == kv_heads and segment.q.identity and segment.q.positions.shape[1] == 1
            and not segment.prerotated and segment.kv.phase() is not None)


def _one_query_attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, segment: Segment,
                      scaling: float | None) -> torch.Tensor:
    """A decoding step's attention (B, H, 1, Dh) over a VTU key side, without expanding keys or values.

    RoPE folds into a product on the rows: with the query rotated at its position and a key row k
    rotated at an entry's position (cos c, sin s per frequency pair), q'.k' = c.(q1 k1 + q2 k2) +
    s.(q2 k1 - q1 k2), so each entry's score is [c | s] . C[row] with C built once per row; the
    softmax weights are summed onto the rows their entries copy, so each value row is read once.
    Equal to attention over the expanded, rotated sequence (the sums are only reordered)."""
    b, h, _, d = query.shape
    hkv, n_rows, half = key.shape[1], key.shape[2], d // 2
    rep = h // hkv
    q = rotate(query, segment.q.cos, segment.q.sin).reshape(b, 1, hkv, rep, d)
    k = key.transpose(1, 2).unsqueeze(3)  # (B, Nu, Hkv, 1, Dh)
    q1, q2, k1, k2 = q[..., :half], q[..., half:], k[..., :half], k[..., half:]
    rows = torch.cat([q1 * k1 + q2 * k2, q2 * k1 - q1 * k2], -1)  # (B, Nu, Hkv, rep, Dh)
    kv = segment.kv
    n = kv.positions.shape[1]
    per_entry = kv.expand(rows.reshape(b, 1, n_rows, h * d)).view(b, n, h, d)
    # a dot product per entry and head; einsum runs it as one product (a batched matmul of 617 matrix-vector
    # products is ~8x slower at Llama-7B's widths on a CPU)
    scores = torch.einsum("bnhd,bnd->bhn", per_entry, kv.phase().view(b, n, d))  # (B, H, Nv)
    acc = torch.promote_types(query.dtype, torch.float32)  # fp32 or wider, as SDPA's softmax
    scores = scores.to(acc) * (scaling if scaling is not None else d ** -0.5)
    mask, _ = segment.mask()
    if mask is not None:
        scores = scores.masked_fill(~mask[:, 0], float("-inf"))
    probs = scores.softmax(-1)
    kk = kv.index.shape[2]
    w = (probs.unsqueeze(-1) * kv.weight.to(acc).unsqueeze(1)).reshape(b, h, n * kk)
    on_rows = torch.zeros(b, h, n_rows, dtype=acc, device=query.device).scatter_add_(
        2, kv.index.reshape(b, 1, n * kk).expand(b, h, -1), w)
    out = torch.matmul(on_rows.to(value.dtype).view(b, hkv, rep, n_rows), value)  # (B, Hkv, rep, Dh)
    return out.reshape(b, h, 1, d)


def _record(q: torch.Tensor, k: torch.Tensor, segment: Segment, scaling: float | None,
            needs: frozenset[str]) -> dict[str, torch.Tensor]:
    """What a pruner's cut asked this layer to record (``language.pruning.NEEDS``)."""
    recorded: dict[str, torch.Tensor] = {}
    if "last_query_attention" in needs:
        recorded["last_query_attention"] = _last_query_attention(q, k, segment, scaling)
    if "keys" in needs:
        recorded["keys"] = k
    if "queries" in needs:
        recorded["queries"] = q
    return recorded


def _last_query_attention(q: torch.Tensor, k: torch.Tensor, segment: Segment, scaling: float | None) -> torch.Tensor:
    """(B, Nk) softmax attention of each sample's last valid query, averaged over heads (FastV's score)."""
    b, h, _, d = q.shape
    hkv = k.shape[1]
    last = segment.last_query()
    q_last = torch.gather(q, 2, last.view(b, 1, 1, 1).expand(b, h, 1, d)).view(b, hkv, h // hkv, d)
    scale = scaling if scaling is not None else d ** -0.5
    scores = torch.matmul(q_last.float(), k.float().transpose(-1, -2)) * scale  # (B, Hkv, rep, Nk)
    q_pos = torch.gather(segment.q.positions, 1, last[:, None])
    allowed = (segment.kv.positions <= q_pos) & segment.kv.valid
    scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
    return scores.softmax(-1).mean(dim=(1, 2))


def dymu_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                   dymu_state: ForwardState | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """AttentionInterface entry point: VTU over ``dymu_state`` or, without it, plain SDPA."""
    if dymu_state is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    segment = dymu_state.segment(module.layer_idx)
    needs = dymu_state.record.get(module.layer_idx)
    if not needs and _one_query(segment, query.shape[1], key.shape[1]):
        return segment.q.remerge(_one_query_attend(query, key, value, segment, scaling)), None
    out, q, k = _attend(query, key, value, segment, scaling)
    if needs:
        dymu_state.recorded[module.layer_idx] = _record(q, k, segment, scaling, needs)
    return segment.q.remerge(out), None


AttentionInterface.register(ATTENTION_NAME, dymu_attention)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


@contextlib.contextmanager
def use_dymu_attention(decoder: torch.nn.Module) -> Iterator[None]:
    """Route the decoder's attention modules through "dymu_vtu" for the duration of a call."""
    config = decoder.config
    before = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = before
