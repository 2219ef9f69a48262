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
    w = torch.where(merge_mask, sizes.gather(1, m.a_idx), torch.zeros_like(merge_mask, dtype=sizes.dtype))
    acc = torch.promote_types(x.dtype, torch.float32)  # size * x overflows fp16 easily: sums in fp32 or wider
    recv_size = torch.zeros(bsz, t, dtype=acc, device=device).scatter_add_(1, dst, w.to(acc))
    new_sizes = (sizes.to(acc) + recv_size).to(sizes.dtype)
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
    new_x = x.gather(1, order.unsqueeze(-1).expand(-1, -1, d))
    _write_merged(new_x, x, sizes.to(acc), recv_size, merge_mask, m.a_idx, dst, w.to(acc), new_pos)
    return TokenState(
        x=new_x,
        valid=keep.gather(1, order),
        sizes=new_sizes.gather(1, order),
        first=new_first.gather(1, order),
        patch_to_token=old_to_new.gather(1, state.patch_to_token),
        trivial=state.trivial and not bool(merged.any()),
    )


def _write_merged(new_x: torch.Tensor, x: torch.Tensor, sizes: torch.Tensor, recv_size: torch.Tensor,
                  merge_mask: torch.Tensor, a_idx: torch.Tensor, dst: torch.Tensor, w: torch.Tensor,
                  new_pos: torch.Tensor) -> None:
    """Overwrite, in ``new_x`` (the kept tokens, laid out), each token that received merges with the
    size-weighted mean (x * size + sum of size_a * x_a) / (size + sum of size_a); ``sizes``,
    ``recv_size`` (the sum of size_a per token) and ``w`` (size_a, 0 where A did not merge) are in
    the accumulation dtype.

    Only the merged A tokens and their receivers are read: the rest of the batch is not touched
    again (a pass over it costs more than the merge's arithmetic). The sums run over each
    receiver's sources in A order, so every value is the one a dense scatter over all A tokens gives."""
    bsz, t, d = x.shape
    batch, j = merge_mask.nonzero(as_tuple=True)  # merged A tokens, in (image, A) order
    if batch.numel() == 0:
        return
    src = batch * t + a_idx[batch, j]  # flat rows of x
    receiver, slot = torch.unique(batch * t + dst[batch, j], return_inverse=True)  # flat rows, sorted
    flat, acc = x.reshape(bsz * t, d), w.dtype
    recv_sum = torch.zeros(receiver.numel(), d, dtype=acc, device=x.device).index_add_(
        0, slot, flat.index_select(0, src).to(acc) * w[batch, j, None])
    own, received = sizes.reshape(-1)[receiver], recv_size.reshape(-1)[receiver]
    merged = (flat.index_select(0, receiver).to(acc) * own[:, None] + recv_sum) / (own + received)[:, None]
    r_batch = torch.div(receiver, t, rounding_mode="floor")
    new_x[r_batch, new_pos.reshape(-1)[receiver]] = merged.to(x.dtype)


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
