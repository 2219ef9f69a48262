"""Which proposed A->B edges to merge in a layer: ToMe (top-r), DToMe (threshold),
calibration (batch top-k) and no merging.

A policy is called as ``policy(layer, matching) -> merge_mask (B, Na) bool`` and never merges
a protected or padded token. Its ``layout`` says how the merging layer orders the tokens it
keeps (``order.py``): each policy follows the reference code path it stands for, including
whether the per-image cap ``matching.cap`` applies (instance path) or not (batch path).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import ConfigError
from ..vocabulary import DEFAULT_MERGE_ORDER, check_encoder_call
from .matching import Matching, rank_desc
from .order import Layout, batch_layout, instance_layout


def _check_r(r_per_layer: Sequence[int], what: str) -> list[int]:
    values = list(r_per_layer)
    for i, r in enumerate(values):
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ConfigError(f"{what}: merges per layer must be integers >= 0, layer {i} has {r!r}")
    return values


def _cap_mask(want: torch.Tensor, score: torch.Tensor, cap: torch.Tensor) -> torch.Tensor:
    """Keep, per image, at most ``cap`` of the wanted edges: the best-scoring ones."""
    masked = score.masked_fill(~want, float("-inf"))
    return want & (rank_desc(masked) < cap.unsqueeze(1))


class Policy:
    """Base class. ``num_layers`` is how many layers the policy has settings for (None: any);
    ``layout`` how a merging layer orders what it keeps."""

    num_layers: int | None = None
    layout: Layout = Layout()

    @property
    def merge_order(self) -> str:
        return self.layout.order

    def merges_at(self, layer: int) -> bool:
        """False when layer ``layer`` can never merge (lets the runner skip the matching)."""
        return True

    def _layer_check(self, layer: int) -> None:
        if self.num_layers is not None and not 0 <= layer < self.num_layers:
            raise ConfigError(
                f"{type(self).__name__} has settings for {self.num_layers} layers, asked for layer {layer}"
            )

    def __call__(self, layer: int, m: Matching) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class NoMerge(Policy):
    """The unreduced encoder."""

    def merges_at(self, layer: int) -> bool:
        return False

    def __call__(self, layer: int, m: Matching) -> torch.Tensor:
        return torch.zeros_like(m.score, dtype=torch.bool)


class TopR(Policy):
    """ToMe: merge the r_i best edges of every image in layer i (fewer if the cap is lower).

    The reference runs ToMe on its instance path whatever the batch (``merge_order`` sets
    reference or position order)."""

    def __init__(self, r_per_layer: Sequence[int], merge_order: str = DEFAULT_MERGE_ORDER):
        self.r_per_layer = _check_r(r_per_layer, "TopR")
        self.num_layers = len(self.r_per_layer)
        self.layout = instance_layout(merge_order)

    def merges_at(self, layer: int) -> bool:
        self._layer_check(layer)
        return self.r_per_layer[layer] > 0

    def __call__(self, layer: int, m: Matching) -> torch.Tensor:
        self._layer_check(layer)
        k = m.cap.clamp(max=self.r_per_layer[layer])
        return m.mergeable & (rank_desc(m.score) < k.unsqueeze(1))


class Threshold(Policy):
    """DToMe: merge every edge whose score is strictly above the layer's threshold.

    A threshold of None means the layer never merges (e.g. a layer calibration never ran).

    ``r_per_layer`` (optional) is only a gate: a layer whose schedule gives r = 0 never merges,
    whatever its threshold. Without it every layer may merge.

    ``call`` is how the model family's reference calls the encoder: ``per_image`` (LLaVA-1.5,
    one image per call: the instance path, capped at (n - protected) // 2 per image, an image
    that merges nothing keeps its order) or ``batched`` (LLaVA-OneVision, all crops/frames of
    a request in one call: the batch path, no per-image cap, every image re-laid at each
    merging layer). Each image gets that order whatever batch it runs in.
    """

    def __init__(self, thresholds: Sequence[float | None], r_per_layer: Sequence[int] | None = None,
                 merge_order: str = DEFAULT_MERGE_ORDER, call: str = "per_image"):
        values: list[float | None] = []
        for i, t in enumerate(thresholds):
            if t is None:
                values.append(None)
                continue
            try:
                f = float(t)
            except (TypeError, ValueError):
                raise ConfigError(f"Threshold: layer {i} threshold {t!r} is not a number") from None
            if not math.isfinite(f):
                raise ConfigError(f"Threshold: layer {i} threshold {t!r} is not finite")
            values.append(f)
        if not values:
            raise ConfigError("Threshold: the thresholds list is empty")
        self.thresholds = values
        self.r_per_layer = None
        if r_per_layer is not None:
            self.r_per_layer = _check_r(r_per_layer, "Threshold")
            if len(self.r_per_layer) != len(values):
                raise ConfigError(
                    f"Threshold: {len(values)} thresholds but {len(self.r_per_layer)} merges-per-layer values;"
                    " they must describe the same layers"
                )
        self.num_layers = len(values)
        self.call = check_encoder_call(call)
        self.layout = instance_layout(merge_order) if call == "per_image" else batch_layout(merge_order)

    def merges_at(self, layer: int) -> bool:
        self._layer_check(layer)
        gate = self.r_per_layer is None or self.r_per_layer[layer] > 0
        return gate and self.thresholds[layer] is not None

    def __call__(self, layer: int, m: Matching) -> torch.Tensor:
        if not self.merges_at(layer):
            return torch.zeros_like(m.score, dtype=torch.bool)
        want = m.mergeable & (m.score > self.thresholds[layer])
        return _cap_mask(want, m.score, m.cap) if self.call == "per_image" else want


class BatchTopK(Policy):
    """Calibration: merge the B*r_i best edges of the whole batch in layer i.

    After a forward pass ``thresholds[i]`` holds tau_i, the best score in layer i that was NOT
    merged, clamped at 0 (None for a layer that did not run or has r = 0). As in the paper and
    the reference's batch path, every real edge is ranked (no per-image cap), r_i is capped by
    the longest sequence, (longest - protected) // 2, and tokens are laid out as on the batch
    path. When every edge of the batch merges (no class token, no padding, r_i at the cap) the
    reference takes the last merged edge as tau, and so does this. Running DToMe with these
    thresholds and ``call="batched"`` on the same batch merges the same edges (ties aside).
    """

    def __init__(self, r_per_layer: Sequence[int], merge_order: str = DEFAULT_MERGE_ORDER):
        self.r_per_layer = _check_r(r_per_layer, "BatchTopK")
        self.num_layers = len(self.r_per_layer)
        self.layout = batch_layout(merge_order)
        self.thresholds: list[float | None] = [None] * self.num_layers

    def reset(self) -> None:
        """Forget the thresholds of the previous batch."""
        self.thresholds = [None] * self.num_layers

    def merges_at(self, layer: int) -> bool:
        self._layer_check(layer)
        return self.r_per_layer[layer] > 0

    def __call__(self, layer: int, m: Matching) -> torch.Tensor:
        self._layer_check(layer)
        # The reference caps r by the padded length, (longest - protected) // 2, then ranks every real edge.
        r = min(self.r_per_layer[layer], int(m.cap.max()) if m.cap.numel() else 0)
        eligible = m.mergeable
        flat = m.score.masked_fill(~eligible, float("-inf")).flatten()
        k = min(r * m.score.shape[0], int(eligible.sum()))
        ranked, order = torch.sort(flat, descending=True, stable=True)
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[order[:k]] = True
        if len(ranked):
            self.thresholds[layer] = max(float(ranked[min(k, len(ranked) - 1)]), 0.0)  # -inf (none left) -> 0
        else:
            self.thresholds[layer] = 0.0
        return chosen.view_as(m.score)
