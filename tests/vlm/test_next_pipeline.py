"""The LLaVA-NeXT family module in-process: with no reduction it is the unmodified model on images of
every grid shape (1x2, 2x1, 2x2, 3x1, 1x3), several images and text-only requests; its layout is
``pack_image_features``'s, position for position; VTU over it equals attention over the expanded
sequence; bad checkpoints, processors and thresholds are named in one line.

The pipeline runs in float64, where "equals the unmodified model" holds to float64's rounding bound
(tests.helpers.numerics); one test checks the fp32 users run at fp32's bound."""
import logging

import pytest
import torch

from dymu_eval.errors import ConfigError, ThresholdCacheError
from dymu_eval.language import DecodeConfig, prefill_logits
from dymu_eval.vlm import llava_next as nx
from dymu_eval.vlm.anyres import NEWLINE
from dymu_eval.vlm.reduction import Reduction, reduction_for
from tests.factories import TASKS
from tests.factories.media import random_image
from tests.factories.next import PER_CROP, QUESTION, build_tiny_next, next_pipeline, next_request
from tests.helpers.numerics import SMALL_OPS, assert_loglik_close, assert_rounding_close, forward_ops

# (H, W) -> the grid select_best_resolution picks among the scaled pinpoints
SHAPES = {"2x2": (48, 64), "2x2_portrait": (64, 48), "1x3": (40, 120), "3x1": (120, 40), "1x2": (30, 30),
          "2x1": (60, 30), "square_big": (100, 100)}


@pytest.fixture(scope="module")
def pipe(tiny_next):
    return next_pipeline(tiny_next)


@pytest.fixture(scope="module")
def requests(pipe):
    reqs = {k: next_request(pipe, [random_image(h, w, i)], name=k) for i, (k, (h, w)) in enumerate(SHAPES.items())}
    reqs["two"] = next_request(pipe, [random_image(50, 60, 7), random_image(100, 30, 8)], name="two")
    return reqs


@pytest.fixture(autouse=True)
def _unreduced(pipe):
    pipe.reduction = Reduction()
    yield
    pipe.reduction = Reduction()


def _reference_logits(pipe, req):
    _, inputs = pipe._process(req)
    with torch.no_grad():
        return pipe.model(**inputs).logits[0]


def _config(pipe, n=5):
    return DecodeConfig(max_new_tokens=n, eos_token_ids=pipe.eos_ids, tokenizer=pipe.tokenizer)


def test_every_grid_shape_occurs_and_positions_follow_the_processor(pipe, requests):
    grids = {tuple(pipe._crops(pipe._process(r)[1])[1][0]["grid"]) for r in requests.values()}
    assert {(1, 2), (2, 1), (2, 2), (3, 1), (1, 3)} <= grids
    stats = pipe.prepare(list(requests.values())).stats
    for req, s in zip(requests.values(), stats):
        ids = pipe._process(req)[0]
        assert s["visual_positions"] == int((ids == pipe.image_token_id).sum()) == sum(s["image_positions"])
        assert s["crop_tokens"] == [PER_CROP] * s["crops"] and s["paper_crops"] == 5
        assert s["paper_visual_tokens"] == 5 * PER_CROP  # the papers' 5 x 576 = 2880, scaled


def test_unreduced_logits_equal_the_unmodified_model(pipe, requests):
    text, _ = nx.simple_prompt(pipe.tokenizer, QUESTION, 0)
    reqs = list(requests.values()) + [nx.Request(text, [], name="text only")]
    prep = pipe.prepare(reqs)  # one batch: every grid shape, two images, no image; left padded
    ours = prefill_logits(pipe.decoder, pipe.lm_head, prep.unique, prep.layout)
    for b, req in enumerate(reqs):
        ref = _reference_logits(pipe, req)
        assert_rounding_close(ours[b][prep.layout.valid[b]], ref, forward_ops(pipe.model.config, ref.shape[0]),
                              req.name)
        s = prep.stats[b]
        assert s["visual_rows"] == s["visual_positions"] and s["unique_len"] == s["virtual_len"]
        assert s["image_rows"] == s["image_positions"]


def test_unreduced_fp32_logits_are_the_unmodified_models_within_fp32_rounding(tiny_next, requests):
    pipe = next_pipeline(tiny_next, "auto")  # fp32 on CPU, what users run there
    assert pipe.dtype == torch.float32
    reqs = [requests["2x2"], requests["two"]]
    prep = pipe.prepare(reqs)
    ours = prefill_logits(pipe.decoder, pipe.lm_head, prep.unique, prep.layout)
    for b, req in enumerate(reqs):
        ref = _reference_logits(pipe, req)
        assert_rounding_close(ours[b][prep.layout.valid[b]], ref, forward_ops(pipe.model.config, ref.shape[0]))


def test_the_layout_is_pack_image_features_position_for_position(pipe, requests):
    """Label every crop's patch by its id and pack the labels with the unmodified model's own
    ``pack_image_features``: our segments give the same id (or the newline) at every position,
    for every grid shape and for a lone crop (base + one newline)."""
    inner = pipe.model.model
    newline = inner.image_newline
    for req in list(requests.values())[:6]:
        _, out = pipe._process(req)
        crops, packs = pipe._crops(out)
        n = crops[0].shape[0]
        for count in (n, 1):  # the image's crops; its base crop alone (pack_image_features' single-patch branch)
            labels = torch.arange(count * PER_CROP, dtype=newline.dtype)[:, None].expand(-1, newline.numel())
            packed, _ = inner.pack_image_features([labels.reshape(count, PER_CROP, -1)], out["image_sizes"], "default",
                                                  image_newline=torch.full_like(newline, float(NEWLINE)))
            pack = packs[0] if count == n else {"anyres": False}
            src, _ = zip(*[seg.mixes() for seg in pipe.image_segments(pack)])
            assert torch.equal(torch.cat(src)[:, 0].to(newline.dtype), packed[0][:, 0]), req.name
        segs = pipe.image_segments(packs[0])
        assert segs[0].row_newlines is False and segs[1].row_newlines  # no newline after the base crop


def test_unreduced_greedy_answers_equal_hf_generate(pipe, requests):
    reqs = [requests[k] for k in ("2x2", "1x3", "3x1", "two")]
    outs, _ = pipe.generate(reqs, _config(pipe))  # batched
    for req, text in zip(reqs, outs):
        _, inputs = pipe._process(req)
        with torch.no_grad():
            ids = pipe.model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=pipe.eos_ids[0],
                                      eos_token_id=pipe.eos_ids[0])
        assert text == pipe.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(set(outs)) > 1


def test_loglikelihood_equals_the_unmodified_model(pipe, requests):
    reqs, fulls, ctxs = [], [], []
    for key, answer in (("1x3", "red"), ("two", "no")):
        ctx, full = nx.simple_prompt(pipe.tokenizer, QUESTION, len(requests[key].images), answer)
        reqs.append(nx.Request(ctx, requests[key].images, name=key))
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


def test_vtu_on_the_next_layout_equals_attention_over_the_expanded_sequence(pipe, requests):
    from dymu_eval.language import virtual_attention
    from dymu_eval.language.state import Segment, Side
    from tests.language.lang_helpers import AttentionStub, reference_attention

    pipe.reduction = reduction_for(pipe, "tome", r=3, vtu=True)
    prep = pipe.prepare([requests["2x2"], requests["3x1"]])
    for s in prep.stats:
        assert s["visual_rows"] < s["visual_positions"] and max(s["crop_tokens"]) < PER_CROP
    layout, attn = prep.layout, pipe.decoder.layers[0].self_attn
    h = pipe.decoder.layers[0].input_layernorm(prep.unique)
    b, n, _ = h.shape
    cfg = pipe.decoder.config
    heads, kv_heads, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    with torch.no_grad():
        q = attn.q_proj(h).view(b, n, heads, d).transpose(1, 2)
        k = attn.k_proj(h).view(b, n, kv_heads, d).transpose(1, 2)
        v = attn.v_proj(h).view(b, n, kv_heads, d).transpose(1, 2)
        side = Side.from_layout(layout, pipe.decoder.rotary_emb, q)
        got = virtual_attention(AttentionStub(), q, k, v, Segment(range(1), side, side), scaling=d ** -0.5)
        want = reference_attention(q, k, v, layout, pipe.decoder.rotary_emb)
    valid = layout.valid[:, None, :, None].expand_as(want)
    assert_rounding_close(got[valid], want[valid], SMALL_OPS + layout.virtual_len)


def test_a_mistral_next_checkpoint_is_served_too(tmp_path_factory):
    """llava-v1.6-mistral-7b-hf's architecture: a Mistral LM under the same NeXT packing."""
    pipe = next_pipeline(build_tiny_next(tmp_path_factory.mktemp("nx_mistral") / "nx", TASKS, text="mistral"))
    assert pipe.model.config.text_config.model_type == "mistral"
    req = next_request(pipe, [random_image(48, 64, 0)])
    prep = pipe.prepare([req])
    ours = prefill_logits(pipe.decoder, pipe.lm_head, prep.unique, prep.layout)[0][prep.layout.valid[0]]
    ref = _reference_logits(pipe, req)
    assert_rounding_close(ours, ref, forward_ops(pipe.model.config, ref.shape[0]))


def test_another_architecture_is_one_line(tiny_llava, tiny_onevision):
    for other, kind in ((tiny_llava, "llava"), (tiny_onevision, "llava_onevision")):
        with pytest.raises(ConfigError, match=f"is a {kind} model; dymu_llava_next needs a "
                                              "LlavaNextForConditionalGeneration checkpoint") as err:
            nx.load_pipeline(str(other), "cpu", "float64", None, {})
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("setting,match", [
    ({"processor_pinpoints": [[32, 64], [64, 32]]}, "image_grid_pinpoints is \\[\\[32, 64\\], \\[64, 32\\]\\]"),
    ({"processor_patch": 16}, "patch_size is 16 but the model config needs 8"),
    ({"processor_crop": 48}, "crop size is 48 but the model config needs 32"),
])
def test_a_processor_that_disagrees_with_its_config_is_one_line(tmp_path_factory, setting, match):
    folder = build_tiny_next(tmp_path_factory.mktemp("nx_bad") / "nx", TASKS, vision_layers=1, **setting)
    with pytest.raises(ConfigError, match=match) as err:
        next_pipeline(folder)
    assert "\n" not in str(err.value) and "does not belong to this LLaVA-NeXT checkpoint" in str(err.value)


def test_placeholder_count_must_match_images(pipe, requests):
    with pytest.raises(ConfigError, match="doc 1: the prompt has 1 <image>.* but 2 image"):
        pipe.prepare([nx.Request(requests["2x2"].prompt, requests["two"].images, name="doc 1")])


def test_dymu_thresholds_are_this_checkpoints_own(pipe, requests, tiny_next, tmp_path, monkeypatch, caplog):
    """The lookup goes by the checkpoint's name only (NeXT fine-tuned its CLIP, so LLaVA-1.5's entries
    filed under the CLIP architecture must not match); calibrating on the NeXT folder reads its own
    tower (tower only) and drives DyMU over the exact layout; a file calibrated for another
    checkpoint is used with one warning line that says so."""
    from dymu_eval.calibrate import CalibrationSettings, calibrate
    from dymu_eval.images import FolderImages
    from dymu_eval.merge import merges_per_layer
    from dymu_eval.thresholds import save_record
    from dymu_eval.vision.loading import load_runner
    from dymu_eval.vision.preprocess import preprocess_for

    monkeypatch.setenv("DYMU_EVAL_CACHE", str(tmp_path / "cache"))
    assert pipe.build_context().names == [str(tiny_next)]
    with pytest.raises(ThresholdCacheError, match=f"calibrate --encoder {tiny_next} --dataset llava_instruct"):
        reduction_for(pipe, "dymu", level="low")
    runner = load_runner(tiny_next)
    assert runner.default_layers_run == 2 and runner.has_cls  # layer -2 of 3, CLS kept in the tower
    theirs = pipe.runner.model.state_dict()
    assert all(torch.equal(t, theirs[k].float()) for k, t in runner.model.state_dict().items())  # NeXT's own tower
    preprocess = preprocess_for(tiny_next, runner)
    assert tuple(preprocess([random_image(48, 64, 0)]).shape) == (1, 3, 32, 32)  # the base crop
    r = runner.r_for_level("low")

    def calibrated(name, out):
        record = calibrate(runner, FolderImages(TASKS / "dymu_offline" / "images", name="tiny_offline"),
                           merges_per_layer(r, runner.num_layers),
                           CalibrationSettings(batch_size=8, level="low", r=r, stats_images=0, progress=False,
                                               call=nx.ENCODER_CALL), preprocess=preprocess, encoder_name=name)
        return save_record(record, tmp_path / out)

    own = calibrated(str(tiny_next), "own.json")
    with caplog.at_level(logging.WARNING, logger=nx.__name__):
        pipe.reduction = reduction_for(pipe, "dymu", thresholds=str(own), level="low")
    assert not caplog.records
    _, stats = pipe.generate([requests["2x2"], requests["two"]], _config(pipe))
    for s in stats:
        assert s["visual_rows"] < s["visual_positions"] and s["unique_len"] < s["virtual_len"]
        assert sum(s["crop_tokens"]) < PER_CROP * s["crops"] and len(s["crop_tokens"]) == s["crops"]
    foreign = calibrated("llava-1.5-7b-hf", "foreign.json")
    with caplog.at_level(logging.WARNING, logger=nx.__name__):
        pipe.reduction = reduction_for(pipe, "dymu", thresholds=str(foreign), level="low")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "not calibrated on" in line and "do not transfer" in line and "\n" not in line
