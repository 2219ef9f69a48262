"""Pure-tensor properties of matching, selection policies and size-weighted merging."""
from __future__ import annotations

import pytest
import torch

from dymu_eval.errors import ConfigError
from dymu_eval.merge import (
    BatchTopK,
    NoMerge,
    Threshold,
    TokenState,
    TopR,
    apply_merges,
    bipartite_scores,
)
from tests.helpers.numerics import SMALL_OPS, assert_rounding_close


def _merge_rounds(x, policy, rounds, protect_first=True, valid=None):
    """Merge a fixed token set repeatedly (no transformer in between)."""
    state = TokenState.initial(x)
    if valid is not None:
        state = TokenState(x, valid, state.sizes, state.first, state.patch_to_token, trivial=False)
    for layer in range(rounds):
        m = bipartite_scores(state.x, state.valid, protect_first)
        state = apply_merges(state, m, policy(layer, m), policy.layout)
    return state


def test_matching_protects_cls_and_ignores_padding():
    x = torch.randn(2, 9, 5)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 6:] = False
    m = bipartite_scores(x, valid, protect_first=True)
    assert torch.equal(m.a_idx[0], torch.tensor([0, 2, 4, 6, 8]))
    assert torch.equal(m.b_idx[0], torch.tensor([1, 3, 5, 7]))
    assert torch.isinf(m.score[:, 0]).all()  # CLS never a source; it is never in B either
    assert torch.isinf(m.score[1, 3:]).all()  # padded A tokens (positions 6, 8)
    assert (m.b_idx.gather(1, m.partner)[1, :3] < 6).all()  # partners are real tokens
    assert m.cap.tolist() == [(9 - 1) // 2, (6 - 1) // 2]
    assert bipartite_scores(x, valid, protect_first=False).cap.tolist() == [4, 3]


@pytest.mark.parametrize("order", ["reference", "position"])
def test_size_weighted_mean_and_index_map_over_rounds(order):
    torch.manual_seed(0)
    x0 = torch.randn(2, 17, 6, dtype=torch.float64)
    state = _merge_rounds(x0, TopR([3, 3, 3, 3], merge_order=order), 4)
    for b in range(2):
        n = int(state.valid[b].sum())
        p2t = state.patch_to_token[b]
        assert n == 17 - 12
        sizes = torch.bincount(p2t, minlength=n).to(x0.dtype)
        assert torch.equal(state.sizes[b, :n], sizes)  # sizes add up
        mean = torch.zeros(n, 6, dtype=x0.dtype).index_add_(0, p2t, x0[b]) / sizes[:, None]
        assert_rounding_close(state.x[b, :n], mean, SMALL_OPS)  # every token = mean of its patches (float64)
        firsts = torch.full((n,), 99).scatter_reduce(0, p2t, torch.arange(17), "amin")
        assert torch.equal(firsts, state.first[b, :n])
        if order == "position":
            assert (firsts.diff() > 0).all()  # ordered by smallest member
        assert p2t[0] == 0 and (p2t[1:] != 0).all()  # CLS alone in token 0


def test_topr_removes_exactly_r_and_respects_cap():
    x = torch.randn(3, 21, 4)
    state = TokenState.initial(x)
    m = bipartite_scores(x, state.valid, True)
    assert TopR([7]).__call__(0, m).sum(1).tolist() == [7, 7, 7]
    assert TopR([50])(0, m).sum(1).tolist() == [10, 10, 10]  # cap (21-1)//2
    assert not TopR([50])(0, m)[:, 0].any()
    assert NoMerge()(0, m).sum() == 0
    assert _merge_rounds(x, TopR([50] * 3), 3).counts.tolist() == [21 - 10 - 5 - 2] * 3


def test_threshold_is_strict_and_gated():
    torch.manual_seed(1)
    x = torch.randn(1, 11, 4)
    m = bipartite_scores(x, torch.ones(1, 11, dtype=torch.bool), True)
    s = m.score[0, 1:].sort(descending=True).values
    tau = float(s[2])
    mask = Threshold([tau])(0, m)
    assert mask.sum() == 2  # the edge equal to tau is not merged
    assert (m.score[mask] > tau).all()
    assert Threshold([tau], r_per_layer=[0])(0, m).sum() == 0  # r=0 gate
    assert Threshold([-2.0])(0, m).sum() == int(m.cap)  # everything wanted, cap wins


def test_batch_topk_counts_and_tau():
    torch.manual_seed(2)
    x = torch.randn(4, 15, 3)
    m = bipartite_scores(x, torch.ones(4, 15, dtype=torch.bool), True)
    pol = BatchTopK([5])
    mask = pol(0, m)
    assert mask.sum() == 4 * 5
    tau = pol.thresholds[0]
    unmerged = m.score[~mask & m.mergeable]
    assert tau == pytest.approx(max(float(unmerged.max()), 0.0))
    assert (m.score[mask] >= unmerged.max()).all()
    replay = Threshold([tau])(0, m)
    assert torch.equal(replay, mask)


def test_batch_topk_clamps_tau_at_zero():
    x = torch.randn(2, 9, 3)
    m = bipartite_scores(x, torch.ones(2, 9, dtype=torch.bool), True)
    m.score = torch.where(m.mergeable, -0.5 - torch.rand_like(m.score), m.score)
    pol = BatchTopK([1])
    pol(0, m)
    assert pol.thresholds[0] == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: TopR([2, -1]),
        lambda: TopR([1.5]),
        lambda: BatchTopK([-3]),
        lambda: Threshold([0.9, 0.8], r_per_layer=[1]),
        lambda: Threshold([float("nan")]),
        lambda: Threshold([]),
        lambda: Threshold(["high"]),
    ],
)
def test_bad_policy_arguments(make):
    with pytest.raises(ConfigError):
        make()


def test_policy_layer_out_of_range():
    x = torch.randn(1, 5, 3)
    m = bipartite_scores(x, torch.ones(1, 5, dtype=torch.bool), True)
    with pytest.raises(ConfigError, match="2 layers"):
        TopR([1, 1])(2, m)


def test_threshold_none_means_the_layer_never_merges():
    x = torch.randn(2, 9, 3)
    m = bipartite_scores(x, torch.ones(2, 9, dtype=torch.bool), True)
    pol = Threshold([None, -2.0])
    assert not pol.merges_at(0) and pol(0, m).sum() == 0
    assert pol(1, m).sum() == 2 * 4


def test_merge_package_does_not_import_transformers():
    import subprocess
    import sys

    code = "import sys, dymu_eval.merge; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"



def _dense_merge_values(state, m, mask):
    """The size-weighted means by a dense scatter over every A token (0 weight where A did not merge),
    in fp32 at the current positions, cast back: what the sparse write in ``apply_merges`` must give."""
    x, sizes = state.x.float(), state.sizes.float()
    d = x.shape[-1]
    dst = m.b_idx.gather(1, m.partner)
    w = torch.where(mask, sizes.gather(1, m.a_idx), torch.zeros_like(sizes.gather(1, m.a_idx)))
    a_x = x.gather(1, m.a_idx.unsqueeze(-1).expand(-1, -1, d))
    recv_sum = torch.zeros_like(x).scatter_add_(1, dst.unsqueeze(-1).expand(-1, -1, d), a_x * w.unsqueeze(-1))
    recv_size = torch.zeros_like(sizes).scatter_add_(1, dst, w)
    merged = (x * sizes.unsqueeze(-1) + recv_sum) / (sizes + recv_size).unsqueeze(-1)
    received = torch.zeros_like(state.first).scatter_add_(1, dst, mask.long()) > 0
    return torch.where(received.unsqueeze(-1), merged.to(state.x.dtype), state.x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_merge_write_equals_the_dense_scatter_bit_for_bit(dtype):
    """Uneven merges (padding after the first round, an image idle in a layer) in float32 and
    bfloat16: every kept token equals the dense formula's value at its old position exactly."""
    torch.manual_seed(3)
    state = TokenState.initial(torch.randn(3, 41, 8).to(dtype))
    policy = TopR([6, 6, 6])
    merged_somewhere = 0
    for layer in range(3):
        m = bipartite_scores(state.x, state.valid, protect_first=True)
        mask = policy(layer, m) & (torch.rand(m.score.shape) > 0.4)
        if layer == 1:
            mask[1] = False
        merged_somewhere += int(mask.sum())
        expected = _dense_merge_values(state, m, mask)
        new = apply_merges(state, m, mask, policy.layout)
        for b in range(3):
            n = int(new.valid[b].sum())
            sources = m.a_idx[b][mask[b]]
            # the one old token behind each new token that was not merged away
            stays = ~torch.isin(state.patch_to_token[b], sources)
            old_of_new = torch.full((n,), -1).scatter_(0, new.patch_to_token[b][stays], state.patch_to_token[b][stays])
            assert (old_of_new >= 0).all()
            assert torch.equal(new.x[b, :n], expected[b, old_of_new])
        state = new
    assert merged_somewhere > 10
