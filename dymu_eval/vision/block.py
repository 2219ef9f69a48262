"""One encoder block with merging: x += Attn(LN1(x)) with proportional attention and padding
masked; merge; x += MLP(LN2(x)). The only place the merging algorithm meets a model."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..merge import Policy, TokenState, apply_merges, bipartite_scores
from .family import LayerParts


def attention_bias(state: TokenState, dtype: torch.dtype) -> torch.Tensor | None:
    """(B,1,1,T) additive key bias: log(size) for real tokens, a huge negative for padding.

    None while nothing has merged (all sizes 1, no padding), so the unreduced path is the
    model's own SDPA call without a mask.
    """
    if state.trivial:
        return None
    bias = state.sizes.to(torch.promote_types(dtype, torch.float32)).log()  # fp32 or wider
    bias = bias.masked_fill(~state.valid, torch.finfo(torch.float32).min)
    return bias.to(dtype)[:, None, None, :]


@dataclass
class Probe:
    """What a post-encoder selection reads from a block: ``keys`` (B,T,C) averaged over heads and
    ``importance`` (B,T), the attention each token receives: from the CLS query summed over heads
    when the encoder has CLS (VisionZip), else the mean over heads and queries."""

    has_cls: bool
    keys: torch.Tensor | None = None
    importance: torch.Tensor | None = None


def received_attention(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None, scale: float,
                       has_cls: bool) -> torch.Tensor:
    """(B,T) attention received per key: CLS row summed over heads, or the mean over heads and queries."""
    queries = q[:, :, :1] if has_cls else q
    acc = torch.promote_types(q.dtype, torch.float32)  # fp32 or wider
    logits = (queries.to(acc) @ k.to(acc).transpose(-1, -2)) * scale
    if bias is not None:
        logits = logits + bias.to(acc)
    probs = logits.softmax(dim=-1)  # (B,H,Q,T)
    return probs[:, :, 0].sum(dim=1) if has_cls else probs.mean(dim=(1, 2))


def valid_rows(state: TokenState) -> torch.Tensor | None:
    """Flat indices (into (B*T,)) of the valid tokens of a padded batch, None without padding.

    Once images end with different counts, the token-wise work (norms, projections, MLP) runs on
    these rows only: padding costs nothing there, so time follows the FLOPs of the tokens kept."""
    if state.trivial or not state.padded:
        return None
    return state.valid.reshape(-1).nonzero().squeeze(1)


def _unpack(packed: torch.Tensor, rows: torch.Tensor, bsz: int, t: int) -> torch.Tensor:
    """(N, C) rows back into a zero-padded (B, T, C) batch."""
    return packed.new_zeros(bsz * t, packed.shape[-1]).index_copy_(0, rows, packed).view(bsz, t, -1)


def attention(parts: LayerParts, h: torch.Tensor, bias: torch.Tensor | None,
              probe: Probe | None = None, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head self-attention through the model's own projections; returns (output, keys).
    With a ``probe``, also records the head-mean keys and the attention each token receives.
    With ``rows`` (``valid_rows``), ``h`` is (N, C) packed valid rows, the projections run on them
    alone, and the output is packed too (keys stay padded (B, H, T, Dh), zero at padding)."""
    if rows is None:
        bsz, t, _ = h.shape
        q, k, v = parts.q(h), parts.k(h), parts.v(h)
    else:
        bsz, t = bias.shape[0], bias.shape[-1]
        q, k, v = (_unpack(proj(h), rows, bsz, t) for proj in (parts.q, parts.k, parts.v))
    shape = (bsz, t, parts.num_heads, parts.head_dim)
    q, k, v = (y.view(shape).transpose(1, 2) for y in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=parts.scale)
    if probe is not None:
        probe.keys = k.mean(dim=1)
        probe.importance = received_attention(q, k, bias, parts.scale, probe.has_cls)
    out = out.transpose(1, 2).reshape(bsz * t, parts.num_heads * parts.head_dim)
    if rows is not None:
        return parts.o(out.index_select(0, rows)), k
    return parts.o(out).view(bsz, t, -1), k


def _residual(x: torch.Tensor, rows: torch.Tensor | None, f) -> torch.Tensor:
    """x + f(x) on every token, or (``rows`` given) on the valid rows only; padding rows stay as they are."""
    if rows is None:
        return x + f(x)
    flat = x.reshape(-1, x.shape[-1])
    kept = flat.index_select(0, rows)
    return flat.index_copy(0, rows, kept + f(kept)).view_as(x)


def run_block(parts: LayerParts, state: TokenState, layer: int, policy: Policy, protect_first: bool,
              probe: Probe | None = None) -> TokenState:
    """Apply one block to the padded batch, merging after the attention residual."""
    bias = attention_bias(state, state.x.dtype)
    # a probe averages over every query row, so it reads the padded batch as before
    rows = valid_rows(state) if probe is None else None
    keys = []

    def attn(h: torch.Tensor) -> torch.Tensor:
        out, k = attention(parts, parts.ln1(h), bias, probe, rows)
        keys.append(k)
        return out if parts.ls1 is None else parts.ls1(out)

    state = replace(state, x=_residual(state.x, rows, attn))
    if policy.merges_at(layer):
        matching = bipartite_scores(keys[0].mean(dim=1), state.valid, protect_first)
        state = apply_merges(state, matching, policy(layer, matching), policy.layout)

    def mlp(h: torch.Tensor) -> torch.Tensor:
        out = parts.mlp(parts.ln2(h))
        return out if parts.ls2 is None else parts.ls2(out)

    return replace(state, x=_residual(state.x, valid_rows(state), mlp))
