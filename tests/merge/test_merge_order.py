"""The token order after a merge, on hand-made multi-layer cases where the reference order
(facebookresearch/ToMe ``tome/merge.py``, DyMU ``src/open_clip/tome.py``) and position order
pair up different tokens. Every expected group below is derived by hand in the comments.

The tokens are unit vectors with chosen cosines, run through a "transparent" tower whose
blocks add nothing (zero output projection and MLP, identity keys), so the similarity each
layer sees is exactly the cosine of the hand-made vectors and the run goes through the
encoder block code (vision.block.run_block) as a real tower does.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dymu_eval.merge import BatchTopK, Threshold, TokenState, TopR
from dymu_eval.vision.block import run_block
from dymu_eval.vision.family import LayerParts
from tests.helpers.numerics import SMALL_OPS, assert_rounding_close, tolerance

DIM = 8


def vec(**parts: float) -> torch.Tensor:
    """A vector from components on the orthonormal basis e0..e7, e.g. vec(e1=0.6, e2=0.8)."""
    v = torch.zeros(DIM, dtype=torch.float64)
    for name, value in parts.items():
        v[int(name[1:])] = value
    assert math.isclose(float(v.norm()), 1.0, abs_tol=1e-12)
    return v


def _zero_linear() -> nn.Linear:
    lin = nn.Linear(DIM, DIM).double()
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def transparent_parts() -> LayerParts:
    """One block that leaves x unchanged and whose (single-head) keys are x itself."""
    ident = nn.Identity()
    return LayerParts(ln1=ident, q=ident, k=ident, v=ident, o=_zero_linear(), ln2=ident, mlp=_zero_linear(),
                      num_heads=1, head_dim=DIM, scale=1.0)


def run_tower(images: list[list[torch.Tensor]], policy, layers: int, has_cls: bool):
    """(groups per image in final token order, counts per image per layer) after ``layers`` blocks."""
    x = torch.stack([torch.stack(img) for img in images])
    state = TokenState.initial(x)
    counts = [state.counts.tolist()]
    parts = transparent_parts()
    for layer in range(layers):
        with torch.no_grad():
            state = run_block(parts, state, layer, policy, has_cls)
        counts.append(state.counts.tolist())
    groups = []
    for b in range(x.shape[0]):
        n = int(state.valid[b].sum())
        p2t = state.patch_to_token[b]
        groups.append([tuple(torch.nonzero(p2t == t).flatten().tolist()) for t in range(n)])
        x_mean = torch.zeros(n, DIM, dtype=x.dtype).index_add_(0, p2t, x[b])
        x_mean /= torch.bincount(p2t, minlength=n).to(x.dtype)[:, None]
        assert_rounding_close(state.x[b, :n], x_mean, SMALL_OPS)  # size-weighted means, summed in float64
    return groups, [list(c) for c in zip(*counts)]


# ---------------------------------------------------------------------------------------------
# Without a class token: six tokens t0..t5.
#   t1 = t4 = e1 (identical), t3 = e2, t2 = 0.85 e2 + .. e3, t0 = 0.99.. e4 + 0.141 e2, t5 = 0.8 e4 + 0.6 e5
#   cosines: t4.t1 = 1, t2.t3 = 0.85, t0.t5 = 0.792, t0.t3 = 0.141, t0.t2 = 0.12, every other pair 0.
# Layer 1 splits A = {t0, t2, t4}, B = {t1, t3, t5}; best edges: t4->t1 1.0, t2->t3 0.85, t0->t5 0.792.
# The one merge of layer 1 (ToMe r=1, or DToMe tau=0.9) is t4->t1 = X = {1,4}. Then:
#   reference, instance path: unmerged A by descending score (t2 0.85, t0 0.792), then B -> [t2, t0, X, t3, t5]
#   reference, batch path:    unmerged A in current order                           -> [t0, t2, X, t3, t5]
#   position order:           by first member                                       -> [t0, X, t2, t3, t5]
def no_cls_image() -> list[torch.Tensor]:
    s = math.sqrt(1 - 0.85**2)
    t0 = vec(e4=math.sqrt(1 - 0.141**2), e2=0.141)
    return [t0, vec(e1=1.0), vec(e2=0.85, e3=s), vec(e2=1.0), vec(e1=1.0), vec(e4=0.8, e5=0.6)]


def test_hand_made_cosines_are_the_ones_the_derivations_use():
    t = no_cls_image()
    cos = {(i, j): round(float(t[i] @ t[j]), 3) for i in range(6) for j in range(i + 1, 6)}
    assert cos[(1, 4)] == 1.0 and cos[(2, 3)] == 0.85 and cos[(0, 5)] == 0.792 and cos[(0, 3)] == 0.141
    assert cos[(0, 2)] == 0.12
    assert all(v == 0.0 for k, v in cos.items() if k not in {(1, 4), (2, 3), (0, 5), (0, 3), (0, 2)})


@pytest.mark.parametrize("order, groups", [
    # Layer 2 on [t2, t0, X, t3, t5]: A = {t2, X, t5}, B = {t0, t3}; edges t2->t3 0.85, t5->t0 0.792, X 0.
    # r=2 merges t2->t3 and t5->t0: [X, then B: {0,5}, {2,3}].
    ("reference", [(1, 4), (0, 5), (2, 3)]),
    # Layer 2 on [t0, X, t2, t3, t5]: A = {t0, t2, t5}, B = {X, t3}; edges t2->t3 0.85, t0->t3 0.141, t5 0.
    # r=2 merges t2->t3 and t0->t3; sorted by first member.
    ("position", [(0, 2, 3), (1, 4), (5,)]),
])
def test_tome_without_cls(order, groups):
    got, counts = run_tower([no_cls_image()], TopR([1, 2], merge_order=order), 2, has_cls=False)
    assert got == [groups]
    assert counts == [[6, 5, 3]]


@pytest.mark.parametrize("order, call, groups, counts", [
    # Instance path (LLaVA-1.5, one image per call). Layer 2 on [t2, t0, X, t3, t5]: t2->t3 0.85 and t5->t0
    # 0.792 pass tau 0.5 -> [X, {0,5}, {2,3}]. Layer 3 (tau 0.99) merges nothing: the order is kept.
    ("reference", "per_image", [(1, 4), (0, 5), (2, 3)], [6, 5, 3, 3]),
    # Batch path (OneVision, all crops in one call). Layer 2 on [t0, t2, X, t3, t5]: A = {t0, X, t5},
    # B = {t2, t3}; best edges t0->t3 0.141, X 0, t5 0: nothing passes 0.5, yet the image is re-laid as
    # [t0, X, t5, t2, t3]. Layer 3 merges nothing and re-lays again: A = {t0, t5, t3}, B = {X, t2}.
    ("reference", "batched", [(0,), (5,), (3,), (1, 4), (2,)], [6, 5, 5, 5]),
    # Position order. Layer 2 on [t0, X, t2, t3, t5]: only t2->t3 0.85 passes 0.5.
    ("position", "per_image", [(0,), (1, 4), (2, 3), (5,)], [6, 5, 4, 4]),
    ("position", "batched", [(0,), (1, 4), (2, 3), (5,)], [6, 5, 4, 4]),
])
def test_dtome_without_cls(order, call, groups, counts):
    policy = Threshold([0.9, 0.5, 0.99], merge_order=order, call=call)
    got, got_counts = run_tower([no_cls_image()], policy, 3, has_cls=False)
    assert got == [groups]
    assert got_counts == [counts]
    # Batch-invariant: beside an image that merges a lot (six copies of one token), the same result.
    busy = [vec(e6=1.0)] * 6
    together, together_counts = run_tower([busy, no_cls_image()], policy, 3, has_cls=False)
    assert together[1] == groups and together_counts[1] == counts
    assert together_counts[0][-1] < 6


# ---------------------------------------------------------------------------------------------
# With a class token: c = e6, then p1..p6.
#   p1 = e1, p4 = 0.6 e1 + 0.8 e2, p6 = 0.8 e1 + 0.6 e3, p3 = e4, p2 = p5 = e5
#   cosines: p2.p5 = 1, p6.p1 = 0.8, p4.p1 = 0.6, p6.p4 = 0.48, every other pair 0 (CLS never merges).
# Layer 1: A = {c, p2, p4, p6}, B = {p1, p3, p5}; best edges p2->p5 1.0, p6->p1 0.8, p4->p1 0.6.
# The one merge of layer 1 (ToMe r=1, or DToMe tau=0.9) is p2->p5 = Y = {2,5}. Then:
#   reference: [CLS, unmerged A in current order, B] -> [c, p4, p6, p1, p3, Y]
#   position:                                        -> [c, p1, Y, p3, p4, p6]
# Layer 2 (ToMe r=1, or DToMe tau=0.5):
#   reference: A = {c, p6, p3}, B = {p4, p1, Y}: p6->p1 0.8 merges -> [c, p3, p4, {1,6}, Y]
#   position:  A = {c, Y, p4}, B = {p1, p3, p6}: p4->p1 0.6 merges (p6 and p1 are both B) -> [c, {1,4}, Y, p3, p6]
def cls_image() -> list[torch.Tensor]:
    return [vec(e6=1.0), vec(e1=1.0), vec(e5=1.0), vec(e4=1.0), vec(e1=0.6, e2=0.8), vec(e5=1.0),
            vec(e1=0.8, e3=0.6)]


@pytest.mark.parametrize("order, groups", [
    ("reference", [(0,), (3,), (4,), (1, 6), (2, 5)]),
    ("position", [(0,), (1, 4), (2, 5), (3,), (6,)]),
])
def test_tome_with_cls(order, groups):
    got, counts = run_tower([cls_image()], TopR([1, 1], merge_order=order), 2, has_cls=True)
    assert got == [groups]
    assert counts == [[7, 6, 5]]


@pytest.mark.parametrize("order, call, groups", [
    # Layer 3 (tau 0.99) merges nothing. Instance path: the order is kept.
    ("reference", "per_image", [(0,), (3,), (4,), (1, 6), (2, 5)]),
    # Batch path: re-laid all the same: A = {c, p4, Y}, B = {p3, {1,6}} -> [c, p4, Y, p3, {1,6}].
    ("reference", "batched", [(0,), (4,), (2, 5), (3,), (1, 6)]),
    ("position", "per_image", [(0,), (1, 4), (2, 5), (3,), (6,)]),
    ("position", "batched", [(0,), (1, 4), (2, 5), (3,), (6,)]),
])
def test_dtome_with_cls(order, call, groups):
    policy = Threshold([0.9, 0.5, 0.99], merge_order=order, call=call)
    got, counts = run_tower([cls_image()], policy, 3, has_cls=True)
    assert got == [groups]
    assert counts == [[7, 6, 5, 5]]


def test_calibration_lays_out_as_the_batch_path():
    """Calibration (BatchTopK) follows the batch path: with r = 1 per image in layer 1 and the
    batch of one image, it merges p2->p5 then p6->p1 as the reference DToMe batch path does."""
    got, counts = run_tower([cls_image()], BatchTopK([1, 1, 0]), 3, has_cls=True)
    assert got == [[(0,), (3,), (4,), (1, 6), (2, 5)]] and counts == [[7, 6, 5, 5]]


# ---------------------------------------------------------------------------------------------
# Calibration without a class token and an odd token count: N = 5 (A = 3 tokens, B = 2), B = 2
# images, r = 2. Every A token's best partner is b1 = e1 with cosine c (a = c e1 + .. e3):
#   image 0: 0.9, 0.8, 0.7   image 1: 0.95, 0.6, 0.5
# The paper and the reference rank all 6 real edges and merge the top B*r = 4
# (0.95, 0.9, 0.8, 0.7): tau = the 5th best, 0.6. Image 0 merges all three A tokens (5 -> 2),
# more than the instance path's cap (5 // 2 = 2); image 1 merges one (5 -> 4).
def _odd_image(cosines: list[float]) -> list[torch.Tensor]:
    a = [vec(e1=c, e3=math.sqrt(1 - c * c)) for c in cosines]
    return [a[0], vec(e1=1.0), a[1], vec(e2=1.0), a[2]]


def test_calibration_odd_count_without_cls_ranks_all_real_edges():
    images = [_odd_image([0.9, 0.8, 0.7]), _odd_image([0.95, 0.6, 0.5])]
    policy = BatchTopK([2])
    got, counts = run_tower(images, policy, 1, has_cls=False)
    assert policy.thresholds[0] == pytest.approx(0.6, rel=0, abs=tolerance(torch.float64, 1.0, SMALL_OPS))
    assert counts == [[5, 2], [5, 4]]
    # batch path: [unmerged A, all B]; b2 = token 3 received nothing
    assert got[0] == [(0, 1, 2, 4), (3,)]
    assert got[1] == [(2,), (4,), (0, 1), (3,)]
    # DToMe with that tau: the batch path has no per-image cap (3 merges), the instance path caps at 2.
    tau = policy.thresholds
    batched, batched_counts = run_tower(images, Threshold(tau, call="batched"), 1, has_cls=False)
    assert batched == got and batched_counts == counts
    _, capped = run_tower(images, Threshold(tau, call="per_image"), 1, has_cls=False)
    assert capped == [[5, 3], [5, 4]]


# ---------------------------------------------------------------------------------------------
# On real (tiny, random) towers: from the second merging layer on the two orders pair up other
# tokens, so the groups differ while ToMe's counts do not; a DToMe policy carries its order.
@pytest.mark.parametrize("fam", ["clip", "siglip"])
def test_real_towers_merge_other_groups_under_the_two_orders(fam, tiny_models, pixels):
    from dymu_eval.vision import VisionRunner

    runner = VisionRunner.from_model(tiny_models[fam])
    ref = runner(pixels, TopR([5] * 4))
    pos = runner(pixels, TopR([5] * 4, merge_order="position"))
    assert torch.equal(ref.counts, pos.counts)

    def partition(out, b):
        p2t = out.patch_to_token[b]
        return {tuple(torch.nonzero(p2t == t).flatten().tolist()) for t in range(out.num_tokens(b))}

    assert any(partition(ref, b) != partition(pos, b) for b in range(pixels.shape[0]))
    one = runner(pixels, TopR([5, 0, 0, 0]))
    one_pos = runner(pixels, TopR([5, 0, 0, 0], merge_order="position"))
    assert all(partition(one, b) == partition(one_pos, b) for b in range(pixels.shape[0]))  # one layer: same merges
