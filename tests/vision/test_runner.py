"""VisionRunner on tiny random CLIP, SigLIP and DINOv2 towers (and a tiny LLaVA). Identities with the
unmodified tower are proven in float64, at its rounding bound (tests.helpers.numerics)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlavaForConditionalGeneration

from dymu_eval.errors import ConfigError
from dymu_eval.merge import BatchTopK, NoMerge, Threshold, TokenState, TopR
from dymu_eval.vision import VisionRunner
from dymu_eval.vision.block import attention, attention_bias
from tests.factories.towers import TOWER, random_pixels
from tests.helpers.numerics import SMALL_OPS, assert_rounding_close, forward_ops

FAMS = ["clip", "siglip", "dinov2"]
LAYERS = TOWER.layers  # the tiny towers of tests/conftest.py


def _hf_hidden(model, pixels):
    with torch.no_grad():
        return model(pixel_values=pixels, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("fam", FAMS)
def test_no_merging_reproduces_the_model(fam, tiny_models64, pixels):
    model = tiny_models64[fam]
    runner = VisionRunner.from_model(model)
    ref = _hf_hidden(model, pixels)
    for layers_run in (LAYERS, LAYERS - 1):  # full tower and a LLaVA-style read of layer -2
        for policy in (NoMerge(), TopR([0] * LAYERS), Threshold([1.5] * LAYERS)):
            out = runner(pixels, policy, layers_run=layers_run)
            assert out.valid.all() and out.tokens.shape == ref[layers_run].shape
            assert_rounding_close(out.tokens, ref[layers_run], forward_ops(model.config, out.tokens.shape[1]))
            assert (out.counts == ref[0].shape[1]).all()


def test_llava_tower_and_read_layer(tiny_llava_dir, pixels):
    llava = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float64).eval()
    runner = VisionRunner.from_model(llava)
    assert runner.family == "clip" and runner.default_layers_run == LAYERS - 1
    out = runner(pixels)
    ref = _hf_hidden(llava.model.vision_tower, pixels)[-2]
    assert_rounding_close(out.tokens, ref, forward_ops(llava.config.vision_config, ref.shape[1]))
    assert out.counts.shape == (3, LAYERS)


def test_proportional_attention_of_identical_tokens(tiny_models64):
    """Two identical tokens merged into one of size 2 leave every other attention output unchanged."""
    runner = VisionRunner.from_model(tiny_models64["clip"])
    parts = runner.adapter.layer(0)
    torch.manual_seed(0)
    x = torch.randn(1, 9, 32, dtype=torch.float64)
    x[0, 6] = x[0, 3]
    full = TokenState.initial(x)
    out_full, _ = attention(parts, parts.ln1(x), attention_bias(full, x.dtype))
    keep = [i for i in range(9) if i != 6]
    sizes = torch.ones(1, 8, dtype=x.dtype)
    sizes[0, 3] = 2.0
    merged = TokenState(x[:, keep], torch.ones(1, 8, dtype=torch.bool), sizes, torch.arange(8)[None],
                        torch.zeros(1, 9, dtype=torch.long), trivial=False)
    out_merged, _ = attention(parts, parts.ln1(merged.x), attention_bias(merged, x.dtype))
    assert_rounding_close(out_merged, out_full[:, keep], SMALL_OPS)
    # Without the log-size bias the outputs differ: the test can tell.
    out_plain, _ = attention(parts, parts.ln1(merged.x), None)
    assert (out_plain - out_full[:, keep]).abs().max() > 1e-4


@pytest.mark.parametrize("fam", FAMS)
def test_tome_removes_r_per_layer_and_never_cls(fam, tiny_models, pixels):
    runner = VisionRunner.from_model(tiny_models[fam])
    out = runner(pixels, TopR([5, 3, 0, 7]))
    n0 = out.counts[0, 0].item()
    assert out.counts.tolist() == [[n0, n0 - 5, n0 - 8, n0 - 8, n0 - 15]] * 3
    for b in range(3):
        toks, p2t = out.unique(b)
        n = len(toks)
        assert torch.equal(torch.bincount(p2t, minlength=n).float(), out.sizes[b, :n])
        if runner.has_cls:
            assert p2t[0] == 0 and (p2t[1:] != 0).all()
    big = runner(pixels, TopR([40] * LAYERS))
    protected = int(runner.has_cls)
    expected = [n0]
    for _ in range(LAYERS):
        expected.append(expected[-1] - (expected[-1] - protected) // 2)
    assert big.counts[0].tolist() == expected


def test_threshold_gate_r_zero_never_merges(tiny_models, pixels):
    runner = VisionRunner.from_model(tiny_models["clip"])
    out = runner(pixels, Threshold([-1.0] * LAYERS, r_per_layer=[2, 0, 2, 0]))
    c = out.counts
    assert (c[:, 1] < c[:, 0]).all() and torch.equal(c[:, 2], c[:, 1])
    assert (c[:, 3] < c[:, 2]).all() and torch.equal(c[:, 4], c[:, 3])


@pytest.mark.parametrize("order", ["reference", "position"])
@pytest.mark.parametrize("call", ["per_image", "batched"])
@pytest.mark.parametrize("fam", FAMS)
def test_batch_equals_one_by_one(fam, call, order, tiny_models64, pixels):
    runner = VisionRunner.from_model(tiny_models64[fam])
    calib = BatchTopK([6] * LAYERS, merge_order=order)
    # thresholds from other images: calibrated on these, an edge's score *is* a threshold, and which side
    # of it a recomputed score falls on is rounding (batched and one by one may round it differently)
    runner(random_pixels(seed=11), calib)
    policy = Threshold(calib.thresholds, [6] * LAYERS, merge_order=order, call=call)
    batch = runner(pixels, policy)
    assert len(set(batch.counts[:, -1].tolist())) > 1, "images should end with different token counts"
    for b in range(3):
        single = runner(pixels[b : b + 1], policy)
        assert torch.equal(single.counts[0], batch.counts[b])
        toks, p2t = batch.unique(b)
        s_toks, s_p2t = single.unique(0)
        assert torch.equal(p2t, s_p2t)
        assert_rounding_close(toks, s_toks, forward_ops(tiny_models64[fam].config, 65))
        n = len(toks)
        assert torch.equal(batch.sizes[b, :n], single.sizes[0, :n])


@pytest.mark.parametrize("fam", FAMS)
def test_calibration_replay_merges_b_times_r(fam, tiny_models, pixels):
    runner = VisionRunner.from_model(tiny_models[fam])
    r = [4, 6, 0, 5]
    calib = BatchTopK(r)
    found = runner(pixels, calib)
    removed = (found.counts[:, :-1] - found.counts[:, 1:]).sum(0)
    assert removed.tolist() == [3 * ri for ri in r]
    assert [t is None for t in calib.thresholds] == [ri == 0 for ri in r]
    assert all(t >= 0 for t in calib.thresholds if t is not None)
    replay = runner(pixels, Threshold(calib.thresholds, r, call="batched"))
    assert torch.equal(replay.counts, found.counts)
    assert torch.equal(replay.patch_to_token, found.patch_to_token)


def test_unsupported_model_and_bad_arguments(tiny_models, pixels):
    with pytest.raises(ConfigError, match="unsupported vision model Linear"):
        VisionRunner.from_model(nn.Linear(3, 3))
    runner = VisionRunner.from_model(tiny_models["clip"])
    with pytest.raises(ConfigError, match="2 layers"):
        runner(pixels, Threshold([0.9, 0.9]))
    with pytest.raises(ConfigError, match="layers_run"):
        runner(pixels, layers_run=LAYERS + 1)
    with pytest.raises(ConfigError, match="pixel_values"):
        runner(pixels[0])
    with pytest.raises(ConfigError):
        runner(pixels, TopR([1, -1, 1, 1]))


def test_half_precision_runs_and_counts_match(tiny_dirs, pixels):
    from transformers import CLIPVisionModel

    model = CLIPVisionModel.from_pretrained(tiny_dirs["clip"], dtype=torch.bfloat16).eval()
    out = VisionRunner.from_model(model)(pixels, TopR([5] * LAYERS))
    assert out.tokens.dtype == torch.bfloat16 and torch.isfinite(out.tokens.float()).all()
    assert out.counts[0].tolist() == [65, 60, 55, 50, 45]
    assert torch.equal(out.sizes[:, 1:45].float().sum(1), torch.full((3,), 64.0))


def test_received_attention_of_a_padded_image_equals_its_own_without_padding():
    """Without CLS a token's score is the mean over heads and the image's real queries: the padding
    rows a batch carries (queries as well as keys) leave it unchanged."""
    from dymu_eval.vision.block import received_attention

    torch.manual_seed(0)
    q, k = torch.randn(2, 2, 6, 8, dtype=torch.float64), torch.randn(2, 2, 6, 8, dtype=torch.float64)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False  # image 1 kept 4 tokens, padded to 6
    state = TokenState(torch.zeros(2, 6, 8), valid, torch.ones(2, 6, dtype=torch.float64), torch.zeros(2, 6),
                       torch.zeros(2, 6, dtype=torch.long), trivial=False)
    got = received_attention(q, k, attention_bias(state, torch.float64), 8 ** -0.5, False, valid)
    alone = received_attention(q[1:, :, :4], k[1:, :, :4], None, 8 ** -0.5, False)
    assert_rounding_close(got[1, :4], alone[0], SMALL_OPS)
    # counting the padding queries (as before) gives another score: the test can tell
    counted = received_attention(q, k, attention_bias(state, torch.float64), 8 ** -0.5, False)
    assert (counted[1, :4] - alone[0]).abs().max() > 1e-3


def test_residual_on_real_rows_equals_adding_the_zero_padded_output():
    """``residual`` adds a token-wise function's output to the real rows in place of building the
    zero-padded output and adding it: the same sums, bit for bit, and padding rows left as they were."""
    from dymu_eval.merge import TokenState
    from dymu_eval.vision.block import RealRows, residual, rowwise

    torch.manual_seed(0)
    x, inputs = torch.randn(2, 7, 5), torch.randn(2, 7, 5)
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1, 4:] = False
    state = TokenState.initial(x)
    real = RealRows.of(TokenState(x, valid, state.sizes, state.first, state.patch_to_token, trivial=False))
    proj = torch.nn.Linear(5, 5)
    with torch.no_grad():
        got = residual(x, proj, inputs, real)
        assert torch.equal(got, x + rowwise(proj, inputs, real))
        assert torch.equal(got[1, 4:], x[1, 4:])
        assert torch.equal(residual(x, proj, inputs, None), x + proj(inputs))
