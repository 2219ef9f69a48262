"""DART (Wen et al., EMNLP'25): keep pivot image tokens and the image tokens least like the pivots.

One cut of the pruning hook (``language.pruning``) at layer K (default 2), from what layer K-1 gave:
- pivots: the ``image_pivots`` image entries and the ``text_pivots`` text entries (those after the
  last image entry, the instruction) with the largest L1 norm of layer K-1's rotated keys, heads
  concatenated;
- for each pivot in turn (entry order), the ``budget // (image_pivots + text_pivots)`` image
  entries of the pool with the lowest cosine similarity to it, compared in the final-normed hidden
  space (``decoder.norm`` of the rows entering layer K, as the official code does); each pick leaves
  the pool, which starts as the image entries less the image pivots;
- kept: the image pivots and every pick (the text pivots stay as text), so ``budget + image_pivots``
  image entries when the budget divides evenly. Kept entries keep their original positions.

The official code iterates over a Python set of pivots; here pivots go in entry order (the
greedy picks depend on the order, a set's order is an accident of hashing).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layout import mix_rows
from .pruning import Cut, CutView, Pruner

__all__ = ["Dart"]


@dataclass
class Dart(Pruner):
    """``layer``: the first layer on the kept rows; ``budget``: image entries picked besides the image
    pivots, a count per request (the official ``max_num_trunction``) or a fraction of its image entries."""

    layer: int = 2
    budget: int | float = 128
    image_pivots: int = 4
    text_pivots: int = 4

    def cuts(self) -> list[Cut]:
        return [Cut(self.layer, frozenset({"keys"}), "original")]

    def select(self, view: CutView) -> torch.Tensor:
        keys = view.recorded["keys"]  # (B, Hkv, Nv, Dh), rotated
        norms = keys.abs().sum(dim=(1, 3))  # L1 norm over the concatenated heads: (B, Nv)
        layout = view.layout
        states = mix_rows(view.decoder.norm(view.hidden), layout.index, layout.weight)  # (B, Nv, D)
        candidates = view.candidates
        keep = torch.zeros_like(candidates)
        ar = torch.arange(layout.virtual_len, device=keys.device)
        for b in range(keep.shape[0]):
            image = candidates[b].nonzero()[:, 0]
            if image.numel() == 0:
                continue
            per_pivot = self.picks(image.numel()) // (self.image_pivots + self.text_pivots)
            text = (layout.valid[b] & ~view.image_mask[b] & (ar > image[-1])).nonzero()[:, 0]
            image_piv = image[_top(norms[b, image], self.image_pivots)]
            text_piv = text[_top(norms[b, text], self.text_pivots)]
            pool = image[~torch.isin(image, image_piv)]
            picked = [image_piv]
            for pivot in torch.cat([image_piv, text_piv]).sort().values.tolist():
                n = min(per_pivot, pool.numel())
                if n == 0:
                    break
                sim = F.cosine_similarity(states[b, pivot][None], states[b, pool], dim=-1)
                chosen = torch.topk(-sim, n).indices
                picked.append(pool[chosen])
                gone = torch.zeros(pool.numel(), dtype=torch.bool, device=pool.device)
                gone[chosen] = True
                pool = pool[~gone]
            keep[b, torch.cat(picked)] = True
        return keep

    def picks(self, n_image: int) -> int:
        """Image entries to pick besides the pivots for a request with ``n_image`` of them."""
        return round(self.budget * n_image) if isinstance(self.budget, float) else int(self.budget)


def _top(values: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` largest values (all of them when fewer)."""
    return torch.topk(values, min(n, values.numel())).indices
