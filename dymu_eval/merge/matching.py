"""Bipartite soft matching: each token of set A proposes its most similar token of set B.

One function serves ToMe, DToMe and calibration; the policies in ``policies.py`` only decide
which of the proposed edges are merged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Matching:
    """Best A->B edges of one layer for a padded batch whose valid tokens form a prefix.

    a_idx, b_idx: positions of the A (even) and B (odd) tokens in the current sequence.
    score: best cosine similarity of each A token; -inf for a protected (CLS) or padded A token.
    partner: index into ``b_idx`` of that best B token.
    cap: per image, the most merges the instance path allows in this layer, (n_valid - protected) // 2.
    protected: True when token 0 is a class token that never merges.
    """

    a_idx: torch.Tensor  # (B, Na) long
    b_idx: torch.Tensor  # (B, Nb) long
    score: torch.Tensor  # (B, Na) float
    partner: torch.Tensor  # (B, Na) long
    cap: torch.Tensor  # (B,) long
    protected: bool = False

    @property
    def mergeable(self) -> torch.Tensor:
        """(B, Na) bool: edges that may be merged at all (real, unprotected A with a real B)."""
        return torch.isfinite(self.score)


def bipartite_scores(metric: torch.Tensor, valid: torch.Tensor, protect_first: bool) -> Matching:
    """Split the current tokens alternately into A (even) and B (odd) and find each A's best B.

    metric: (B, N, C) similarity features (the layer's keys averaged over heads).
    valid: (B, N) bool, valid tokens first (a prefix), padding after.
    protect_first: True when token 0 is a CLS token that must never merge.
    """
    if metric.dim() != 3 or valid.shape != metric.shape[:2]:
        raise ValueError(f"metric (B,N,C) and valid (B,N) disagree: {tuple(metric.shape)} vs {tuple(valid.shape)}")
    bsz, n, _ = metric.shape
    device = metric.device
    unit = F.normalize(metric.to(torch.promote_types(metric.dtype, torch.float32)), dim=-1)  # fp32 or wider
    a_pos = torch.arange(0, n, 2, device=device)
    b_pos = torch.arange(1, n, 2, device=device)
    a_idx = a_pos.expand(bsz, -1)
    b_idx = b_pos.expand(bsz, -1)
    neg_inf = torch.tensor(float("-inf"), device=device)
    if len(b_pos) == 0:
        score = neg_inf.expand(bsz, len(a_pos)).clone()
        partner = torch.zeros(bsz, len(a_pos), dtype=torch.long, device=device)
    else:
        scores = unit[:, ::2] @ unit[:, 1::2].transpose(1, 2)  # (B, Na, Nb)
        scores = scores.masked_fill(~valid[:, 1::2].unsqueeze(1), float("-inf"))
        score, partner = scores.max(dim=-1)
    score = score.masked_fill(~valid[:, ::2], float("-inf"))
    if protect_first and score.shape[1] > 0:
        score[:, 0] = float("-inf")
    protected = 1 if protect_first else 0
    cap = ((valid.sum(dim=1) - protected).clamp(min=0)) // 2
    return Matching(a_idx=a_idx, b_idx=b_idx, score=score, partner=partner, cap=cap, protected=protect_first)


def rank_desc(score: torch.Tensor) -> torch.Tensor:
    """(B, Na) rank of every edge within its image, best first (ties: lower position first)."""
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return ranks
