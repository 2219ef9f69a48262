"""The LLaVA-OneVision family module in-process: with no reduction it is the unmodified model
(AnyRes images of several aspect ratios incl. the anyres_max downsample, several images, video);
reductions keep the stock layout with fewer distinct rows; bad input names the sample.

The pipeline runs in float64, where "equals the unmodified model" holds to float64 rounding (a bound
from its eps, tests.helpers.numerics) and greedy answers cannot flip on a near-tie; one test checks the
fp32 users run at fp32's bound."""
import numpy as np
import pytest
import torch

from dymu_eval.errors import ConfigError, InputImageError
from dymu_eval.language import DecodeConfig, prefill_logits
from dymu_eval.vlm import anyres
from dymu_eval.vlm import llava_onevision as ov
from dymu_eval.vlm.reduction import Reduction
from tests.factories import TASKS
from tests.factories.media import random_image
from tests.factories.onevision import QUESTION, build_tiny_onevision, onevision_pipeline, onevision_request
from tests.factories.reductions import dart_reduction, fastv_reduction, pdrop_reduction, tome_reduction
from tests.helpers.numerics import SMALL_OPS, assert_loglik_close, assert_rounding_close, forward_ops


@pytest.fixture(scope="module")
def pipe(tiny_onevision):
    return onevision_pipeline(tiny_onevision)


@pytest.fixture(scope="module")
def requests(pipe, tiny_videos):
    video = ov.load_video(str(tiny_videos["long"]), 6)
    return {
        # 3x3 crops: the canvas is downsampled (anyres_max_4)
        "big": onevision_request(pipe, [random_image(140, 150, 0)]),
        "wide": onevision_request(pipe, [random_image(60, 200, 1)]),
        "tall": onevision_request(pipe, [random_image(130, 40, 2)]),
        "two": onevision_request(pipe, [random_image(50, 60, 3), random_image(100, 30, 4)]),
        "video": onevision_request(pipe, videos=[video]),
    }


def _reference_logits(pipe, req):
    _, inputs = pipe._process(req)
    with torch.no_grad():
        return pipe.model(**inputs).logits[0]


def _assert_reference_logits(pipe, logits, req):
    """``logits`` (valid positions) are the unmodified model's on ``req``, up to rounding in the pipeline's dtype."""
    ref = _reference_logits(pipe, req)
    assert_rounding_close(logits, ref, forward_ops(pipe.model.config, ref.shape[0]), req.name)


def _config(pipe, n=5):
    return DecodeConfig(max_new_tokens=n, eos_token_ids=pipe.eos_ids, tokenizer=pipe.tokenizer)


def test_the_big_image_triggers_the_anyres_downsample(pipe, requests, monkeypatch):
    calls = []
    real = anyres.bilinear_mix
    monkeypatch.setattr(anyres, "bilinear_mix", lambda *a: calls.append(a[1:]) or real(*a))
    pipe.reduction = Reduction()
    pipe.prepare([requests["big"]])
    assert calls, "the 3x3-crop image should be downsampled above anyres_max_4"
    pipe.prepare([requests["wide"]])
    assert len(calls) == 1, "the 1x3-crop image stays below anyres_max_4"


@pytest.mark.parametrize("multi_image", ["anyres", "single"])
def test_unreduced_logits_equal_the_unmodified_model(pipe, requests, multi_image):
    pipe.reduction = Reduction()
    pipe.multi_image = multi_image
    try:
        reqs = list(requests.values())
        prep = pipe.prepare(reqs)  # one batch: AnyRes images, two images and a video, left padded
        ours = prefill_logits(pipe.decoder, pipe.lm_head, prep.unique, prep.layout)
        for b, req in enumerate(reqs):
            _assert_reference_logits(pipe, ours[b][prep.layout.valid[b]], req)
        stats = prep.stats
        for s in stats:
            assert s["visual_rows"] == s["visual_positions"] and s["unique_len"] == s["virtual_len"]
        two = stats[3]
        assert two["images"] == 2 and (two["crops"] == 2) == (multi_image == "single")
        if multi_image == "single":
            assert two["visual_positions"] == 2 * (36 + 1)  # one crop and one newline each
        video = stats[4]
        assert video["frames"] == video["distinct_frames"] == 6
        assert video["visual_positions"] == 6 * 9 + 1  # 6x6 patches pooled to 3x3, one newline at the end
    finally:
        pipe.multi_image = "anyres"


def test_a_tower_with_cls_drops_it_like_the_default_strategy(tmp_path_factory, tiny_videos):
    """A tower with a CLS token (the offline micro OneVision's DINOv2, read at layer -2): with no
    reduction the family module drops the CLS as the "default" strategy does, so its logits are the
    unmodified model's on AnyRes images (one downsampled) and on a clip."""
    pipe = onevision_pipeline(build_tiny_onevision(tmp_path_factory.mktemp("ov_cls") / "ov", TASKS, tower="dinov2"))
    assert pipe.runner.has_cls and pipe.model.config.vision_feature_select_strategy == "default"
    reqs = [onevision_request(pipe, [random_image(140, 150, 0)]), onevision_request(pipe, [random_image(60, 200, 1)]),
            onevision_request(pipe, videos=[ov.load_video(str(tiny_videos["long"]), 6)])]
    prep = pipe.prepare(reqs)
    ours = prefill_logits(pipe.decoder, pipe.lm_head, prep.unique, prep.layout)
    for b, req in enumerate(reqs):
        _assert_reference_logits(pipe, ours[b][prep.layout.valid[b]], req)
        assert prep.stats[b]["visual_rows"] == prep.stats[b]["visual_positions"]


def test_unreduced_fp32_logits_are_the_unmodified_models_within_fp32_rounding(tiny_onevision, requests):
    pipe = onevision_pipeline(tiny_onevision, "auto")  # fp32 on CPU, what users run there
    assert pipe.dtype == torch.float32
    reqs = [requests["big"], requests["video"]]
    prep = pipe.prepare(reqs)
    ours = prefill_logits(pipe.decoder, pipe.lm_head, prep.unique, prep.layout)
    for b, req in enumerate(reqs):
        _assert_reference_logits(pipe, ours[b][prep.layout.valid[b]], req)


def test_unreduced_greedy_answers_equal_hf_generate(pipe, requests):
    pipe.reduction = Reduction()
    reqs = [requests[k] for k in ("big", "two", "video", "tall")]
    outs, _ = pipe.generate(reqs, _config(pipe))  # batched
    for req, text in zip(reqs, outs):
        _, inputs = pipe._process(req)
        with torch.no_grad():
            ids = pipe.model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=pipe.eos_ids[0],
                                      eos_token_id=pipe.eos_ids[0])
        assert text == pipe.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(set(outs)) > 1


def test_vtu_on_the_mixed_layout_equals_attention_over_the_expanded_sequence(pipe, requests):
    from dymu_eval.language import virtual_attention
    from dymu_eval.language.state import Segment, Side
    from tests.language.lang_helpers import AttentionStub, reference_attention

    pipe.reduction = tome_reduction(pipe.runner, 4, None, "constant", vtu=True)
    prep = pipe.prepare([requests["video"], requests["big"]])
    video, image = prep.stats
    assert image["visual_rows"] < image["visual_positions"] and video["visual_rows"] <= video["visual_positions"]
    assert max(video["encoder_tokens"]) < 36
    layout, attn = prep.layout, pipe.decoder.layers[0].self_attn
    h = pipe.decoder.layers[0].input_layernorm(prep.unique)
    b, n, _ = h.shape
    heads, kv_heads, d = pipe.decoder.config.num_attention_heads, pipe.decoder.config.num_key_value_heads, 16
    with torch.no_grad():
        q = attn.q_proj(h).view(b, n, heads, d).transpose(1, 2)  # Qwen2: q/k/v carry biases
        k = attn.k_proj(h).view(b, n, kv_heads, d).transpose(1, 2)
        v = attn.v_proj(h).view(b, n, kv_heads, d).transpose(1, 2)
        side = Side.from_layout(layout, pipe.decoder.rotary_emb, q)
        got = virtual_attention(AttentionStub(), q, k, v, Segment(range(1), side, side), scaling=d ** -0.5)
        want = reference_attention(q, k, v, layout, pipe.decoder.rotary_emb)
    valid = layout.valid[:, None, :, None].expand_as(want)
    assert_rounding_close(got[valid], want[valid], SMALL_OPS + layout.virtual_len)  # + the softmax sum


@pytest.mark.parametrize("method", ["tome", "fastv", "pdrop", "dart", "dymu_like"])
def test_reductions_batched_equal_one_by_one_with_fewer_rows(pipe, requests, method):
    """Mixed lengths in one batch (a big AnyRes image, two images, a video); greedy decoding runs on the
    cache, so equal answers also say the cached steps agree across the two ways."""
    depth = len(pipe.decoder.layers)
    if method == "tome":
        pipe.reduction = tome_reduction(pipe.runner, 4, None, "constant", vtu=True)
    elif method == "fastv":
        pipe.reduction = fastv_reduction(1, 0.5, depth)
    elif method == "pdrop":
        pipe.reduction = pdrop_reduction("1", "0.25", depth)
    elif method == "dart":
        pipe.reduction = dart_reduction(1, 0.25, depth)
    else:  # DToMe with thresholds below every score: merges as much as each layer allows
        from dymu_eval.merge import Threshold

        pipe.reduction = Reduction("dymu", Threshold([-1.0] * pipe.runner.num_layers, call=ov.ENCODER_CALL), vtu=True)
    reqs = [requests["big"], requests["two"], requests["video"]]
    outs, stats = pipe.generate(reqs, _config(pipe))
    single = [pipe.generate([r], _config(pipe)) for r in reqs]
    assert outs == [o[0][0] for o in single]
    for s, (_, one) in zip(stats, single):
        assert s["visual_tokens_after"] == one[0]["visual_tokens_after"]
        assert s["visual_rows"] <= s["visual_positions"]
        if method in ("fastv", "pdrop", "dart"):  # pruned in the LLM: every position enters it
            assert s["visual_tokens_after"] < s["visual_positions"] and s["visual_rows"] == s["visual_positions"]
            assert s["stages"] == one[0]["stages"]
        else:
            assert max(s["encoder_tokens"]) < 36 and s["unique_len"] <= s["virtual_len"]
            # an image shares its newlines; pooled video cells share a row once whole cells merge
            if s["images"] or method == "dymu_like":
                assert s["visual_rows"] < s["visual_positions"]


def test_without_vtu_the_llm_sees_the_unique_rows_only(pipe, requests):
    pipe.reduction = tome_reduction(pipe.runner, 4, None, "constant", vtu=False)
    prep = pipe.prepare([requests["video"]])
    assert prep.layout.is_identity and prep.layout.virtual_len == prep.stats[0]["unique_len"]
    assert int(prep.image_mask.sum()) == prep.stats[0]["visual_rows"]


def test_short_video_repeats_frames_like_llava_hf(tiny_videos, pipe):
    video = ov.load_video(str(tiny_videos["short"]), 8)
    assert video.frames.shape[0] == 8 and video.distinct_frames == 3
    assert ov.frame_indices(3, 8).tolist() == np.linspace(0, 2, 8, dtype=int).tolist()
    pipe.reduction = Reduction()
    prep = pipe.prepare([onevision_request(pipe, videos=[video])])
    assert prep.stats[0]["frames"] == 8 and prep.stats[0]["distinct_frames"] == 3


def test_bad_video_and_arguments_name_the_sample(tiny_videos, tmp_path, tiny_llava):
    with pytest.raises(InputImageError, match="mvbench doc 3.*does not exist"):
        ov.load_video(str(tmp_path / "missing.mp4"), 4, name="mvbench doc 3")
    with pytest.raises(InputImageError, match="mvbench doc 4.*corrupt.mp4"):
        ov.load_video(str(tiny_videos["corrupt"]), 4, name="mvbench doc 4")
    with pytest.raises(ConfigError, match="doc 5.*max_frames_num=0"):
        ov.load_video(str(tiny_videos["long"]), 0, name="doc 5")
    with pytest.raises(ConfigError, match="is a llava model.*LlavaOnevisionForConditionalGeneration"):
        ov.load_onevision(str(tiny_llava), "cpu")


def test_placeholder_count_must_match_media(pipe, requests):
    req = requests["video"]
    with pytest.raises(ConfigError, match="sample: the prompt has 0 <image>"):
        pipe.prepare([ov.Request(req.prompt, [random_image(50, 50, 9)], req.videos, name="sample")])


def test_calibrated_thresholds_on_base_crops_drive_dymu(pipe, requests, tiny_onevision, tmp_path):
    """Calibrate on the processor's 48x48 base crops from the folder (tower only), then run DyMU
    with that file through the threshold cache's checks: fewer distinct rows, same layout."""
    from dymu_eval.calibrate import CalibrationSettings, calibrate
    from dymu_eval.images import FolderImages
    from dymu_eval.merge import merges_per_layer
    from dymu_eval.thresholds import save_record
    from dymu_eval.vision.loading import load_runner
    from dymu_eval.vision.preprocess import ProcessorPreprocess
    from tests.factories.reductions import dymu_reduction

    runner = load_runner(tiny_onevision)
    assert runner.default_layers_run == runner.num_layers == 3 and not runner.has_cls  # layer -1, no CLS
    r = runner.r_for_level("low")
    preprocess = ProcessorPreprocess(pipe.processor.image_processor, runner.image_size)
    assert tuple(preprocess([random_image(140, 150, 0)]).shape) == (1, 3, 48, 48)
    record = calibrate(runner, FolderImages(TASKS / "dymu_offline" / "images", name="tiny_offline"),
                       merges_per_layer(r, runner.num_layers),
                       CalibrationSettings(batch_size=8, level="low", r=r, stats_images=0, progress=False),
                       preprocess=preprocess, encoder_name=str(tiny_onevision))
    path = save_record(record, tmp_path / "ov_low.json")
    pipe.reduction = dymu_reduction(pipe.model, pipe.runner, [str(tiny_onevision)], str(path), "low", None,
                                    "constant", vtu=True, call=ov.ENCODER_CALL)
    reqs = [requests["big"], requests["video"]]
    _, stats = pipe.generate(reqs, _config(pipe))
    image, video = stats
    assert image["visual_rows"] < image["visual_positions"] and image["unique_len"] < image["virtual_len"]
    assert video["visual_rows"] <= video["visual_positions"]  # pooled cells share a row only when whole cells merge
    for s in stats:
        assert sum(s["encoder_tokens"]) < 36 * len(s["encoder_tokens"])


def test_loglikelihood_equals_the_unmodified_model(pipe, requests):
    pipe.reduction = Reduction()
    reqs, fulls, ctxs = [], [], []
    for key, answer in (("wide", "red"), ("video", "no")):
        req = requests[key]
        ctx, full = ov.simple_prompt(pipe.tokenizer, QUESTION, len(req.images), len(req.videos), answer)
        reqs.append(ov.Request(ctx, req.images, req.videos, name=key))
        fulls.append(full)
        ctxs.append(ctx)
    scores, _ = pipe.loglikelihood(reqs, fulls)
    for (logp, greedy), req, ctx, full in zip(scores, reqs, ctxs, fulls):
        n_ctx = pipe._process(req, ctx)[0].numel()
        ids, inputs = pipe._process(req, full)
        with torch.no_grad():
            logits = pipe.model(**inputs).logits[0]
        target = ids[n_ctx:]
        logprobs = torch.log_softmax(logits[n_ctx - 1:-1], -1)
        want = logprobs.gather(1, target[:, None]).sum()
        assert_loglik_close(logp, float(want), logprobs, forward_ops(pipe.model.config, logits.shape[0]))
        assert greedy == bool((logits[n_ctx - 1:-1].argmax(-1) == target).all())


def test_official_layout_is_the_dymu_codes_sequence(pipe, requests):
    """layout=official: every crop (base first) and every unpooled frame flattened, no unpadding,
    newlines only after a lone crop and at the end of a video; with no reduction the LLM sees the
    projected tower outputs in that order."""
    pipe.reduction = Reduction()
    pipe.layout = "official"
    try:
        reqs = [requests["big"], requests["video"]]
        prep = pipe.prepare(reqs)
        ours = prefill_logits(pipe.decoder, pipe.lm_head, prep.unique, prep.layout)
        inner = pipe.model.model
        for b, req in enumerate(reqs):
            ids, out = pipe._process(req)
            pixels = out["pixel_values"][0] if req.images else out["pixel_values_videos"][0]
            with torch.no_grad():
                feats = inner.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]
                feats = inner.multi_modal_projector(feats).flatten(0, 1)
                if req.videos:
                    feats = torch.cat([feats, inner.image_newline[None]])
                token = pipe.image_token_id if req.images else pipe.video_token_id
                embeds = pipe.embed(ids).clone()
                embeds[ids == token] = feats
                ref = pipe.lm_head(pipe.decoder(inputs_embeds=embeds[None]).last_hidden_state)[0]
            assert_rounding_close(ours[b][prep.layout.valid[b]], ref, forward_ops(pipe.model.config, ref.shape[0]))
            assert prep.stats[b]["visual_positions"] == feats.shape[0] == prep.stats[b]["visual_rows"]
        assert prep.stats[0]["visual_positions"] == 10 * 36 and prep.stats[1]["visual_positions"] == 6 * 36 + 1
        pipe.reduction = tome_reduction(pipe.runner, 4, None, "constant", vtu=True)
        for s in pipe.prepare(reqs).stats:
            assert s["visual_rows"] == sum(s["encoder_tokens"]) + (1 if s["frames"] else 0) < s["visual_positions"]
    finally:
        pipe.layout = "stock"


def test_text_only_request_beside_an_image(pipe, requests):
    pipe.reduction = Reduction()
    text, _ = ov.simple_prompt(pipe.tokenizer, QUESTION, 0, 0)
    reqs = [ov.Request(text, name="text"), requests["tall"]]
    prep = pipe.prepare(reqs)
    ours = prefill_logits(pipe.decoder, pipe.lm_head, prep.unique, prep.layout)
    for b, req in enumerate(reqs):
        _assert_reference_logits(pipe, ours[b][prep.layout.valid[b]], req)
    assert prep.stats[0]["visual_positions"] == prep.stats[0]["crops"] == 0


def test_projector_flops_count_the_merged_rows_it_runs_on(pipe, requests):
    """OneVision projects merged encoder rows (before any mixing), so its FLOPs follow them."""
    from torch.utils.flop_counter import FlopCounterMode

    pipe.reduction = tome_reduction(pipe.runner, 4, None, "constant", vtu=True)
    _, stats = pipe.generate([requests["big"], requests["video"]], _config(pipe, 2))
    for s in stats:
        rows = sum(s["encoder_tokens"])
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            pipe.projector(torch.zeros(rows, pipe.runner.adapter.config.hidden_size, dtype=pipe.dtype))
        assert s["projector_flops"] == counter.get_total_flops() > 0
        assert s["encoder_rows"] == rows and s["llm_rows"] == s["visual_rows"]
