"""LLaVA-OneVision: analytic FLOPs equal what ``torch.utils.flop_counter`` counts around the real forward.

The tiny OneVision (SigLIP without CLS, Qwen2 with q/k/v biases) runs one request (batch 1) through
the family module under FlopCounterMode, for an AnyRes image (3x3 crops, canvas downsampled), two
images, and a 6-frame video, in both layouts. As for LLaVA-1.5 (test_flops_counted.py), SDPA's
math backend is selected on CPU so attention runs as matmuls the counter sees.

What the counter and the analytic model count alike, and why they agree to the FLOP:
- Matmuls only. Biases (Qwen2's q/k/v, every SigLIP linear, the patch convolution) are additions
  the counter's addmm and convolution formulas leave out too; norms, activations, softmax, the
  bilinear resizes of the AnyRes canvas and of video frames, and the gathers that mix merged rows
  into positions are no FLOPs to either.
- The projector runs on the merged encoder rows of every crop and frame (before any mixing).

Where they cannot agree: DyMU's encoder on OneVision follows the reference's batch path (all
crops/frames of a request in one call), so after a merging layer every crop is padded to the
request's longest crop. The projections and MLP skip the padding rows; attention and the matcher
run over the padded blocks, and the counter sees them. The accounting is per request without
padding (docs/plugin.md), so the test checks that the gap is exactly that padded attention and
matching.
"""
from __future__ import annotations

import pytest
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dymu_eval.accounting import encoder_flops, padded_batch_encoder_flops
from dymu_eval.language import DecodeConfig
from dymu_eval.merge import Threshold
from dymu_eval.vlm import llava_onevision as ov
from dymu_eval.vlm.reduction import Reduction
from tests.factories.media import random_image
from tests.factories.reductions import dart_reduction, fastv_reduction, pdrop_reduction, tome_reduction

QUESTION = "what is the color of the object ?"
NEW_TOKENS = 3


@pytest.fixture(scope="module")
def pipe(tiny_onevision):
    model, processor = ov.load_onevision(str(tiny_onevision), "cpu")
    return ov.OnevisionPipeline(model, processor)


@pytest.fixture(scope="module")
def requests(pipe, tiny_videos):
    def request(images=(), videos=()):
        text, _ = ov.simple_prompt(pipe.tokenizer, QUESTION, len(images), len(videos))
        return ov.Request(text, list(images), list(videos))

    return {"anyres": request([random_image(140, 150, 0)]),
            "two": request([random_image(50, 60, 3), random_image(100, 30, 4)]),
            "video": request(videos=[ov.load_video(str(tiny_videos["long"]), 6)])}


def _reduction(pipe, method: str) -> Reduction:
    layers = pipe.runner.num_layers
    return {
        "baseline": lambda: Reduction(),
        "tome": lambda: tome_reduction(pipe.runner, 4, None, "constant", vtu=False),
        "tome+vtu": lambda: tome_reduction(pipe.runner, 4, None, "constant", vtu=True),
        # DToMe as DyMU runs it on OneVision (the reference's batch path); fixed thresholds keep the test fast
        "dymu": lambda: Reduction("dymu", Threshold([0.3] * layers, call=ov.ENCODER_CALL), vtu=True),
        "dymu w/o vtu": lambda: Reduction("dymu", Threshold([0.3] * layers, call=ov.ENCODER_CALL), vtu=False),
        "fastv": lambda: fastv_reduction(1, 0.5, len(pipe.decoder.layers)),
        "pdrop": lambda: pdrop_reduction("1", "0.25", len(pipe.decoder.layers)),
        "dart": lambda: dart_reduction(1, 0.25, len(pipe.decoder.layers)),
    }[method]()


def _counted(pipe, req) -> tuple[float, dict]:
    counter = FlopCounterMode(display=False)
    config = DecodeConfig(max_new_tokens=NEW_TOKENS, eos_token_ids=[], tokenizer=pipe.tokenizer)
    with sdpa_kernel(SDPBackend.MATH), counter:
        _, stats = pipe.generate([req], config)
    return float(counter.get_total_flops()), stats[0]


def _encoder_padding_flops(pipe, req) -> float:
    """The work of the padded rows on the batch path: attention and the matcher of every crop/frame
    run at the request's longest count (the token-wise work skips the padding rows)."""
    counts = pipe.prepare([req]).counts[0]
    vision = pipe.accounting.shape.vision
    matched = counts.encoder_matched[0]
    assert all(m == matched for m in counts.encoder_matched)  # one policy over the crops of one call
    own = sum(encoder_flops(vision, c, m).total for c, m in zip(counts.encoder_counts, counts.encoder_matched))
    return padded_batch_encoder_flops(vision, counts.encoder_counts, matched).total - own


@pytest.fixture
def layout(pipe, request):
    pipe.layout = request.param
    yield request.param
    pipe.layout = "stock"


def test_the_tiny_model_has_what_the_convention_must_handle(pipe):
    """Qwen2's q/k/v carry biases (left out by both sides) and SigLIP has no CLS (no row to protect)."""
    attn = pipe.decoder.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.o_proj.bias is None
    assert not pipe.accounting.shape.vision.has_cls and not pipe.runner.has_cls


@pytest.mark.parametrize("layout", ["stock", "official"], indirect=True)
@pytest.mark.parametrize("media", ["anyres", "video"])
@pytest.mark.parametrize("method", ["baseline", "tome", "tome+vtu", "dymu", "fastv", "pdrop", "dart"])
def test_analytic_flops_match_the_counter(pipe, requests, layout, media, method):
    pipe.reduction = _reduction(pipe, method)
    req = requests[media]
    counted, row = _counted(pipe, req)
    assert row["new_tokens"] == NEW_TOKENS
    padding = _encoder_padding_flops(pipe, req) if method == "dymu" else 0.0
    if method == "dymu":  # DToMe merges each crop its own amount: the batch path pads, see the module docstring
        assert padding > 0
    else:  # merging nothing or a fixed r per layer, every crop keeps the same count: no padding
        assert _encoder_padding_flops(pipe, req) == 0
    # Exact, padding included: the padded share depends on how unevenly the crops merged (a few % here),
    # so no percentage bound is asserted for DyMU.
    assert row["total_flops"] + padding == counted, (method, media, layout, row["total_flops"], counted)


@pytest.mark.parametrize("method", ["baseline", "dymu"])
def test_several_images_match_the_counter(pipe, requests, method):
    pipe.reduction = _reduction(pipe, method)
    counted, row = _counted(pipe, requests["two"])
    assert row["images"] == 2 and row["crops"] > 2  # each image gets its own AnyRes crops
    assert row["total_flops"] + (_encoder_padding_flops(pipe, requests["two"]) if method == "dymu" else 0) == counted


@pytest.mark.parametrize("method", ["baseline", "tome+vtu", "fastv"])
def test_loglikelihood_flops_match_the_counter(pipe, requests, method):
    """Scoring prefills the context and the continuation, and runs the LM head on the continuation."""
    pipe.reduction = _reduction(pipe, method)
    req = requests["anyres"]
    ctx, full = ov.simple_prompt(pipe.tokenizer, QUESTION, 1, 0, "red")
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        _, stats = pipe.loglikelihood([ov.Request(ctx, req.images)], [full])
    assert stats[0]["decode_flops"] == 0
    assert stats[0]["total_flops"] == float(counter.get_total_flops())


def test_stage_flops_and_token_views_move_with_the_counts(pipe, requests):
    """Per crop, the encoder runs at each layer's count; VTU attends at the stock sequence's positions."""
    rows = {}
    for method in ("baseline", "tome", "tome+vtu", "dymu", "dymu w/o vtu", "fastv"):
        pipe.reduction = _reduction(pipe, method)
        rows[method] = _counted(pipe, requests["anyres"])[1]
    base = rows["baseline"]
    crops = base["crops"]
    assert base["encoder_rows"] == 36 * crops == sum(base["encoder_tokens"])  # SigLIP: no CLS row
    assert base["llm_rows"] == base["virtual_positions"] == base["visual_positions"]
    assert base["kv_cache_bytes"] == base["kv_full_bytes"]
    for method in ("tome", "tome+vtu", "dymu", "dymu w/o vtu"):
        r = rows[method]
        assert r["encoder_rows"] == sum(r["encoder_tokens"]) < base["encoder_rows"]
        assert r["encoder_flops"] < base["encoder_flops"] and r["projector_flops"] < base["projector_flops"]
        assert r["llm_rows"] == r["visual_rows"] < base["llm_rows"] and r["prefill_flops"] < base["prefill_flops"]
    for vtu, wo in (("tome+vtu", "tome"), ("dymu", "dymu w/o vtu")):
        assert rows[vtu]["virtual_positions"] == base["virtual_positions"]
        assert rows[vtu]["prefill_attn_flops"] == base["prefill_attn_flops"]
        assert rows[wo]["virtual_positions"] == rows[wo]["llm_rows"]
        assert rows[wo]["prefill_attn_flops"] < base["prefill_attn_flops"]
        assert rows[vtu]["llm_rows"] < rows[vtu]["flop_equiv_tokens"] < base["llm_rows"]
        assert rows[vtu]["kv_cache_bytes"] < rows[vtu]["kv_full_bytes"]
    f = rows["fastv"]
    kept = f["visual_tokens_after"]
    assert f["encoder_flops"] == base["encoder_flops"] and f["prefill_flops"] < base["prefill_flops"]
    assert f["layer_avg_rows"] == pytest.approx((base["llm_rows"] + kept) / 2)
    assert base["ttft_ms"] == pytest.approx(base["encoder_ms"] + base["prefill_ms"])
