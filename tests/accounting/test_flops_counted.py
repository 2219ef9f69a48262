"""Analytic FLOPs equal what ``torch.utils.flop_counter`` counts around the real forward, for every method.

The tiny LLaVA runs one request (batch 1, so no padding) through the family module under
FlopCounterMode. Two things the counter would otherwise see differently, and how they are handled:
- On CPU, SDPA's fused kernel (``_scaled_dot_product_flash_attention_for_cpu``) is not in the
  counter's registry, so its attention would count as 0; the test selects SDPA's math backend,
  which runs the same products as matmuls the counter does count.
- Both sides count matmuls only (norms, softmax, gathers and elementwise work are not FLOPs to
  either), so they agree to the FLOP here; the 1% bound leaves room for
  small matmuls outside the model (e.g. a RoPE implementation computing ``inv_freq @ positions``).
"""
from __future__ import annotations

import pytest
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dymu_eval.language import DecodeConfig
from dymu_eval.vlm import llava
from dymu_eval.vlm.reduction import Reduction
from tests.factories import TASKS
from tests.factories.reductions import (
    dart_reduction,
    dymu_reduction,
    fastv_reduction,
    pdrop_reduction,
    pool_reduction,
    random_reduction,
    tome_reduction,
    visionzip_reduction,
)

QUESTION = "What color is the shape in the image?"
IMAGE = TASKS / "dymu_offline" / "images" / "photo_astronaut.jpg"


@pytest.fixture(scope="module")
def pipe(tiny_llava):
    model, processor = llava.load_llava(str(tiny_llava), "cpu")
    return llava.LlavaPipeline(model, processor)


def _reductions(pipe, thresholds):
    return {
        "baseline": Reduction(),
        "tome": tome_reduction(pipe.runner, 6, None, "constant", vtu=False),
        "tome+vtu": tome_reduction(pipe.runner, 6, None, "constant", vtu=True),
        "dymu": dymu_reduction(pipe.model, pipe.runner, [], str(thresholds), "low", None, "constant", True),
        "dymu w/o vtu": dymu_reduction(pipe.model, pipe.runner, [], str(thresholds), "low", None, "constant", False),
        "fastv": fastv_reduction(1, 0.75, len(pipe.decoder.layers)),
        "pdrop": pdrop_reduction("1", "0.25", len(pipe.decoder.layers)),
        "dart": dart_reduction(1, 16, len(pipe.decoder.layers)),
        "random": random_reduction(pipe.runner, 16, 0),
        "pool+vtu": pool_reduction(pipe.runner, 2, vtu=True),
        "visionzip": visionzip_reduction(pipe.runner, 10, 4, vtu=False),
    }


def _counted(pipe, new_tokens: int) -> tuple[float, dict]:
    img = llava.Image.open(IMAGE).convert("RGB")
    text, _ = llava.simple_prompt(pipe.tokenizer, QUESTION, 1)
    config = DecodeConfig(max_new_tokens=new_tokens, eos_token_ids=[], tokenizer=pipe.tokenizer)
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        _, stats = pipe.generate([llava.Request(text, [img])], config)
    return float(counter.get_total_flops()), stats[0]


@pytest.mark.parametrize("method", ["baseline", "tome", "tome+vtu", "dymu", "dymu w/o vtu", "fastv", "pdrop", "dart",
                                    "random", "pool+vtu", "visionzip"])
def test_analytic_flops_match_the_counter(pipe, tiny_thresholds, method):
    pipe.reduction = _reductions(pipe, tiny_thresholds)[method]
    counted, row = _counted(pipe, new_tokens=4)
    assert row["new_tokens"] == 4
    analytic = row["total_flops"]
    assert analytic == counted, (method, analytic, counted)


def test_stage_flops_move_with_the_token_counts(pipe, tiny_thresholds):
    rows = {}
    for method, reduction in _reductions(pipe, tiny_thresholds).items():
        pipe.reduction = reduction
        rows[method] = _counted(pipe, new_tokens=2)[1]
    base = rows["baseline"]
    assert base["llm_rows"] == base["virtual_positions"] == 64 and base["encoder_rows"] == 65
    for method in ("tome", "tome+vtu", "dymu", "dymu w/o vtu"):
        r = rows[method]
        assert r["llm_rows"] < 64 and r["encoder_flops"] < base["encoder_flops"]
        assert r["prefill_flops"] < base["prefill_flops"]
    # VTU attends over the virtual length: prefill attention as the baseline's; without VTU it falls
    for vtu, wo in (("tome+vtu", "tome"), ("dymu", "dymu w/o vtu")):
        assert rows[vtu]["prefill_attn_flops"] == base["prefill_attn_flops"]
        assert rows[wo]["prefill_attn_flops"] < base["prefill_attn_flops"]
        assert rows[vtu]["virtual_positions"] == 64 and rows[wo]["virtual_positions"] == rows[wo]["llm_rows"]
        assert rows[vtu]["llm_rows"] < rows[vtu]["flop_equiv_tokens"] < 64
    # FastV: the encoder is untouched, the prefill falls after layer K, "tokens" are a layer average
    f = rows["fastv"]
    assert f["encoder_flops"] == base["encoder_flops"] and f["prefill_flops"] < base["prefill_flops"]
    assert f["layer_avg_rows"] == pytest.approx((64 + 16) / 2)
    assert f["kv_cache_bytes"] < base["kv_cache_bytes"] == base["kv_full_bytes"]
    assert rows["dymu"]["kv_cache_bytes"] < rows["dymu"]["kv_full_bytes"]
    assert base["peak_mem_bytes"] is None and "CUDA" in base["memory_note"]
    assert base["ttft_ms"] == pytest.approx(base["encoder_ms"] + base["prefill_ms"])
    # selections after the encoder: the blocks run unreduced, the encoder output and the LLM get the budget
    selections = (("random", 17, 16, 16), ("pool+vtu", 17, 16, 64), ("visionzip", 14, 14, 14))
    for method, rows_out, llm, positions in selections:
        r = rows[method]
        assert r["encoder_flops"] >= base["encoder_flops"] and r["encoder_rows"] == rows_out
        assert (r["llm_rows"], r["virtual_positions"]) == (llm, positions)
        assert r["prefill_flops"] < base["prefill_flops"]


@pytest.mark.parametrize("method", ["baseline", "dymu", "fastv", "pdrop", "dart"])
def test_loglikelihood_flops_match_the_counter(pipe, tiny_thresholds, method):
    """Scoring prefills the context and the continuation, and runs the LM head on the continuation."""
    pipe.reduction = _reductions(pipe, tiny_thresholds)[method]
    img = llava.Image.open(IMAGE).convert("RGB")
    ctx, full = llava.simple_prompt(pipe.tokenizer, QUESTION, 1, "the shape is red")
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        _, stats = pipe.loglikelihood([llava.Request(ctx, [img])], [full])
    assert stats[0]["decode_flops"] == 0
    assert stats[0]["total_flops"] == pytest.approx(float(counter.get_total_flops()), rel=0.01)


@pytest.mark.parametrize("method", ["baseline", "dymu", "fastv"])
def test_kv_cache_bytes_equal_the_real_cache(pipe, tiny_thresholds, method):
    """The recorded KV bytes are what the loop's cache holds after the prefill (unique rows, kept rows after K)."""
    from transformers import DynamicCache

    from dymu_eval.language import prefill

    pipe.reduction = _reductions(pipe, tiny_thresholds)[method]
    img = llava.Image.open(IMAGE).convert("RGB")
    text, _ = llava.simple_prompt(pipe.tokenizer, QUESTION, 1)
    req = llava.Request(text, [img])
    _, stats = pipe.generate([req], DecodeConfig(max_new_tokens=1, eos_token_ids=[], tokenizer=pipe.tokenizer))
    prepared = pipe.prepare([req])
    cache = DynamicCache(config=pipe.decoder.config)
    prefill(pipe.decoder, prepared.unique, prepared.layout, pipe._pruning(prepared), cache)
    held = sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
               for layer in cache.layers)
    assert stats[0]["kv_cache_bytes"] == held
    full = stats[0]["kv_full_bytes"]
    assert (held == full) if method == "baseline" else (held < full)
