"""Fixed-budget selections after the encoder: random subsets, grid pooling and VisionZip.

Counts are what the settings predict; random repeats with its seed; bad settings are refused
naming the argument; VisionZip keeps exactly the tokens the attention ranks highest (checked on
a hand-built case and against the attention weights Hugging Face's eager CLIP and SigLIP return).
"""
from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionModel, SiglipVisionModel

from dymu_eval.errors import ConfigError
from dymu_eval.merge import TokenState
from dymu_eval.merge.select import (
    GridPool,
    RandomKeep,
    SelectionInput,
    VisionZip,
    pool_groups,
    random_subset,
    resolve_keep,
    visionzip_groups,
)
from dymu_eval.vision import VisionRunner
from tests.helpers.numerics import SMALL_OPS, assert_rounding_close, forward_ops

GRID = (8, 8)  # the tiny towers: 64 px, patch 8


def _state(x: torch.Tensor) -> TokenState:
    return TokenState.initial(x)


# ----------------------------------------------------------------------------------- random
def test_random_subset_repeats_with_its_seed_and_changes_with_another():
    a = random_subset(576, 64, seed=0, image_id=7)
    assert torch.equal(a, random_subset(576, 64, seed=0, image_id=7))
    assert not torch.equal(a, random_subset(576, 64, seed=1, image_id=7))
    assert not torch.equal(a, random_subset(576, 64, seed=0, image_id=8))  # another image, another subset
    assert a.numel() == 64 and a.unique().numel() == 64 and bool((a[1:] > a[:-1]).all())


def test_keep_is_a_count_or_a_fraction():
    assert resolve_keep(64, 576) == 64
    assert resolve_keep(0.25, 576) == 144
    assert resolve_keep(1.0, 576) == 576
    assert resolve_keep(128.0, 576) == 128  # a whole float above 1 is a count
    assert resolve_keep(0.0001, 576) == 1
    with pytest.raises(ConfigError, match=r"keep=577 is more than the 576"):
        resolve_keep(577, 576)
    for bad in (0, -3, 1.5, True, "64"):
        with pytest.raises(ConfigError, match="keep="):
            resolve_keep(bad, 576)


def test_random_keep_on_a_batch_keeps_k_patches_at_their_places_and_cls():
    torch.manual_seed(0)
    x = torch.randn(3, 65, 4)
    out = RandomKeep(16, seed=5)(_state(x), SelectionInput(True, GRID, image_ids=[1, 2, 1]))
    assert out.counts.tolist() == [17, 17, 17]  # CLS + k
    for b in range(3):
        p2t = out.patch_to_token[b]
        assert p2t[0] == 0 and torch.equal(out.x[b, 0], x[b, 0])
        kept = (p2t[1:] >= 0).nonzero()[:, 0] + 1
        assert kept.numel() == 16 and torch.equal(out.x[b, p2t[kept]], x[b, kept])
        assert bool((p2t[kept][1:] > p2t[kept][:-1]).all())  # rows in patch order
    assert torch.equal(out.patch_to_token[0], out.patch_to_token[2])  # same image id, same subset
    assert not torch.equal(out.patch_to_token[0], out.patch_to_token[1])
    with pytest.raises(ConfigError, match="keep=65 is more than the 64"):
        RandomKeep(65)(_state(x), SelectionInput(True, GRID, image_ids=[0, 0, 0]))


# ----------------------------------------------------------------------------------- pool
def test_pool_averages_each_block_of_patches():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 3, dtype=torch.float64)  # no CLS (SigLIP-like)
    out = GridPool(2)(_state(x), SelectionInput(False, GRID))
    assert out.counts.tolist() == [16, 16] and bool((out.sizes == 4).all())
    grid = x.view(2, 4, 2, 4, 2, 3)  # (B, row-cell, dy, col-cell, dx, D)
    want = grid.mean(dim=(2, 4)).reshape(2, 16, 3)
    assert_rounding_close(out.x, want, SMALL_OPS)
    assert out.patch_to_token[0, :10].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 0, 0]
    assert pool_groups(24, 24, 2).unique().numel() == 144  # LLaVA-1.5: 576 -> 144


def test_pool_factor_that_does_not_divide_the_grid_is_refused():
    with pytest.raises(ConfigError, match=r"pool_factor=3 does not divide the 8x8 patch grid"):
        GridPool(3)(_state(torch.randn(1, 65, 3)), SelectionInput(True, GRID))
    with pytest.raises(ConfigError, match="pool_factor=0"):
        GridPool(0)


# ----------------------------------------------------------------------------------- VisionZip
def test_visionzip_keeps_the_top_attended_tokens_and_merges_the_rest_by_hand():
    # 1 CLS + 9 patches; dominant=4 -> CLS + the 3 patches the CLS attends to most
    x = torch.arange(10, dtype=torch.float64)[:, None].repeat(1, 2) * torch.tensor([1.0, 10.0], dtype=torch.float64)
    importance = torch.tensor([9.0, 0.1, 0.9, 0.2, 0.8, 0.3, 0.05, 0.7, 0.0, 0.4])  # CLS entry ignored
    # keys: rest tokens are 1,3,5,6,8,9 (original order); targets at stride 6//2 = 3 -> rest[0]=1, rest[3]=6
    keys = torch.zeros(10, 2)
    keys[[1, 3, 9], 0] = 1.0  # 3 and 9 look like target 1
    keys[[6, 5, 8], 1] = 1.0  # 5 and 8 look like target 6
    g = visionzip_groups(x, keys, importance, dominant=4, contextual=2, forced=1)
    dominant = [0, 2, 4, 7]
    assert g.rows.shape[0] == 6
    assert torch.equal(g.rows[:4], x[dominant])  # copies
    assert_rounding_close(g.rows[4], x[1] + (x[3] + x[9]) / 2, SMALL_OPS)
    assert_rounding_close(g.rows[5], x[6] + (x[5] + x[8]) / 2, SMALL_OPS)
    assert g.groups.tolist() == [0, 4, 1, 4, 2, 5, 5, 3, 5, 4]
    assert g.sizes.tolist() == [1, 1, 1, 1, 3, 3]


def test_visionzip_without_cls_ranks_every_token():
    x = torch.randn(6, 2)
    importance = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.0, 0.3])
    g = visionzip_groups(x, torch.randn(6, 2), importance, dominant=2, contextual=1)
    assert torch.equal(g.rows[:2], x[[1, 3]])  # copies
    assert g.groups[[1, 3]].tolist() == [0, 1] and set(g.groups[[0, 2, 4, 5]].tolist()) == {2}


def test_visionzip_settings_that_exceed_the_tokens_are_refused():
    sel = VisionZip(60, 10)
    with pytest.raises(ConfigError, match=r"dominant=60 \+ contextual=10 is more than the 65 tokens"):
        sel(_state(torch.randn(1, 65, 3)), SelectionInput(True, GRID, torch.randn(1, 65, 2), torch.rand(1, 65)))
    with pytest.raises(ConfigError, match="contextual=0"):
        VisionZip(54, 0)


@pytest.mark.parametrize("fam", ["clip", "siglip"])
def test_visionzip_in_the_runner_matches_the_models_own_attention(fam, tiny_dirs, tiny_models64, pixels):
    """The dominant tokens are the top-ranked by the attention the eager HF model returns at the
    last layer run: CLS row summed over heads (CLIP), mean received attention (SigLIP). Their rows
    are the SDPA model's hidden states (eager attention takes its softmax in fp32 even in float64)."""
    model_cls = {"clip": CLIPVisionModel, "siglip": SiglipVisionModel}[fam]
    model = model_cls.from_pretrained(tiny_dirs[fam], dtype=torch.float64, attn_implementation="eager").eval()
    layers = 3  # a LLaVA-style read of layer -2
    runner = VisionRunner.from_model(model, layers_run=layers)
    has_cls = runner.has_cls
    dominant, contextual = (10, 4) if has_cls else (9, 4)
    out = runner(pixels, selector=VisionZip(dominant, contextual))
    with torch.no_grad():
        attn = model(pixel_values=pixels, output_attentions=True).attentions[layers - 1]  # (B, H, T, T)
        hidden = tiny_models64[fam](pixel_values=pixels, output_hidden_states=True).hidden_states[layers]
    assert [out.num_tokens(b) for b in range(pixels.shape[0])] == [dominant + contextual] * pixels.shape[0]
    assert (out.counts == 65 - int(not has_cls)).all()  # the blocks ran unreduced
    assert out.cls_row is has_cls
    for b in range(pixels.shape[0]):
        if has_cls:
            score = attn[b, :, 0, 1:].sum(0)
            want = (score.topk(dominant - 1).indices + 1).sort().values
            want = torch.cat([torch.zeros(1, dtype=torch.long), want])
        else:
            score = attn[b].mean(dim=(0, 1))
            want = score.topk(dominant).indices.sort().values
        p2t = out.patch_to_token[b]
        rows_of_dominant = p2t[want]
        assert rows_of_dominant.tolist() == list(range(dominant))
        assert_rounding_close(out.tokens[b, :dominant], hidden[b, want], forward_ops(model.config, 65))
        assert bool((p2t >= 0).all()) and int((p2t >= dominant).sum()) == p2t.numel() - dominant


def test_selection_batched_equals_one_by_one(tiny_models64, pixels):
    runner = VisionRunner.from_model(tiny_models64["clip"], layers_run=3)
    for sel in (RandomKeep(0.25, seed=3), GridPool(2), VisionZip(10, 4)):
        batch = runner(pixels, selector=sel)
        for b in range(pixels.shape[0]):
            one = runner(pixels[b:b + 1], selector=sel)
            n = one.num_tokens(0)
            assert batch.num_tokens(b) == n
            assert_rounding_close(batch.tokens[b, :n], one.tokens[0, :n], forward_ops(tiny_models64['clip'].config, 65))
            assert torch.equal(batch.patch_to_token[b], one.patch_to_token[0])
    for sel, n in ((RandomKeep(16), 17), (GridPool(2), 17), (GridPool(4), 5)):  # CLS + the selected rows
        out = runner(pixels, selector=sel)
        assert out.valid.sum(1).tolist() == [n] * 3 and out.tokens.shape[1] == n


def test_runner_checks_a_selector_against_its_grid(tiny_models):
    runner = VisionRunner.from_model(tiny_models["clip"])
    with pytest.raises(ConfigError, match="pool_factor=3"):
        runner.check_selector(GridPool(3))
    with pytest.raises(ConfigError, match="keep=100"):
        runner.check_selector(RandomKeep(100))
    runner.check_selector(VisionZip(54, 10))  # 64 of 65 tokens (CLS + 64 patches)
    with pytest.raises(ConfigError, match="dominant=54"):
        runner.check_selector(VisionZip(54, 12))


def test_random_subset_does_not_depend_on_the_towers_dtype(tiny_dirs, pixels):
    """The subset is seeded by the processor's pixels, not by what the tower casts them to."""
    maps = []
    for dtype in (torch.float32, torch.bfloat16):
        model = CLIPVisionModel.from_pretrained(tiny_dirs["clip"], dtype=dtype).eval()
        maps.append(VisionRunner.from_model(model)(pixels, selector=RandomKeep(16, seed=4)).patch_to_token)
    assert torch.equal(maps[0], maps[1])
