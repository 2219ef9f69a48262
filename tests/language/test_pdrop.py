"""PyramidDrop: the kept entries are the official rule's; drop == mask; batched == one by one; cache == recompute."""
from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import repeat_kv

from dymu_eval.errors import ConfigError
from dymu_eval.language import DecodeConfig, Pruning, VirtualLayout, generate, prefill, prefill_logits
from dymu_eval.language.attention import use_dymu_attention
from dymu_eval.language.loop import append_tokens
from dymu_eval.language.pdrop import PyramidDrop
from dymu_eval.methods.settings import resolve_method_args
from dymu_eval.vlm.reduction import BuildContext, build_reduction
from tests.helpers.numerics import assert_rounding_close, forward_ops
from tests.language.lang_helpers import drop_and_mask, parts, random_layout, rotated_qk, run_with_cuts, unique_rows
from tests.language.test_lang_fastv import image_span

LAYERS, RATIOS = (1, 2, 3), (0.5, 0.25, 0.125)


def pdrop(image_mask, mode="drop", layers=LAYERS, ratios=RATIOS):
    return Pruning(PyramidDrop(layers, ratios), image_mask, mode)


def official_choice(model, image, n_image, layers, ratios):
    """PyramidDrop's rule restated: layer L's q/k on input_layernorm(h), RoPE at the current positions,
    the last token's softmax row over every key, mean over heads, the top int(N_img * ratio) image entries."""
    def at(layer_index, ratio):
        def choose(inputs, pos, alive):
            h = inputs[-1]
            q, k = rotated_qk(model, layer_index, h, pos)
            k = repeat_kv(k, q.shape[1] // k.shape[1])
            row = (q[:, :, -1:] @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)[0, :, 0].mean(0)
            where = [j for j, a in enumerate(alive.tolist()) if a in image]
            top = torch.topk(row[where], int(n_image * ratio)).indices
            return [int(alive[where[t]]) for t in top]
        return choose
    return {layer: at(layer, ratio) for layer, ratio in zip(layers, ratios)}


def test_kept_entries_and_logits_are_the_official_rules(model):
    dec, head = parts(model)
    layout = VirtualLayout.identity([34])
    rows = unique_rows(model, layout, seed=5)
    image = set(range(3, 27))
    logits, alive, kept = run_with_cuts(model, rows, image, official_choice(model, image, 24, LAYERS, RATIOS), True)
    assert [len(s) for s in kept] == [12, 6, 3]
    prune = pdrop(image_span(layout, 3, 27))
    with torch.no_grad(), use_dymu_attention(dec):
        run = prefill(dec, rows, layout, prune)
    assert [s.entries for s in prune.stages] == [[12], [6], [3]]
    assert set(run.origin[0].tolist()) & image == kept[-1]
    assert bool((run.layout.positions[0] == torch.arange(34 - 21)).all())  # renumbered contiguously
    got = prefill_logits(dec, head, rows, layout, pdrop(image_span(layout, 3, 27)))[0, alive]
    assert_rounding_close(got, logits[0], forward_ops(model.config, 34))


@pytest.mark.parametrize("vtu", [False, True])
def test_drop_equals_mask(model, vtu):
    dec, head = parts(model)
    layout = random_layout([9, 7], [22, 18], seed=12) if vtu else VirtualLayout.identity([22, 18])
    rows = unique_rows(model, layout, seed=3)
    image = image_span(layout, 3, 15)
    drop, mask = pdrop(image, "drop"), pdrop(image, "mask")
    ops = forward_ops(model.config, 22)
    kept, out_drop, out_mask = drop_and_mask(dec, head, rows, layout, drop, mask, ops)
    assert int((~kept & layout.valid).sum()) == 2 * (12 - 1)  # int(12 * 0.125) = 1 kept per sample
    assert [s.entries for s in out_drop.stages] == [s.entries for s in out_mask.stages] == [[6, 6], [3, 3], [1, 1]]


def test_batched_equals_one_by_one(model):
    dec, head = parts(model)
    lengths = [30, 24]
    layout = VirtualLayout.identity(lengths)
    rows = unique_rows(model, layout, seed=7)
    image = image_span(layout, 2, 20)
    batch = prefill_logits(dec, head, rows, layout, pdrop(image))
    cfg = DecodeConfig(max_new_tokens=5)
    out = generate(dec, head, rows, layout, cfg, pruning=pdrop(image), return_scores=True)
    for b, n in enumerate(lengths):
        one = VirtualLayout.identity([n])
        one_rows = rows[b: b + 1, rows.shape[1] - n:]
        single = prefill_logits(dec, head, one_rows, one, pdrop(image_span(one, 2, 20)))
        part = batch[b: b + 1, batch.shape[1] - n:]
        assert torch.equal(torch.isnan(part[..., 0]), torch.isnan(single[..., 0]))
        kept = ~torch.isnan(single[..., 0])
        assert_rounding_close(part[kept], single[kept], forward_ops(model.config, n))
        alone = generate(dec, head, one_rows, one, cfg, pruning=pdrop(image_span(one, 2, 20)))
        assert alone.sequences[0] == out.sequences[b]
        assert [s.entries for s in alone.stages] == [[s.entries[b]] for s in out.stages]


def test_cached_decoding_equals_recomputation(model):
    """Each decoding step's logits are those of the extended sequence run with the same cuts (layers
    after a cut see the new tokens at the renumbered positions)."""
    dec, head = parts(model)
    layout = VirtualLayout.identity([26])
    rows = unique_rows(model, layout, seed=2)
    image = set(range(2, 22))
    _, _, kept = run_with_cuts(model, rows, image, official_choice(model, image, 20, LAYERS, RATIOS), True)
    out = generate(dec, head, rows, layout, DecodeConfig(max_new_tokens=5), pruning=pdrop(image_span(layout, 2, 22)),
                   return_scores=True)
    forced = {layer: (lambda inputs, pos, alive, s=s: s) for layer, s in zip(LAYERS, kept)}
    for t in range(5):
        full = append_tokens(dec, rows, layout, [out.sequences[0][:t]])[0] if t else rows
        logits, _, _ = run_with_cuts(model, full, image, forced, True)
        assert_rounding_close(out.scores[t][0], logits[0, -1], forward_ops(model.config, 26 + t))


def test_score_flops_are_the_projections_and_one_row():
    from dymu_eval.accounting import CutCount, LayerRun, TransformerShape, ranking_flops

    assert PyramidDrop((1,), (0.5,)).cuts()[0].positions == "contiguous"
    shape = TransformerShape(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=97)
    plan = [LayerRun(10, 10, 10), LayerRun(6, 6, 6)]
    assert ranking_flops(shape, plan, [CutCount(1, 2, 2, False, 123.0)]) == 123.0
    assert ranking_flops(shape, plan, [CutCount(1, 2, 2, True, 123.0)]) == 123.0 + 2 * 10 * 64


def _build(given, depth=4):
    values = resolve_method_args("pdrop", given)
    return build_reduction("pdrop", values, BuildContext(None, None, [], "per_image", depth))


def test_defaults():
    pruner = _build({}, depth=32).pruner
    assert (pruner.layers, pruner.ratios) == ((8, 16, 24), (0.5, 0.25, 0.125))
    assert [c.layer for c in pruner.cuts()] == [8, 16, 24]


@pytest.mark.parametrize("given, match", [
    ({"pdrop_layers": "1/2", "pdrop_ratios": "0.5/0.5"}, "pdrop_ratios=0.5/0.5"),
    ({"pdrop_layers": "1/2", "pdrop_ratios": "0.25/0.5"}, "pdrop_ratios"),
    ({"pdrop_layers": "1/2", "pdrop_ratios": "0.5"}, "pdrop_ratios=0.5"),
    ({"pdrop_layers": "1/4", "pdrop_ratios": "0.5/0.25"}, "pdrop_layers=1/4"),
    ({"pdrop_layers": "2/1", "pdrop_ratios": "0.5/0.25"}, "pdrop_layers"),
    ({"pdrop_layers": "0/2", "pdrop_ratios": "0.5/0.25"}, "pdrop_layers"),
    ({"pdrop_layers": "1/2", "pdrop_ratios": "1.5/0.25"}, "pdrop_ratios"),
])
def test_bad_settings_give_one_line(given, match):
    with pytest.raises(ConfigError, match=match) as err:
        _build(given)
    assert "\n" not in str(err.value)
