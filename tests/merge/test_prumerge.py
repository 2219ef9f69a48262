"""PruMerge and PruMerge+ (method=prumerge, prumerge_plus).

The kept set, the merge partners and the merged values are checked on hand-built cases and
against a straight port of the official ``token_prune_merge_advanced[_plus]`` loop run on the
projections Hugging Face's own CLIP and SigLIP compute (forward hooks on ``q_proj``/``k_proj``,
as the official code takes them). Then the methods run through the real LLaVA-1.5 and OneVision
pipelines: recorded counts, batched equals one by one, analytic FLOPs equal counted FLOPs, and bad
settings are refused in one line naming the argument.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dymu_eval.errors import ConfigError
from dymu_eval.language import DecodeConfig
from dymu_eval.merge.prumerge import PruMerge, iqr_outliers, keep_order, prumerge_groups
from dymu_eval.merge.select import SelectionInput
from dymu_eval.vision import VisionRunner
from dymu_eval.vlm import llava
from dymu_eval.vlm import llava_onevision as ov
from dymu_eval.vlm.reduction import Reduction, reduction_for
from tests.factories import TASKS
from tests.factories.media import random_image
from tests.factories.onevision import onevision_pipeline, onevision_request
from tests.factories.towers import random_pixels
from tests.helpers.numerics import SMALL_OPS, assert_rounding_close, forward_ops

ROWS = [json.loads(line) for line in (TASKS / "dymu_offline" / "gqa.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ the official rule
def _official(feats: torch.Tensor, q: torch.Tensor, k: torch.Tensor, has_cls: bool, plus: bool):
    """The official loop for one image, as written there (float64): (kept indices in order, rows).
    ``feats`` (N, C) the patches the VLM reads, ``q``/``k`` (T, C) the reading block's projections.
    Without CLS the score is the mean attention a patch receives (the project's rule for SigLIP)."""
    n, c = feats.shape
    attn = torch.softmax(q @ k.T * c ** -0.5, dim=-1)
    cls_attn = attn[0, 1:] if has_cls else attn.mean(0)
    a = cls_attn.numpy().flatten()
    q1, q3 = np.percentile(a, 25), np.percentile(a, 75)
    ratio = len(np.where(a > q3 + 1.5 * (q3 - q1))[0]) / len(a)
    idx = torch.topk(cls_attn, int(n * ratio), largest=True).indices
    if plus:
        seq = torch.arange(0, n - 1, int(int(1 / ratio) / 3))
        idx = torch.cat([idx, torch.tensor([x for x in seq.tolist() if x not in idx.tolist()], dtype=torch.long)])
    keys = k[1:] if has_cls else k
    compl = [j for j in range(n) if j not in idx.tolist()]
    rows = []
    for i in range(idx.numel()):
        others = torch.tensor([int(j) for m, j in enumerate(idx.tolist()) if m != i] + compl)
        sims = F.normalize(keys[others], dim=-1) @ F.normalize(keys[idx[i]], dim=-1)
        top = others[torch.topk(sims, k=32, largest=True).indices]
        rows.append(feats[idx[i]] + (feats[top] * cls_attn[top].unsqueeze(-1)).sum(0))
    rows.append((feats[compl] * cls_attn[compl].unsqueeze(-1)).sum(0))
    return idx, torch.stack(rows)


# ------------------------------------------------------------------------------ hand-built cases
def test_kept_set_is_the_iqr_outliers_in_descending_order():
    scores = torch.tensor([0.01, 0.02, 0.5, 0.015, 0.03, 0.9, 0.02, 0.025, 0.01, 0.3, 0.02, 0.018],
                          dtype=torch.float64)
    q1, q3 = np.percentile(scores.numpy(), 25), np.percentile(scores.numpy(), 75)  # 0.01875, 0.02625
    assert {i for i, s in enumerate(scores.tolist()) if s > q3 + 1.5 * (q3 - q1)} == {2, 5, 9}
    assert iqr_outliers(scores) == 3
    assert keep_order(scores, plus=False).tolist() == [5, 2, 9]


def test_plus_appends_the_uniform_samples_not_kept_already():
    scores = torch.full((64,), 0.01, dtype=torch.float64)
    scores[[6, 40]] = torch.tensor([0.4, 0.3], dtype=torch.float64)  # two outliers: stride (64 // 2) // 3 = 10
    assert keep_order(scores, plus=True).tolist() == [6, 40, 0, 10, 20, 30, 50, 60]
    scores[[0, 30]] = 0.2  # samples that are outliers already are not repeated: stride (64 // 4) // 3 = 5
    samples = [i for i in range(0, 63, 5) if i not in (0, 30, 40)]
    assert keep_order(scores, plus=True).tolist() == [6, 40, 0, 30] + samples


def test_each_kept_token_absorbs_its_32_nearest_by_key_weighted_by_attention():
    """34 patches, kept 0 and 1: each takes the 32 nearest of the 33 others by key cosine (the other
    kept token included, itself not), so both leave out patch 33, whose key points away; the extra row
    sums every patch not kept, 33 included, weighted by its raw score."""
    n = 34
    x = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = torch.linspace(0.01, 0.05, n, dtype=torch.float64)
    keys = torch.ones(n, 2, dtype=torch.float64)
    keys[0], keys[1], keys[33] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([-1.0, -1.0])
    g = prumerge_groups(x, keys, a, torch.tensor([0, 1]))
    middle = (x[2:33] * a[2:33, None]).sum(0)
    assert g.rows.shape == (3, 3)
    assert_rounding_close(g.rows[0], x[0] + a[1] * x[1] + middle, SMALL_OPS)
    assert_rounding_close(g.rows[1], x[1] + a[0] * x[0] + middle, SMALL_OPS)
    assert_rounding_close(g.rows[2], (x[2:] * a[2:, None]).sum(0), SMALL_OPS)
    assert g.groups.tolist() == [0, 1] + [2] * 32 and g.sizes.tolist() == [1, 1, 32]


def test_an_image_without_outliers_keeps_only_the_extra_row():
    x = torch.randn(16, 2, dtype=torch.float64)
    scores = torch.full((16,), 1 / 16, dtype=torch.float64)
    kept = keep_order(scores, plus=False)
    assert kept.numel() == 0
    g = prumerge_groups(x, torch.randn(16, 4, dtype=torch.float64), scores, kept)
    assert_rounding_close(g.rows[0], x.sum(0) / 16, SMALL_OPS)
    assert g.groups.tolist() == [0] * 16
    assert keep_order(scores, plus=True).tolist() == [0, 5, 10]  # stride as for one outlier: (16 // 1) // 3


# ------------------------------------------------------------------------------ against the official loop
def _hooked(runner: VisionRunner, layer: int):
    """Capture the ``q_proj``/``k_proj`` outputs of block ``layer`` when its model runs, as the official hooks do."""
    got = {}
    attn = runner.adapter.blocks[layer].self_attn
    handles = [attn.q_proj.register_forward_hook(lambda m, i, o: got.__setitem__("q", o)),
               attn.k_proj.register_forward_hook(lambda m, i, o: got.__setitem__("k", o))]
    return got, handles


@pytest.fixture(scope="module")
def images():
    return random_pixels(count=8, seed=11)


@pytest.mark.parametrize("fam", ["clip", "siglip"])
@pytest.mark.parametrize("plus", [False, True])
def test_runner_equals_the_official_loop_on_the_models_own_projections(fam, plus, tiny_models64, images):
    """CLIP read at layer -2 (3 of 4 blocks): the projections of block 3, which the runner does not
    otherwise run. SigLIP read at its last block: that block's own projections of its input."""
    model = tiny_models64[fam]
    has_cls = fam == "clip"
    layers = 3 if has_cls else 4
    runner = VisionRunner.from_model(model, layers_run=layers)
    out = runner(images, selector=PruMerge(plus))
    got, handles = _hooked(runner, 3)
    with torch.no_grad():
        hidden = model(pixel_values=images, output_hidden_states=True).hidden_states[layers]
    for h in handles:
        h.remove()
    checked = 0
    for b in range(images.shape[0]):
        feats = hidden[b, int(has_cls):]
        scores = torch.softmax(got["q"][b] @ got["k"][b].T * feats.shape[-1] ** -0.5, dim=-1)
        if iqr_outliers(scores[0, 1:] if has_cls else scores.mean(0)) == 0:
            continue  # the official plus variant divides by the outlier ratio
        checked += 1
        idx, want = _official(feats, got["q"][b], got["k"][b], has_cls, plus)
        n = out.num_tokens(b)
        assert n == int(has_cls) + idx.numel() + 1
        rows = out.tokens[b, int(has_cls):n]
        assert_rounding_close(rows, want, 2 * forward_ops(model.config, 65), f"image {b}")
        p2t = out.patch_groups(b)
        assert p2t[idx].tolist() == list(range(idx.numel()))  # kept rows in the official order
        assert (p2t >= 0).all() and int((p2t == idx.numel()).sum()) == feats.shape[0] - idx.numel()
    assert checked >= 2


def test_selection_batched_equals_one_by_one(tiny_models64, images):
    runner = VisionRunner.from_model(tiny_models64["clip"], layers_run=3)
    for sel in (PruMerge(), PruMerge(plus=True)):
        batch = runner(images, selector=sel)
        for b in range(images.shape[0]):
            one = runner(images[b:b + 1], selector=sel)
            n = one.num_tokens(0)
            assert batch.num_tokens(b) == n
            assert_rounding_close(batch.tokens[b, :n], one.tokens[0, :n], forward_ops(tiny_models64["clip"].config, 65))
            assert torch.equal(batch.patch_to_token[b], one.patch_to_token[0])


# ------------------------------------------------------------------------------ pipelines
@pytest.fixture(scope="module")
def pipe(tiny_llava):
    model, processor = llava.load_llava(str(tiny_llava), "cpu", "float64")
    return llava.LlavaPipeline(model, processor)


def _requests(pipe, rows):
    reqs = []
    for i, row in enumerate(rows):
        img = llava.Image.open(TASKS / "dymu_offline" / row["image_file"]).convert("RGB")
        text, _ = llava.simple_prompt(pipe.tokenizer, row["question"], 1)
        reqs.append(llava.Request(text, [img], name=f"sample {i}"))
    return reqs


def _config(pipe, n=4):
    return DecodeConfig(max_new_tokens=n, eos_token_ids=pipe.eos_ids, tokenizer=pipe.tokenizer)


@pytest.mark.parametrize("method", ["prumerge", "prumerge_plus"])
@pytest.mark.parametrize("vtu", [False, True])
def test_llava_records_the_adaptive_counts_and_batched_equals_single(pipe, method, vtu):
    pipe.reduction = reduction_for(pipe, method, vtu=vtu)
    try:
        reqs = _requests(pipe, ROWS[:3])
        outs, stats = pipe.generate(reqs, _config(pipe))
        enc, _ = pipe.encode(torch.cat([pipe._process(r)[1] for r in reqs]))
        for b, s in enumerate(stats):
            rows = enc.num_tokens(b)  # CLS + kept + the extra row
            assert s["encoder_rows"] == rows and s["llm_rows"] == s["visual_tokens_after"] == rows - 1
            assert s["virtual_positions"] == (64 if vtu else rows - 1)
        assert outs == [pipe.generate([q], _config(pipe))[0][0] for q in reqs]
    finally:
        pipe.reduction = Reduction()


@pytest.fixture(scope="module")
def ov_pipe(tiny_onevision):
    return onevision_pipeline(tiny_onevision)


@pytest.mark.parametrize("method, vtu", [("prumerge", False), ("prumerge_plus", False), ("prumerge", True)])
def test_onevision_selects_per_crop_and_frame_and_batched_equals_single(ov_pipe, tiny_videos, method, vtu):
    ov_pipe.reduction = reduction_for(ov_pipe, method, vtu=vtu)
    try:
        reqs = [onevision_request(ov_pipe, [random_image(140, 150, 0)], name="big"),  # AnyRes crops, mixed positions
                onevision_request(ov_pipe, videos=[ov.load_video(str(tiny_videos["long"]), 4)], name="video")]
        prep = ov_pipe.prepare(reqs)
        for req, c, s in zip(reqs, prep.counts, prep.stats):
            _, out = ov_pipe._process(req)
            crops, _ = ov_pipe._crops(out)
            pieces = torch.cat(crops + ov_pipe._videos(out), 0)
            enc = ov_pipe.runner(pieces, selector=ov_pipe.reduction.selector)
            assert c.selected == [enc.num_tokens(i) for i in range(pieces.shape[0])]  # no CLS: kept + extra
            assert all(n < 36 for n in c.selected) and s["visual_rows"] < s["visual_positions"]
        outs, _ = ov_pipe.generate(reqs, _config(ov_pipe))
        assert outs == [ov_pipe.generate([r], _config(ov_pipe))[0][0] for r in reqs]
    finally:
        ov_pipe.reduction = ov.Reduction()


@pytest.mark.parametrize("method", ["prumerge", "prumerge_plus"])
def test_analytic_flops_match_the_counter(tiny_llava, method):
    """The selection's own work (the reading block's q/k projections, the score row, the key
    cosines) is in the analytic encoder FLOPs; without it they would fall short of the count."""
    model, processor = llava.load_llava(str(tiny_llava), "cpu")
    p = llava.LlavaPipeline(model, processor)
    p.reduction = reduction_for(p, method)
    req = _requests(p, ROWS[:1])
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        _, stats = p.generate(req, DecodeConfig(max_new_tokens=3, eos_token_ids=[], tokenizer=p.tokenizer))
    counted = float(counter.get_total_flops())
    selection = stats[0]["encoder_flops"] - _baseline_encoder_flops(p, req)
    assert selection > 0
    assert stats[0]["total_flops"] == pytest.approx(counted, rel=1e-12)  # exact on these shapes


@pytest.mark.parametrize("method", ["prumerge", "prumerge_plus"])
def test_onevision_analytic_flops_match_the_counter(ov_pipe, tiny_videos, method):
    """No CLS: every query's logits, and the last block's projections computed again (no block follows)."""
    ov_pipe.reduction = reduction_for(ov_pipe, method)
    try:
        for req in (onevision_request(ov_pipe, [random_image(140, 150, 0)]),
                    onevision_request(ov_pipe, videos=[ov.load_video(str(tiny_videos["long"]), 4)])):
            counter = FlopCounterMode(display=False)
            with sdpa_kernel(SDPBackend.MATH), counter:
                _, stats = ov_pipe.generate([req], DecodeConfig(max_new_tokens=2, eos_token_ids=[],
                                                                tokenizer=ov_pipe.tokenizer))
            assert stats[0]["total_flops"] == pytest.approx(float(counter.get_total_flops()), rel=1e-12)
    finally:
        ov_pipe.reduction = ov.Reduction()


def _baseline_encoder_flops(p, req):
    p_red, p.reduction = p.reduction, Reduction()
    try:
        return p.generate(req, DecodeConfig(max_new_tokens=1, eos_token_ids=[], tokenizer=p.tokenizer))[1][0][
            "encoder_flops"]
    finally:
        p.reduction = p_red


# ------------------------------------------------------------------------------ bad settings
def test_bad_settings_are_refused_naming_the_argument(pipe):
    with pytest.raises(ConfigError, match="vtu"):
        reduction_for(pipe, "prumerge", vtu="maybe")
    with pytest.raises(ConfigError, match="budget"):
        reduction_for(pipe, "prumerge_plus", budget="64")
    with pytest.raises(ConfigError, match="dominant"):
        reduction_for(pipe, "prumerge", dominant="10")
    with pytest.raises(ConfigError, match="plus=1"):
        PruMerge(plus=1)
    with pytest.raises(ConfigError, match="at least 2 patch tokens"):
        PruMerge().check(1, (1, 1), True)
    with pytest.raises(ConfigError, match="query and key projections"):
        PruMerge().select(torch.zeros(5, 2), 0, SelectionInput(True, (2, 2)))
