"""The pruner itself: one cut at layer 1 (the first layer on the reduced rows), original positions."""
from __future__ import annotations

import torch

from dymu_eval.language.pruning import Cut, CutView, Pruner


class KeepHalf(Pruner):
    def cuts(self) -> list[Cut]:
        return [Cut(layer=1, positions="original")]

    def select(self, view: CutView) -> torch.Tensor:
        """The 1st, 3rd, 5th ... image entry of each request."""
        rank = view.candidates.long().cumsum(1) - 1
        return view.candidates & (rank % 2 == 0)
