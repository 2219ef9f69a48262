"""Merged-token state of a padded batch, and the size-weighted merge that updates it.

After a merge the tokens of every image are laid out by a per-image rule (``order.Layout``:
the reference code's order by default, position order as an option), and the valid tokens of
every image form a prefix (the batch is compacted after each merge). Both make a batch give
exactly the same tokens as its images run one by one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .matching import Matching, rank_desc
from .order import Layout


@dataclass
class TokenState:
    """x (B,T,D) tokens; valid (B,T) bool; sizes (B,T) float (patches per token);
    first (B,T) long (smallest original index a token holds);
    patch_to_token (B,N0) long (for every original token: index of the current token holding it);
    trivial: nothing merged yet (all sizes 1, no padding), so attention needs no bias."""

    x: torch.Tensor
    valid: torch.Tensor
    sizes: torch.Tensor
    first: torch.Tensor
    patch_to_token: torch.Tensor
    trivial: bool = True

    @classmethod
    def initial(cls, x: torch.Tensor) -> TokenState:
        """One token per original position, nothing merged yet."""
        bsz, n, _ = x.shape
        pos = torch.arange(n, device=x.device).expand(bsz, n)
        return cls(
            x=x,
            valid=torch.ones(bsz, n, dtype=torch.bool, device=x.device),
            sizes=torch.ones(bsz, n, dtype=x.dtype, device=x.device),
            first=pos.clone(),
            patch_to_token=pos.clone(),
        )

    @property
    def counts(self) -> torch.Tensor:
        """(B,) number of valid tokens per image."""
        return self.valid.sum(dim=1)

    @property
    def padded(self) -> bool:
        """True when some image has fewer tokens than the padded length."""
        return not bool(self.valid.all())


def apply_merges(state: TokenState, m: Matching, merge_mask: torch.Tensor, layout: Layout | None = None) -> TokenState:
    """Merge every selected A token into its B partner (size-weighted mean, sizes add), drop
    the merged A tokens, lay out what is kept as ``layout`` says (default: the reference
    order) and compact the padding."""
    layout = layout or Layout()
    merged = merge_mask.any(dim=1)  # (B,) images that merged something
    relay = torch.ones_like(merged) if layout.relay_idle else merged
    if not bool(relay.any()) or m.b_idx.shape[1] == 0:  # nothing to do (a single token cannot be re-laid)
        return state
    x, sizes, first = state.x, state.sizes, state.first
    bsz, t, d = x.shape
    device = x.device
    dst = m.b_idx.gather(1, m.partner)  # (B, Na) position of each A token's partner
    a_sizes = sizes.gather(1, m.a_idx)
    w = torch.where(merge_mask, a_sizes, torch.zeros_like(a_sizes))
    # Size-weighted sums into the receiving B tokens, in fp32 (or wider): size * x overflows fp16 easily.
    acc = torch.promote_types(x.dtype, torch.float32)
    xf, sf, wf = x.to(acc), sizes.to(acc), w.to(acc)
    a_x = xf.gather(1, m.a_idx.unsqueeze(-1).expand(-1, -1, d))
    recv_sum = torch.zeros_like(xf).scatter_add_(1, dst.unsqueeze(-1).expand(-1, -1, d), a_x * wf.unsqueeze(-1))
    recv_size = torch.zeros_like(sf).scatter_add_(1, dst, wf)
    received = torch.zeros(bsz, t, dtype=torch.long, device=device).scatter_add_(1, dst, merge_mask.long()) > 0
    new_sizes = (sf + recv_size).to(sizes.dtype)
    merged_x = (xf * sf.unsqueeze(-1) + recv_sum) / (sf + recv_size).unsqueeze(-1)
    new_x = torch.where(received.unsqueeze(-1), merged_x.to(x.dtype), x)
    big = torch.iinfo(first.dtype).max
    a_first = torch.where(merge_mask, first.gather(1, m.a_idx), torch.full_like(first.gather(1, m.a_idx), big))
    new_first = first.scatter_reduce(1, dst, a_first, reduce="amin", include_self=True)
    # Which token absorbs each token (itself unless it is a merged A token).
    absorber = torch.arange(t, device=device).expand(bsz, t).clone()
    absorber.scatter_(1, m.a_idx, torch.where(merge_mask, dst, m.a_idx))
    is_src = absorber != torch.arange(t, device=device)
    keep = state.valid & ~is_src
    t_new = int(keep.sum(dim=1).max())
    key = new_first if layout.order == "position" else _reference_key(m, layout, relay, t)
    key = torch.where(keep, key, torch.full_like(key, big))
    order = torch.sort(key, dim=1, stable=True).indices[:, :t_new]
    new_pos = torch.zeros(bsz, t, dtype=torch.long, device=device)
    new_pos.scatter_(1, order, torch.arange(t_new, device=device).expand(bsz, t_new))
    old_to_new = new_pos.gather(1, absorber)
    return TokenState(
        x=new_x.gather(1, order.unsqueeze(-1).expand(-1, -1, d)),
        valid=keep.gather(1, order),
        sizes=new_sizes.gather(1, order),
        first=new_first.gather(1, order),
        patch_to_token=old_to_new.gather(1, state.patch_to_token),
        trivial=state.trivial and not bool(merged.any()),
    )


def _reference_key(m: Matching, layout: Layout, relay: torch.Tensor, t: int) -> torch.Tensor:
    """(B, T) sort key of the current tokens for the reference order: [unmerged A, all B] for a
    re-laid image (CLS, an A token that never merges, stays first), the current order otherwise."""
    bsz, na = m.a_idx.shape
    device = m.a_idx.device
    current = torch.arange(t, device=device).expand(bsz, t)
    if layout.by_score and not m.protected:
        a_key = rank_desc(m.score)  # descending best score, ties in current order
    else:
        a_key = torch.arange(na, device=device).expand(bsz, na)
    b_key = na + torch.arange(m.b_idx.shape[1], device=device).expand_as(m.b_idx)
    key = torch.empty(bsz, t, dtype=torch.long, device=device)
    key.scatter_(1, m.a_idx, a_key.contiguous())
    key.scatter_(1, m.b_idx, b_key.contiguous())
    return torch.where(relay.unsqueeze(1), key, current)
