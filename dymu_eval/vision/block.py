"""One encoder block with merging: x += Attn(LN1(x)) with proportional attention and padding
masked; merge; x += MLP(LN2(x)). The only place the merging algorithm meets a model."""
from __future__ import annotations

from collections.abc import Callable
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
                       has_cls: bool, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B,T) attention received per key: CLS row summed over heads, or the mean over heads and the
    real queries (``valid`` (B,T): padding queries left out)."""
    queries = q[:, :, :1] if has_cls else q
    acc = torch.promote_types(q.dtype, torch.float32)  # fp32 or wider
    logits = (queries.to(acc) @ k.to(acc).transpose(-1, -2)) * scale
    if bias is not None:
        logits = logits + bias.to(acc)
    probs = logits.softmax(dim=-1)  # (B,H,Q,T)
    if has_cls:
        return probs[:, :, 0].sum(dim=1)
    if valid is None:
        return probs.mean(dim=(1, 2))
    w = valid.to(probs.dtype)[:, None, :, None]  # (B,1,Q,1)
    return (probs * w).sum(dim=2).mean(dim=1) / w.sum(dim=2)[:, 0]


@dataclass
class RealRows:
    """The real tokens of a padded batch: ``valid`` (B,T) and their flat indices into B*T rows."""

    valid: torch.Tensor
    index: torch.Tensor

    @classmethod
    def of(cls, state: TokenState) -> RealRows | None:
        """None when nothing is padded (every row is real)."""
        return cls(state.valid, state.valid.reshape(-1).nonzero()[:, 0]) if state.padded else None


def rowwise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, real: RealRows | None) -> torch.Tensor:
    """``fn`` (token-wise) on the ``real`` rows of ``x`` (B,T,D) only; padding rows come back zero.

    Images that merged different amounts leave the shorter ones padded: the projections and the
    MLP then skip the padding, so a batch spends the work its images need (the accounting's
    per-request FLOPs) and not its longest image's."""
    if real is None:
        return fn(x)
    bsz, t, d = x.shape
    out = fn(x.reshape(bsz * t, d).index_select(0, real.index))
    return out.new_zeros(bsz * t, out.shape[-1]).index_copy_(0, real.index, out).view(bsz, t, -1)


def attention(parts: LayerParts, h: torch.Tensor, bias: torch.Tensor | None,
              probe: Probe | None = None, real: RealRows | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head self-attention through the model's own projections; returns (output, keys).
    ``real`` (``RealRows.of``): project only those rows (padding keys are masked by ``bias``).
    With a ``probe``, also records the head-mean keys and the attention each token receives."""
    bsz, t, _ = h.shape
    shape = (bsz, t, parts.num_heads, parts.head_dim)
    q, k, v = (rowwise(proj, h, real).view(shape).transpose(1, 2) for proj in (parts.q, parts.k, parts.v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=parts.scale)
    if probe is not None:
        probe.keys = k.mean(dim=1)
        probe.importance = received_attention(q, k, bias, parts.scale, probe.has_cls,
                                              None if real is None else real.valid)
    out = rowwise(parts.o, out.transpose(1, 2).reshape(bsz, t, parts.num_heads * parts.head_dim), real)
    return out, k


def run_block(parts: LayerParts, state: TokenState, layer: int, policy: Policy, protect_first: bool,
              probe: Probe | None = None) -> TokenState:
    """Apply one block to the padded batch, merging after the attention residual; the token-wise
    work runs on the real tokens only (``rowwise``)."""
    x = state.x
    attn, keys = attention(parts, parts.ln1(x), attention_bias(state, x.dtype), probe, RealRows.of(state))
    if parts.ls1 is not None:
        attn = parts.ls1(attn)
    state = replace(state, x=x + attn)
    if policy.merges_at(layer):
        matching = bipartite_scores(keys.mean(dim=1), state.valid, protect_first)
        state = apply_merges(state, matching, policy(layer, matching), policy.layout)
    x = state.x
    mlp = rowwise(lambda y: parts.mlp(parts.ln2(y)), x, RealRows.of(state))
    if parts.ls2 is not None:
        mlp = parts.ls2(mlp)
    return replace(state, x=x + mlp)
