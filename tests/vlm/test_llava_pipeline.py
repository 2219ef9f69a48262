"""The LLaVA family module in-process: the unreduced pipeline is the unmodified model, and each
reduction changes exactly what it should (token counts, layout lengths).

The pipeline runs in float64, where "equals the unmodified model" holds to float64 rounding (a bound
from its eps, tests.helpers.numerics) and greedy answers cannot flip on a near-tie; one test checks the
fp32 users run at fp32's bound."""
import json

import pytest
import torch

from dymu_eval.errors import ConfigError
from dymu_eval.language import DecodeConfig
from dymu_eval.vlm import llava
from dymu_eval.vlm.reduction import (
    Reduction,
    dymu_reduction,
    fastv_reduction,
    pool_reduction,
    random_reduction,
    tome_reduction,
    visionzip_reduction,
)
from tests.factories import TASKS
from tests.helpers.numerics import assert_loglik_close, assert_rounding_close, forward_ops

ROWS = [json.loads(line) for line in (TASKS / "dymu_offline" / "gqa.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pipe(tiny_llava):
    model, processor = llava.load_llava(str(tiny_llava), "cpu", "float64")
    return llava.LlavaPipeline(model, processor)


@pytest.fixture(scope="module")
def pipe32(tiny_llava):
    model, processor = llava.load_llava(str(tiny_llava), "cpu")  # auto: fp32 on CPU, what users run there
    assert model.dtype == torch.float32
    return llava.LlavaPipeline(model, processor)


def _requests(pipe, rows, n_images=1):
    reqs = []
    for i, row in enumerate(rows):
        img = llava.Image.open(TASKS / "dymu_offline" / row["image_file"]).convert("RGB")
        text, _ = llava.simple_prompt(pipe.tokenizer, row["question"], n_images)
        reqs.append(llava.Request(text, [img] * n_images, name=f"sample {i}"))
    return reqs


def _config(pipe, n=6):
    return DecodeConfig(max_new_tokens=n, eos_token_ids=pipe.eos_ids, tokenizer=pipe.tokenizer)


def _hf_generate(pipe, req, n=6):
    x = pipe.processor(images=req.images, text=req.prompt, return_tensors="pt")
    with torch.no_grad():
        out = pipe.model.generate(**x, max_new_tokens=n, do_sample=False, pad_token_id=pipe.eos_ids[0],
                                  eos_token_id=pipe.eos_ids[0])
    return pipe.tokenizer.decode(out[0, x["input_ids"].shape[1]:], skip_special_tokens=True)


def test_unreduced_batch_equals_unmodified_model(pipe):
    pipe.reduction = Reduction()
    reqs = _requests(pipe, ROWS[:4])
    assert len({len(pipe.tokenizer(r.prompt)["input_ids"]) for r in reqs}) > 1, "want different prompt lengths"
    outs, stats = llava.generate(pipe, reqs, _config(pipe))
    assert outs == [_hf_generate(pipe, r) for r in reqs]
    assert len(set(outs)) > 1, "the tiny model should answer differently per sample"
    for s in stats:
        assert s["visual_tokens_before"] == s["visual_tokens_after"] == 64
        assert s["unique_len"] == s["virtual_len"] and s["new_tokens"] == 6
        assert s["encoder_ms"] > 0 and s["prefill_ms"] > 0 and 0 < s["image_bytes_per_pixel"] < 3


def test_unreduced_prefill_logits_equal_unmodified_model(pipe):
    pipe.reduction = Reduction()
    _assert_logits_equal_unmodified(pipe, _requests(pipe, ROWS[4:7]))


def test_unreduced_fp32_logits_are_the_unmodified_models_within_fp32_rounding(pipe32):
    _assert_logits_equal_unmodified(pipe32, _requests(pipe32, ROWS[4:7]))


def _assert_logits_equal_unmodified(pipe, reqs):
    """Prefill logits of the pipeline (valid positions) equal the unmodified model's, up to rounding in the
    pipeline's dtype."""
    from dymu_eval.language import prefill_logits

    prep = pipe.prepare(reqs)
    ours = prefill_logits(pipe.decoder, pipe.lm_head, prep.unique, prep.layout)
    for b, req in enumerate(reqs):
        x = pipe.processor(images=req.images, text=req.prompt, return_tensors="pt")
        with torch.no_grad():
            ref = pipe.model(**x).logits[0]
        assert_rounding_close(ours[b][prep.layout.valid[b]], ref, forward_ops(pipe.model.config, ref.shape[0]),
                              req.name)
    return prep


def test_tome_gives_exactly_the_predicted_count_and_batched_equals_single(pipe):
    r = 5
    pipe.reduction = tome_reduction(pipe.runner, r, None, "constant", vtu=True)
    reqs = _requests(pipe, ROWS[:3])
    outs, stats = llava.generate(pipe, reqs, _config(pipe))
    layers = pipe.runner.default_layers_run
    for s in stats:  # r merges in each of the layers LLaVA runs (well under the per-layer cap)
        assert s["visual_tokens_after"] == 64 - r * layers
        assert s["unique_len"] == s["virtual_len"] - r * layers
    single = [llava.generate(pipe, [q], _config(pipe))[0][0] for q in reqs]
    assert outs == single


def test_dymu_thresholds_reduce_tokens_per_image(pipe, tiny_thresholds):
    pipe.reduction = dymu_reduction(pipe.model, pipe.runner, [], str(tiny_thresholds), "low", None, "constant", True)
    reqs = _requests(pipe, ROWS[:6])
    outs, stats = llava.generate(pipe, reqs, _config(pipe, 3))
    for s in stats:
        assert s["visual_tokens_after"] < s["visual_tokens_before"] == 64
        assert s["unique_len"] < s["virtual_len"]
    assert len({s["visual_tokens_after"] for s in stats}) > 1, "thresholds give each image its own count"
    # a batch mixing sequences of different unique lengths answers as each request alone
    single = [llava.generate(pipe, [q], _config(pipe, 3)) for q in reqs]
    assert outs == [o[0][0] for o in single]
    assert [s["visual_tokens_after"] for s in stats] == [o[1][0]["visual_tokens_after"] for o in single]


def test_dymu_refuses_thresholds_of_another_merge_order(pipe, tiny_thresholds):
    from dymu_eval.errors import ThresholdCacheError

    with pytest.raises(ThresholdCacheError, match="merge_order=reference but merge_order=position"):
        dymu_reduction(pipe.model, pipe.runner, [], str(tiny_thresholds), "low", None, "constant", True,
                       merge_order="position")
    red = dymu_reduction(pipe.model, pipe.runner, [], str(tiny_thresholds), "low", None, "constant", True)
    assert red.policy.merge_order == "reference" and red.policy.call == llava.ENCODER_CALL == "per_image"


def test_without_vtu_the_sequence_is_the_unique_rows(pipe):
    pipe.reduction = tome_reduction(pipe.runner, 5, None, "constant", vtu=False)
    reqs = _requests(pipe, ROWS[:2])
    outs, stats = llava.generate(pipe, reqs, _config(pipe))
    assert all(isinstance(o, str) for o in outs)
    for s in stats:
        assert s["virtual_len"] == s["unique_len"] and s["visual_tokens_after"] == 49


def test_fastv_keeps_the_predicted_number_and_ratio_zero_is_the_baseline(pipe):
    reqs = _requests(pipe, ROWS[:2])
    pipe.reduction = Reduction()
    base, _ = llava.generate(pipe, reqs, _config(pipe))
    pipe.reduction = fastv_reduction(1, 0.0)
    assert llava.generate(pipe, reqs, _config(pipe))[0] == base
    pipe.reduction = fastv_reduction(1, 0.75)
    outs, stats = llava.generate(pipe, reqs, _config(pipe))
    assert [s["visual_tokens_after"] for s in stats] == [16, 16]
    assert all(s["unique_len"] == s["virtual_len"] for s in stats)


def test_several_images_in_one_request_match_the_unmodified_model(pipe):
    pipe.reduction = Reduction()
    reqs = _requests(pipe, ROWS[:2], n_images=2)
    outs, stats = llava.generate(pipe, reqs, _config(pipe))
    assert outs == [_hf_generate(pipe, r) for r in reqs]
    assert [s["visual_tokens_before"] for s in stats] == [128, 128]
    pipe.reduction = tome_reduction(pipe.runner, 5, None, "constant", vtu=True)
    _, stats = llava.generate(pipe, reqs, _config(pipe))
    assert [s["visual_tokens_after"] for s in stats] == [98, 98]


def test_placeholder_count_must_match_images(pipe):
    pipe.reduction = Reduction()
    reqs = _requests(pipe, ROWS[:1])
    reqs[0].images = reqs[0].images * 2
    with pytest.raises(ConfigError, match="sample 0.*1 <image> placeholder.*2 image"):
        pipe.prepare(reqs)


def test_loglikelihood_equals_the_unmodified_model(pipe):
    pipe.reduction = Reduction()
    reqs = _requests(pipe, ROWS[:2])
    ctxs, fulls = zip(*(llava.simple_prompt(pipe.tokenizer, r["question"], 1, r["answer"]) for r in ROWS[:2]))
    scores, stats = llava.loglikelihood(pipe, reqs, list(fulls))
    for (logp, greedy), req, ctx, full in zip(scores, reqs, ctxs, fulls):
        n_ctx = pipe.processor(images=req.images, text=ctx, return_tensors="pt")["input_ids"].shape[1]
        x = pipe.processor(images=req.images, text=full, return_tensors="pt")
        with torch.no_grad():
            logits = pipe.model(**x).logits[0].log_softmax(-1)
        target = x["input_ids"][0, n_ctx:]
        ref = logits[n_ctx - 1:-1].gather(1, target[:, None]).sum()
        assert_loglik_close(logp, float(ref), logits[n_ctx - 1:-1], forward_ops(pipe.model.config, logits.shape[0]))
        assert greedy == bool((logits[n_ctx - 1:-1].argmax(-1) == target).all())


@pytest.mark.parametrize("make", [
    lambda runner: random_reduction(runner, 1.0, 0),  # every patch kept, at its own position
    lambda runner: pool_reduction(runner, 1, vtu=False),  # 1x1 blocks
    lambda runner: pool_reduction(runner, 1, vtu=True),
    lambda runner: visionzip_reduction(runner, 64, 1, vtu=True),  # CLS + 63 dominant + 1 lone contextual
], ids=["random_all", "pool_1", "pool_1_vtu", "visionzip_all_vtu"])
def test_selections_that_keep_every_patch_are_the_unmodified_model(pipe, make):
    pipe.reduction = make(pipe.runner)
    prep = _assert_logits_equal_unmodified(pipe, _requests(pipe, ROWS[4:6]))
    assert all(s["visual_tokens_after"] == 64 for s in prep.stats)


def test_random_keeps_its_tokens_at_their_original_positions(pipe):
    pipe.reduction = random_reduction(pipe.runner, 16, seed=2)
    reqs = _requests(pipe, ROWS[:2])
    prep = pipe.prepare(reqs)
    enc, _ = pipe.encode(torch.cat([pipe._process(r)[1] for r in reqs]))
    for b, ids in enumerate(prep.input_ids):
        start = int((ids == pipe.image_token_id).nonzero()[0, 0])
        kept = (enc.patch_to_token[b, 1:] >= 0).nonzero()[:, 0]
        pos = prep.layout.positions[b][prep.layout.valid[b]]
        image = prep.image_mask[b][prep.layout.valid[b]]
        assert pos[image].tolist() == (start + kept).tolist()
        assert pos[~image].tolist() == list(range(start)) + list(range(start + 64, ids.numel()))
        assert prep.stats[b]["visual_tokens_after"] == 16 and prep.stats[b]["virtual_len"] == ids.numel() - 48


@pytest.mark.parametrize("make, tokens", [
    (lambda runner: random_reduction(runner, 0.25, 0), 16),
    (lambda runner: pool_reduction(runner, 2, vtu=True), 16),
    (lambda runner: pool_reduction(runner, 4, vtu=False), 4),
    (lambda runner: visionzip_reduction(runner, 10, 4, vtu=False), 14),  # CLS + 9 patches + 4 contextual
    (lambda runner: visionzip_reduction(runner, 10, 4, vtu=True), 13),  # the CLS row has no position with VTU
], ids=["random", "pool_vtu", "pool", "visionzip", "visionzip_vtu"])
def test_selections_give_the_predicted_count_and_batched_equals_single(pipe, make, tokens):
    pipe.reduction = make(pipe.runner)
    reqs = _requests(pipe, ROWS[:3])
    outs, stats = llava.generate(pipe, reqs, _config(pipe))
    assert [s["visual_tokens_after"] for s in stats] == [tokens] * 3
    single = [llava.generate(pipe, [q], _config(pipe))[0][0] for q in reqs]
    assert outs == single


def test_vtu_is_refused_where_tokens_were_dropped(pipe):
    red = random_reduction(pipe.runner, 16, 0)
    red.vtu = True  # what parse_model_args refuses up front; the pipeline refuses it too
    pipe.reduction = red
    with pytest.raises(ConfigError, match="method=random drops visual tokens"):
        pipe.prepare(_requests(pipe, ROWS[:1]))
