"""DART: the kept entries are the official rule's; drop == mask; batched == one by one; cache == recompute."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dymu_eval.errors import ConfigError
from dymu_eval.language import DecodeConfig, Pruning, VirtualLayout, generate, prefill, prefill_logits
from dymu_eval.language.attention import use_dymu_attention
from dymu_eval.language.dart import Dart
from dymu_eval.language.loop import append_tokens
from dymu_eval.methods.settings import resolve_method_args
from dymu_eval.vlm.reduction import BuildContext, build_reduction
from tests.helpers.numerics import assert_rounding_close, forward_ops
from tests.language.lang_helpers import drop_and_mask, parts, random_layout, rotated_qk, run_with_cuts, unique_rows
from tests.language.test_lang_fastv import image_span


def dart(image_mask, mode="drop", layer=2, budget=16):
    return Pruning(Dart(layer, budget), image_mask, mode)


def official_choice(model, image, end, layer=2, budget=16):
    """DART's get_retained_image_token restated (pivots in index order): 4 image and 4 text pivots by the
    L1 norm of layer K-1's rotated keys (heads concatenated); for each, the budget // 8 pool entries least
    cosine-similar to it in norm(h_K), leaving the pool; the text pivots are then left out."""
    def choose(inputs, pos, alive):
        _, k = rotated_qk(model, layer - 1, inputs[layer - 1], pos)
        keys = k.permute(0, 2, 1, 3).reshape(1, k.shape[2], -1)[0]
        img = sorted(image)
        txt = list(range(end, alive.numel()))
        ip = [img[i] for i in keys[img].norm(p=1, dim=-1).topk(4).indices.tolist()]
        tp = [txt[i] for i in keys[txt].norm(p=1, dim=-1).topk(4).indices.tolist()]
        state = model.model.norm(inputs[layer])[0]
        valid, kept = set(img) - set(ip), set(ip)
        for item in sorted(ip + tp):
            pool = sorted(valid)
            sim = -F.cosine_similarity(state[item], state[pool], dim=-1)
            picks = [pool[i] for i in sim.topk(budget // 8).indices.tolist()]
            kept |= set(picks)
            valid -= set(picks)
        return kept
    return {layer: choose}


def test_kept_entries_and_logits_are_the_official_rules(model):
    dec, head = parts(model)
    layout = VirtualLayout.identity([51])
    rows = unique_rows(model, layout, seed=5)
    image = set(range(3, 43))
    logits, alive, kept = run_with_cuts(model, rows, image, official_choice(model, image, 43), False)
    assert len(kept[0]) == 16 + 4
    prune = dart(image_span(layout, 3, 43))
    with torch.no_grad(), use_dymu_attention(dec):
        run = prefill(dec, rows, layout, prune)
    assert prune.stages[0].entries == [20]
    assert set(run.origin[0].tolist()) & image == kept[0]
    assert torch.equal(run.layout.positions[0], alive)  # original positions, with gaps
    got = prefill_logits(dec, head, rows, layout, dart(image_span(layout, 3, 43)))[0, alive]
    assert_rounding_close(got, logits[0], forward_ops(model.config, 51))


@pytest.mark.parametrize("vtu", [False, True])
def test_drop_equals_mask(model, vtu):
    dec, head = parts(model)
    layout = random_layout([12, 10], [30, 26], seed=12) if vtu else VirtualLayout.identity([30, 26])
    rows = unique_rows(model, layout, seed=3)
    image = image_span(layout, 2, 20)
    drop, mask = dart(image, "drop", budget=8), dart(image, "mask", budget=8)
    ops = forward_ops(model.config, 30)
    kept, out_drop, out_mask = drop_and_mask(dec, head, rows, layout, drop, mask, ops)
    assert int((~kept & layout.valid).sum()) == 2 * (18 - 12)
    assert out_drop.kept_image_tokens == out_mask.kept_image_tokens == [12, 12]


def test_batched_equals_one_by_one(model):
    dec, head = parts(model)
    lengths = [40, 32]
    layout = VirtualLayout.identity(lengths)
    rows = unique_rows(model, layout, seed=7)
    image = image_span(layout, 2, 26)
    batch = prefill_logits(dec, head, rows, layout, dart(image))
    cfg = DecodeConfig(max_new_tokens=5)
    out = generate(dec, head, rows, layout, cfg, pruning=dart(image))
    for b, n in enumerate(lengths):
        one = VirtualLayout.identity([n])
        one_rows = rows[b: b + 1, rows.shape[1] - n:]
        single = prefill_logits(dec, head, one_rows, one, dart(image_span(one, 2, 26)))
        part = batch[b: b + 1, batch.shape[1] - n:]
        assert torch.equal(torch.isnan(part[..., 0]), torch.isnan(single[..., 0]))
        kept = ~torch.isnan(single[..., 0])
        assert_rounding_close(part[kept], single[kept], forward_ops(model.config, n))
        alone = generate(dec, head, one_rows, one, cfg, pruning=dart(image_span(one, 2, 26)))
        assert alone.sequences[0] == out.sequences[b]
        assert alone.kept_image_tokens == [out.kept_image_tokens[b]] == [20]


def test_cached_decoding_equals_recomputation(model):
    dec, head = parts(model)
    layout = VirtualLayout.identity([40])
    rows = unique_rows(model, layout, seed=2)
    image = set(range(2, 30))
    _, _, kept = run_with_cuts(model, rows, image, official_choice(model, image, 30), False)
    out = generate(dec, head, rows, layout, DecodeConfig(max_new_tokens=5), pruning=dart(image_span(layout, 2, 30)),
                   return_scores=True)
    forced = {2: lambda inputs, pos, alive: kept[0]}
    for t in range(5):
        full = append_tokens(dec, rows, layout, [out.sequences[0][:t]])[0] if t else rows
        logits, _, _ = run_with_cuts(model, full, image, forced, False)
        assert_rounding_close(out.scores[t][0], logits[0, -1], forward_ops(model.config, 40 + t))


def _build(given, depth=4):
    values = resolve_method_args("dart", given)
    return build_reduction("dart", values, BuildContext(None, None, [], "per_image", depth))


def test_defaults():
    pruner = _build({}, depth=32).pruner
    assert (pruner.layer, pruner.budget) == (2, 128)
    assert pruner.cuts()[0].needs == frozenset({"keys"}) and pruner.cuts()[0].positions == "original"


@pytest.mark.parametrize("given, match", [
    ({"dart_layer": 4}, "dart_layer=4"),
    ({"dart_layer": 0}, "dart_layer=0"),
    ({"dart_budget": 0}, "dart_budget=0"),
    ({"dart_budget": "x"}, "dart_budget"),
])
def test_bad_settings_give_one_line(given, match):
    with pytest.raises(ConfigError, match=match) as err:
        _build(given)
    assert "\n" not in str(err.value)
