"""FastV (Chen et al., ECCV'24): after decoder layer K, keep only the image tokens the last token attends to most.

One cut of the pruning hook (``language.pruning``): ranking uses layer K-1's attention of the last
token, averaged over heads (what the official code does); kept entries stay at their original
positions. Dropping and masking give the same logits and tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..vocabulary import check_fastv
from .pruning import Cut, CutView, Pruner

__all__ = ["FastV", "top_image_entries"]


@dataclass
class FastV(Pruner):
    """``k``: first layer that sees the reduced sequence; ``ratio``: fraction of image tokens dropped (FastV's R)."""

    k: int
    ratio: float

    def cuts(self) -> list[Cut]:
        return [Cut(self.k, frozenset({"last_query_attention"}))]

    def check(self, num_layers: int) -> None:
        check_fastv(self.k, self.ratio, num_layers)
        super().check(num_layers)

    def n_keep(self, n_image: int) -> int:
        """round(n_image * (1 - ratio)), halves rounded up."""
        return math.floor(n_image * (1.0 - float(self.ratio)) + 0.5)

    def select(self, view: CutView) -> torch.Tensor:
        return top_image_entries(view.recorded["last_query_attention"], view.candidates, self.n_keep)


def top_image_entries(scores: torch.Tensor, candidates: torch.Tensor, n_keep) -> torch.Tensor:
    """(B, Nv) bool: per sample the ``n_keep(n_candidates)`` best-scoring candidate entries (ties: earlier first)."""
    keep = torch.zeros_like(candidates)
    for b in range(scores.shape[0]):
        cand = candidates[b].nonzero()[:, 0]
        n = n_keep(cand.numel())
        if n == 0:
            continue
        order = torch.sort(scores[b, cand].float(), descending=True, stable=True).indices[:n]
        keep[b, cand[order]] = True
    return keep
