"""The order a merging layer leaves its tokens in. The next layer splits A/B alternately on
that order, so it decides which tokens can pair up, and thresholds are tuned to it.

The names (``vocabulary.MERGE_ORDERS``, ``vocabulary.ENCODER_CALLS``):

``reference`` (the default) is what the official codes do (facebookresearch/ToMe
``tome/merge.py``; DyMU ``src/open_clip/tome.py`` and its CLIP / SigLIP towers): a merging
layer outputs [unmerged A, then all B in current order]; nothing is re-sorted by original
position.

* With a class token (CLIP): [CLS, unmerged A in current relative order, all B].
* Without one, the order of the unmerged A depends on the reference's code path:
  - the instance path (ToMe always; DToMe when an image is encoded alone, as LLaVA-1.5 does):
    descending best A->B score (ties: lower current index first);
  - the batch path (calibration; DToMe over all crops or frames of a request in one call, as
    LLaVA-OneVision does): current relative order.
* An image that merges nothing in a layer keeps its order on the instance path; on the batch
  path it is re-laid all the same at a layer whose schedule gives r > 0.
* The instance path caps merges at (n - protected) // 2 per image; the batch path has no
  per-image cap (it can only bind without a class token and with an odd token count).

``position`` re-sorts the tokens by the original position of their first member after every
merge. It is an explicit option only: thresholds calibrated under one order do not give the
token counts they were tuned for under the other, so threshold files record the order.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..vocabulary import DEFAULT_MERGE_ORDER, check_merge_order


@dataclass(frozen=True)
class Layout:
    """How ``apply_merges`` lays out the tokens a merging layer keeps.

    order: ``reference`` or ``position``.
    by_score: unmerged A tokens in descending best-score order (only without a class token;
        with one the reference keeps them in current order).
    relay_idle: an image that merged nothing in a merging layer is re-laid too.
    """

    order: str = DEFAULT_MERGE_ORDER
    by_score: bool = False
    relay_idle: bool = False

    def __post_init__(self) -> None:
        check_merge_order(self.order)


def instance_layout(order: str) -> Layout:
    """The reference's instance path (``bipartite_soft_matching``)."""
    return Layout(order, by_score=True, relay_idle=False)


def batch_layout(order: str) -> Layout:
    """The reference's batch path (``batch_level_bipartite_soft_matching``)."""
    return Layout(order, by_score=False, relay_idle=True)
