"""SparseVLM: raters, kept entries, clusters and logits are the official v1.5 rule's (restated here on the plain
HF layers); recycling adds int(m/10)+1 rows; drop == mask; batched == one by one; cache == recompute;
analytic FLOPs == counted FLOPs through the tiny LLaVA; bad settings get one line."""
from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import repeat_kv

from dymu_eval.errors import ConfigError
from dymu_eval.language import DecodeConfig, Pruning, VirtualLayout, generate, prefill, prefill_logits
from dymu_eval.language.attention import use_dymu_attention
from dymu_eval.language.layout import mix_rows
from dymu_eval.language.loop import append_tokens
from dymu_eval.language.sparsevlm import SparseVLM, cluster_and_merge
from dymu_eval.methods.builtin.sparsevlm import layer_average, recycled_counts, stage_entries
from dymu_eval.methods.settings import resolve_method_args
from dymu_eval.vlm.reduction import BuildContext, build_reduction
from tests.helpers.numerics import SMALL_OPS, assert_rounding_close, forward_ops
from tests.language.lang_helpers import drop_and_mask, parts, random_layout, rotated_qk, unique_rows
from tests.language.test_lang_fastv import image_span

LAYERS, KEEP = (0, 1, 2), (10, 6, 3)  # scoring layers of the 4-layer decoders; cuts at 1, 2, 3


def sparse(image_mask, mode="drop", keep=KEEP, recycle=True):
    return Pruning(SparseVLM(LAYERS, keep, recycle), image_mask, mode)


# ------------------------------------------------------------------ the official rule, restated
def official_cluster(x, cluster_num):
    """utils.py::cluster_and_merge for one sample (m, C), without its 1e-6 density noise and weight guard."""
    return official_assign(x, cluster_num)[0]


def official_assign(x, cluster_num):
    """(cluster means, each row's cluster) of the official DPC-kNN."""
    dist = (x[:, None] - x[None]).norm(dim=-1) / x.shape[-1] ** 0.5
    nearest = torch.topk(dist, k=cluster_num, dim=-1, largest=False).values
    density = (-(nearest ** 2).mean(-1)).exp()
    mask = (density[None, :] > density[:, None]).to(x.dtype)
    delta = (dist * mask + dist.max() * (1 - mask)).min(-1).values
    centres = torch.topk(delta * density, k=cluster_num).indices
    assign = dist[centres].argmin(0)
    assign[centres] = torch.arange(cluster_num)
    return torch.stack([x[assign == c].mean(0) for c in range(cluster_num)]), assign


def official_run(model, rows, v_start, v_num, keep, recycle=True, forced=None):
    """modelling_sparse_llama.py's prefill for one sample (1, N, D) on the plain HF layers: raters on the
    input embeddings, after each scoring layer the raters' attention (mean over heads and raters), top-k,
    the top 30% of the dropped clustered and inserted after the kept visual rows, positions truncated.
    Rows carry ids (input index, or (stage, j) for a cluster); ``forced`` replays a run's choices
    (kept ids, cluster member ids per stage). Returns (logits (1, n, V), final ids, choices)."""
    dec = model.model
    h, ids = rows, list(range(rows.shape[1]))
    m = (h[:, v_start: v_start + v_num] @ h[:, v_start + v_num:].transpose(1, 2)).softmax(2).mean(1)
    t_idx = torch.where(m > m.mean())[1]
    choices, stage = [], {layer: i for i, layer in enumerate(LAYERS)}
    with torch.no_grad():
        for i, layer in enumerate(dec.layers):
            pos = torch.arange(h.shape[1])
            out = layer(h, attention_mask=None, position_embeddings=dec.rotary_emb(h, pos[None]))
            out = out[0] if isinstance(out, tuple) else out
            if i in stage:
                s = stage[i]
                if forced is None:
                    q, k = rotated_qk(model, i, h, pos)
                    k = repeat_kv(k, q.shape[1] // k.shape[1])
                    n = h.shape[1]
                    causal = torch.ones(n, n, dtype=torch.bool).tril()
                    attn = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).masked_fill(~causal, float("-inf"))
                    attn = attn.softmax(-1).mean(1)[0]  # heads
                    rel = attn[t_idx + v_start + v_num, v_start: v_start + v_num].mean(0)
                    top = torch.topk(rel, min(keep[s], v_num - 1)).indices
                    kept = sorted(top.tolist())
                    deleted = [j for j in range(v_num) if j not in kept]
                    groups = []
                    if recycle and deleted:
                        best = torch.topk(rel[deleted], int(len(deleted) * 0.3) + 1).indices
                        members = [deleted[j] for j in best.tolist()]
                        n_clusters = int(len(members) / 10) + 1
                        _, assign = official_assign(out[0, [v_start + j for j in members]], n_clusters)
                        groups = [[mm for mm, a in zip(members, assign.tolist()) if a == c] for c in range(n_clusters)]
                    kept_ids = {ids[v_start + j] for j in kept}
                    member_ids = [[ids[v_start + j] for j in g] for g in groups]
                else:
                    kept_ids, member_ids = forced[s]
                choices.append((kept_ids, member_ids))
                vis = [j for j in range(v_start, v_start + v_num) if ids[j] in kept_ids]
                where = {x: j for j, x in enumerate(ids)}
                merged = [out[0, [where[x] for x in g]].mean(0) for g in member_ids]
                new = out[:, :v_start], out[:, vis], *(r[None, None] for r in merged), out[:, v_start + v_num:]
                ids = ids[:v_start] + [ids[j] for j in vis] + [(s, c) for c in range(len(merged))] + \
                    ids[v_start + v_num:]
                out, v_num = torch.cat(new, 1), len(vis) + len(merged)
            h = out
        return model.lm_head(dec.norm(h)), ids, choices


# ------------------------------------------------------------------ tests
def test_counts_are_the_official_formulas():
    assert [recycled_counts(n) for n in (1, 3, 9, 10, 276)] == [(1, 1), (1, 1), (3, 1), (4, 1), (83, 9)]
    # LLaVA-1.5, 576 patches: 300 + 9 clusters, 200 + 4, 110 + 3; the official layer averages are the budgets
    assert stage_entries(576, (300, 200, 110)) == [309, 204, 113]
    assert stage_entries(576, (300, 200, 110), recycle=False) == [300, 200, 110]
    assert layer_average((2, 6, 15), (300, 200, 110), 576, 32) == pytest.approx(192.03, abs=0.01)


def test_clusters_by_hand():
    """Two blobs of equal-density points (the ties the official 1e-6 noise breaks; here the earlier
    row counts as denser): the tighter blob's first point is the first centre, the other blob's first
    point the second, and each cluster is its blob's mean."""
    a = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1]], dtype=torch.float64)
    b = torch.tensor([[5.0, 5.0], [5.2, 5.0]], dtype=torch.float64)
    x = torch.cat([a, b])
    got = cluster_and_merge(x, 2)
    assert got.round(decimals=9).tolist() == [[0.05, 0.05], [5.1, 5.0]]
    one = cluster_and_merge(x, 1)
    assert_rounding_close(one, x.mean(0, keepdim=True), SMALL_OPS)


def test_clusters_are_the_official_rule():
    g = torch.Generator().manual_seed(4)
    for m, c in ((7, 1), (23, 3), (40, 5)):
        x = torch.randn(m, 16, generator=g, dtype=torch.float64)
        assert_rounding_close(cluster_and_merge(x, c), official_cluster(x, c), SMALL_OPS)


@pytest.mark.parametrize("recycle", [True, False])
def test_kept_entries_clusters_and_logits_are_the_official_rules(model, recycle):
    dec, head = parts(model)
    n, v_start, v_num = 40, 3, 24
    layout = VirtualLayout.identity([n])
    rows = unique_rows(model, layout, seed=5)
    logits, ids, choices = official_run(model, rows, v_start, v_num, KEEP, recycle)
    prune = sparse(image_span(layout, v_start, v_start + v_num), recycle=recycle)
    with torch.no_grad(), use_dymu_attention(dec):
        run = prefill(dec, rows, layout, prune)
    # per stage: the configured count kept (all but one at most), plus int(m/10)+1 clusters of m recycled
    want = [[c] for c in stage_entries(v_num, KEEP, recycle)]
    assert [s.entries for s in prune.stages] == [s.rows for s in prune.stages] == want
    assert [s.inserted for s in prune.stages] == ([[1], [1], [1]] if recycle else [[0], [0], [0]])
    assert [s.entries[0] - s.inserted[0] for s in prune.stages] == list(KEEP)
    assert {x for x in ids if isinstance(x, int)} == set(run.origin[0][run.origin[0] >= 0].tolist())
    assert bool((run.layout.positions[0] == torch.arange(len(ids))).all())  # contiguous
    got = head(mix_rows(run.hidden, run.layout.index, run.layout.weight))  # every final entry, inserted ones too
    assert_rounding_close(got[0], logits[0], forward_ops(model.config, n))
    kept_input = [j for j, x in enumerate(ids) if isinstance(x, int)]
    flat = prefill_logits(dec, head, rows, layout, sparse(image_span(layout, v_start, v_start + v_num),
                                                          recycle=recycle))
    assert_rounding_close(flat[0, [ids[j] for j in kept_input]], logits[0, kept_input], forward_ops(model.config, n))


@pytest.mark.parametrize("vtu", [False, True])
def test_drop_equals_mask(model, vtu):
    """Masking replaces only the removal: the cluster rows are inserted in both modes."""
    dec, head = parts(model)
    layout = random_layout([17, 14], [30, 26], seed=12) if vtu else VirtualLayout.identity([30, 26])
    rows = unique_rows(model, layout, seed=3)
    image = image_span(layout, 3, 20)
    drop, mask = sparse(image, "drop", (9, 5, 2)), sparse(image, "mask", (9, 5, 2))
    kept, out_drop, out_mask = drop_and_mask(dec, head, rows, layout, drop, mask, forward_ops(model.config, 30))
    assert [s.entries for s in out_drop.stages] == [s.entries for s in out_mask.stages] == [[10, 10], [6, 6], [3, 3]]
    assert [s.inserted for s in out_drop.stages] == [[1, 1]] * 3


def test_batched_equals_one_by_one(model):
    dec, head = parts(model)
    lengths = [40, 31]
    layout = VirtualLayout.identity(lengths)
    rows = unique_rows(model, layout, seed=7)
    image = image_span(layout, 2, 26)
    batch = prefill_logits(dec, head, rows, layout, sparse(image))
    cfg = DecodeConfig(max_new_tokens=5)
    out = generate(dec, head, rows, layout, cfg, pruning=sparse(image), return_scores=True)
    for b, n in enumerate(lengths):
        one = VirtualLayout.identity([n])
        one_rows = rows[b: b + 1, rows.shape[1] - n:]
        single = prefill_logits(dec, head, one_rows, one, sparse(image_span(one, 2, 26)))
        part = batch[b: b + 1, batch.shape[1] - n:]
        assert torch.equal(torch.isnan(part[..., 0]), torch.isnan(single[..., 0]))
        kept = ~torch.isnan(single[..., 0])
        assert_rounding_close(part[kept], single[kept], forward_ops(model.config, n))
        alone = generate(dec, head, one_rows, one, cfg, pruning=sparse(image_span(one, 2, 26)), return_scores=True)
        assert alone.sequences[0] == out.sequences[b]
        assert [s.entries for s in alone.stages] == [[s.entries[b]] for s in out.stages]
        for a, s in zip(alone.scores, out.scores):
            assert_rounding_close(s[b: b + 1], a, forward_ops(model.config, n))


def test_cached_decoding_equals_recomputation(model):
    """Each step's logits are those of the extended sequence run with the same choices (the same kept
    rows and clusters), each group of layers numbering the new tokens after its own rows."""
    dec, head = parts(model)
    n, v_start, v_num = 34, 2, 22
    layout = VirtualLayout.identity([n])
    rows = unique_rows(model, layout, seed=2)
    _, _, choices = official_run(model, rows, v_start, v_num, KEEP)
    out = generate(dec, head, rows, layout, DecodeConfig(max_new_tokens=5),
                   pruning=sparse(image_span(layout, v_start, v_start + v_num)), return_scores=True)
    for t in range(5):
        full = append_tokens(dec, rows, layout, [out.sequences[0][:t]])[0] if t else rows
        logits, _, _ = official_run(model, full, v_start, v_num, KEEP, forced=choices)
        assert_rounding_close(out.scores[t][0], logits[0, -1], forward_ops(model.config, n + t))


def _build(given, depth=4):
    values = resolve_method_args("sparsevlm", given)
    return build_reduction("sparsevlm", values, BuildContext(None, None, [], "per_image", depth))


def test_defaults_and_budgets():
    pruner = _build({}, depth=32).pruner
    assert (pruner.layers, pruner.keep, pruner.recycle) == ((2, 6, 15), (300, 200, 110), True)
    assert [c.layer for c in pruner.cuts()] == [3, 7, 16]
    for paper, row in ((192, (300, 200, 110)), (128, (303, 110, 36)), (64, (66, 30, 17))):
        assert _build({"budget": paper}, depth=32).pruner.keep == row
    scaled = _build({"budget": 0.25}, depth=32).pruner
    assert layer_average(scaled.layers, scaled.keep, 576, 32) == pytest.approx(144, abs=1.0)
    assert _build({"budget": 128, "sparsevlm_keep": "50/20/10"}, depth=32).pruner.keep == (50, 20, 10)


@pytest.mark.parametrize("given, match", [
    ({"sparsevlm_keep": "10/6"}, "sparsevlm_keep=10/6"),
    ({"sparsevlm_keep": "6/10/3"}, "sparsevlm_keep"),
    ({"sparsevlm_keep": "ten"}, "sparsevlm_keep"),
    ({"sparsevlm_layers": "0/1/3", "sparsevlm_keep": "9/5/2"}, "sparsevlm_layers=0/1/3"),
    ({"sparsevlm_layers": "2/1/0"}, "sparsevlm_layers"),
    ({"sparsevlm_recycle": "maybe"}, "sparsevlm_recycle"),
])
def test_bad_settings_give_one_line(given, match):
    with pytest.raises(ConfigError, match=match) as err:
        _build(given)
    assert "\n" not in str(err.value)


def test_more_counts_than_image_tokens_give_one_line(llama):
    dec, head = parts(llama)
    layout = VirtualLayout.identity([30])
    rows = unique_rows(llama, layout)
    with pytest.raises(ConfigError, match="sparsevlm_keep=300/200/110") as err:
        prefill_logits(dec, head, rows, layout, Pruning(SparseVLM(LAYERS, (300, 200, 110)), image_span(layout, 2, 20)))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ the real pipeline (tiny LLaVA, 2 decoder layers)
@pytest.fixture(scope="module")
def pipe(tiny_llava):
    from dymu_eval.vlm import llava
    from dymu_eval.vlm.reduction import reduction_for

    model, processor = llava.load_llava(str(tiny_llava), "cpu")
    pipe = llava.LlavaPipeline(model, processor)
    pipe.reduction = reduction_for(pipe, "sparsevlm", sparsevlm_layers="0", sparsevlm_keep="20")
    return pipe


QUESTION = "What color is the shape in the image?"


def _request(pipe, text=None):
    from dymu_eval.vlm import llava
    from tests.factories import TASKS

    img = llava.Image.open(TASKS / "dymu_offline" / "images" / "photo_astronaut.jpg").convert("RGB")
    return llava.Request(text or llava.simple_prompt(pipe.tokenizer, QUESTION, 1)[0], [img])


def test_pipeline_counts_and_flops_match_the_counter(pipe):
    """One request of the tiny LLaVA (64 image tokens; layer 0 scores, 20 kept, 44 dropped -> 14 recycled
    into 2 clusters): the stats' stage counts, and analytic FLOPs equal what FlopCounterMode counts."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from dymu_eval.vlm import llava

    config = DecodeConfig(max_new_tokens=3, eos_token_ids=[], tokenizer=pipe.tokenizer)
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        _, stats = pipe.generate([_request(pipe)], config)
    row = stats[0]
    assert row["stages"] == [{"layer": 1, "rows": 22, "entries": 22}] and row["position_rule"] == "contiguous"
    assert row["layer_avg_rows"] == pytest.approx((64 + 22) / 2)
    assert row["total_flops"] == pytest.approx(float(counter.get_total_flops()), rel=1e-6)  # the scoring is ~1%
    ctx, full = llava.simple_prompt(pipe.tokenizer, QUESTION, 1, "the shape is red")
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        scores, stats = pipe.loglikelihood([_request(pipe, ctx)], [full])
    assert stats[0]["stages"][0]["entries"] == 22 and len(scores) == 1
    assert stats[0]["total_flops"] == pytest.approx(float(counter.get_total_flops()), rel=1e-6)  # the scoring is ~1%


def test_pipeline_kv_bytes_equal_the_real_cache(pipe):
    """The recorded KV bytes count the inserted rows in the layers after the cut, as the loop's cache holds them."""
    from transformers import DynamicCache

    req = _request(pipe)
    _, stats = pipe.generate([req], DecodeConfig(max_new_tokens=1, eos_token_ids=[], tokenizer=pipe.tokenizer))
    prepared = pipe.prepare([req])
    cache = DynamicCache(config=pipe.decoder.config)
    prefill(pipe.decoder, prepared.unique, prepared.layout, pipe._pruning(prepared), cache)
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert stats[0]["kv_cache_bytes"] == held < stats[0]["kv_full_bytes"]
