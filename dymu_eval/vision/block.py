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
    rows = x if real is None else _real_rows(x, real)
    return _scatter_each((fn,), rows, real, *x.shape[:2])[0]


def residual(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
             real: RealRows | None) -> torch.Tensor:
    """x + fn(inputs), with ``fn`` (token-wise) run on the ``real`` rows only and added to those rows
    (padding rows of ``x`` stay as they are): the sum ``rowwise`` would give, without building the
    zero-padded output first."""
    if real is None:
        return x + fn(inputs)
    out = fn(_real_rows(inputs, real))
    return x.reshape(-1, x.shape[-1]).index_add(0, real.index, out.to(x.dtype)).view_as(x)


def _real_rows(x: torch.Tensor, real: RealRows) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).index_select(0, real.index)


def mix_heads(parts: LayerParts, x: torch.Tensor, norm: Callable[[torch.Tensor], torch.Tensor],
              bias: torch.Tensor | None, probe: Probe | None = None,
              real: RealRows | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention up to its output projection: q/k/v of ``norm(x)`` through the model's own
    projections (on the ``real`` rows only, gathered once), proportional SDPA; returns the heads'
    output (B,T,H*Dh) and the keys (B,H,T,Dh). With a ``probe``, also records the head-mean keys
    and the attention each token receives."""
    bsz, t, _ = x.shape
    shape = (bsz, t, parts.num_heads, parts.head_dim)
    h = norm(x if real is None else _real_rows(x, real))
    q, k, v = (y.view(shape).transpose(1, 2) for y in _scatter_each((parts.q, parts.k, parts.v), h, real, bsz, t))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=parts.scale)
    if probe is not None:
        probe.keys = k.mean(dim=1)
        probe.importance = received_attention(q, k, bias, parts.scale, probe.has_cls,
                                              None if real is None else real.valid)
    return out.transpose(1, 2).reshape(bsz, t, parts.num_heads * parts.head_dim), k


def _scatter_each(fns: tuple[Callable[[torch.Tensor], torch.Tensor], ...], rows: torch.Tensor,
                  real: RealRows | None, bsz: int, t: int) -> list[torch.Tensor]:
    """Each ``fn`` of ``rows`` (the real rows, or the whole batch when ``real`` is None), laid back
    out as (B,T,·) with zero padding rows."""
    if real is None:
        return [fn(rows) for fn in fns]
    outs = (fn(rows) for fn in fns)
    return [out.new_zeros(bsz * t, out.shape[-1]).index_copy_(0, real.index, out).view(bsz, t, -1) for out in outs]


def attention(parts: LayerParts, h: torch.Tensor, bias: torch.Tensor | None,
              probe: Probe | None = None, real: RealRows | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head self-attention of the normalised tokens ``h`` through the model's own
    projections; returns (output, keys). ``real`` (``RealRows.of``): project only those rows
    (padding keys are masked by the bias)."""
    mixed, k = mix_heads(parts, h, _same, bias, probe, real)
    return rowwise(parts.o, mixed, real), k


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _scaled(scale: Callable[[torch.Tensor], torch.Tensor] | None,
            fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn`` followed by the layer scale (DINOv2), if the model has one."""
    return fn if scale is None else (lambda y: scale(fn(y)))


def run_block(parts: LayerParts, state: TokenState, layer: int, policy: Policy, protect_first: bool,
              probe: Probe | None = None) -> TokenState:
    """Apply one block to the padded batch, merging after the attention residual; the token-wise
    work (norms, projections, MLP, residual sums) runs on the real tokens only."""
    x, real = state.x, RealRows.of(state)
    mixed, keys = mix_heads(parts, x, parts.ln1, attention_bias(state, x.dtype), probe, real)
    state = replace(state, x=residual(x, _scaled(parts.ls1, parts.o), mixed, real))
    if policy.merges_at(layer):
        matching = bipartite_scores(keys.mean(dim=1), state.valid, protect_first)
        state = apply_merges(state, matching, policy(layer, matching), policy.layout)
    x = state.x
    mlp = _scaled(parts.ls2, lambda y: parts.mlp(parts.ln2(y)))
    return replace(state, x=residual(x, mlp, x, RealRows.of(state)))
