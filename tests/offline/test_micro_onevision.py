"""The micro OneVision: built from the micro LLaVA's real weights, a stock transformers model that
reloads exactly from the cache and answers about an AnyRes image and a clip."""
import numpy as np
import pytest
import torch

from dymu_eval.errors import AssetUnavailable
from dymu_eval.offline import micro_llava, micro_onevision
from dymu_eval.offline.clips import shape_clip
from dymu_eval.offline.synthetic import make_scene
from tests.helpers.numerics import assert_rounding_close, forward_ops

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built():
    try:
        return micro_onevision._ensure("shipped", micro_onevision.IMAGE_SIZE, False)
    except AssetUnavailable as exc:
        pytest.skip(str(exc))


def _ask(processor, kind: str, question: str) -> str:
    return processor.apply_chat_template(
        [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": question}]}], add_generation_prompt=True)


def test_stock_class_reloads_from_the_cache_exactly(built):
    from transformers import LlavaOnevisionForConditionalGeneration

    folder, loaded, processor = built
    assert type(loaded) is LlavaOnevisionForConditionalGeneration and (folder / "manifest.json").is_file()
    adapters = micro_llava.read_adapters(micro_llava.shipped_projector()) \
        if micro_llava.shipped_projector().is_file() else None
    fresh, fresh_processor = micro_onevision.assemble(adapters=adapters)
    for inputs, again in zip(micro_onevision.probe_inputs(processor), micro_onevision.probe_inputs(fresh_processor)):
        assert torch.equal(inputs["input_ids"], again["input_ids"])
        with torch.no_grad():
            assert torch.equal(fresh(**inputs).logits, loaded(**inputs).logits)


def test_same_weights_as_the_micro_llava_plus_newline_and_video_row(built):
    _, model, processor = built
    llava, _ = micro_llava.load_micro_llava("shipped")
    ours, theirs = model.state_dict(), llava.state_dict()
    vocab = theirs["model.language_model.embed_tokens.weight"].shape[0]
    for key, value in theirs.items():
        mine = ours[key][:vocab] if key.endswith(("embed_tokens.weight", "lm_head.weight")) else ours[key]
        assert torch.equal(mine, value), key
    assert ours["model.language_model.embed_tokens.weight"].shape[0] == vocab + 1  # <video>
    (newline,) = processor.tokenizer.encode("\n", add_special_tokens=False)
    assert torch.equal(ours["model.image_newline"], theirs["model.language_model.embed_tokens.weight"][newline])
    cfg = model.config
    assert cfg.vision_feature_select_strategy == "default" and cfg.vision_feature_layer == -2
    assert cfg.vision_config.image_size == 224 and cfg.vision_aspect_ratio == "anyres_max_9"
    assert [224, 224] in cfg.image_grid_pinpoints and [1344, 1344] in cfg.image_grid_pinpoints
    assert all(h % 224 == 0 and w % 224 == 0 for h, w in cfg.image_grid_pinpoints)
    assert processor.image_processor.image_grid_pinpoints == cfg.image_grid_pinpoints
    assert processor.video_token_id == cfg.video_token_id != cfg.image_token_id == processor.image_token_id


def test_stock_model_answers_about_an_anyres_image_and_a_clip(built):
    _, model, processor = built
    image, facts = make_scene(4, size=336, background="plain", n_objects=1, layout="mixed")
    image = image.crop((0, 0, 336, 224))  # 3:2: a 1x2 grid plus the base crop
    o = facts.objects[0]
    frames, clip = shape_clip(4, "move", "plain")
    c = clip.first()[0]
    cases = [
        (processor(images=image, text=_ask(processor, "image", f"Is there a {o.colour} {o.shape} in the image?"),
                   return_tensors="pt"), "image"),
        (processor(videos=[np.stack(frames[::2])],
                   text=_ask(processor, "video", f"Is there a {c.colour} {c.shape} in the video?"),
                   return_tensors="pt"), "video"),
    ]
    grid = cases[0][0]
    assert grid["pixel_values"].shape[1] == 3  # base crop + 1x2 grid
    n_image = int((grid["input_ids"] == model.config.image_token_id).sum())
    # base crop, then the 16x32 grid unpadded to the image's 3:2 (16x24), with a newline ending each row
    assert n_image == 256 + 16 * (24 + 1)
    n_video = int((cases[1][0]["input_ids"] == model.config.video_token_id).sum())
    assert n_video == 8 * 64 + 1  # 8 frames pooled 16x16 -> 8x8, one newline
    for inputs, kind in cases:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        answer = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert answer.split()[0].strip(".").lower() in {"yes", "no"}, (kind, answer)


@pytest.fixture(scope="module")
def family_requests(built):
    """An AnyRes image (a 1x2 grid plus the base crop) and a clip, as lmms-eval's simple ``llava_hf`` asks."""
    from dymu_eval.vlm import llava_onevision as ov

    _, _, processor = built
    image, _ = make_scene(5, size=336, background="busy")
    frames, _ = shape_clip(5, "recolour", "noisy")
    question = "Is there a red square?\nAnswer the question using a single word or phrase."
    requests = []
    for images, videos in (([image.crop((0, 0, 336, 250))], []), ([], [ov.Video(np.stack(frames[::4]))])):
        text, _ = ov.simple_prompt(processor.tokenizer, question, len(images), len(videos))
        requests.append(ov.Request(text, images, videos, name="sample"))
    return requests


def test_family_module_without_reduction_is_the_stock_model(built, family_requests):
    """The OneVision family module drops the DINOv2 CLS like the "default" strategy: with no
    reduction its logits equal the stock model's on an AnyRes image and on a clip. Exact in
    mathematics (proven in float64 on a tiny DINOv2 OneVision, tests/vlm/test_onevision_pipeline.py);
    here, on the real weights in the fp32 users run, within fp32's rounding bound (tests.helpers.numerics:
    rounding only, whatever the CPU's kernels; a fixed atol=1e-5 failed on some CPUs)."""
    from dymu_eval.language import prefill_logits
    from dymu_eval.vlm import llava_onevision as ov
    from dymu_eval.vlm.reduction import Reduction

    _, model, processor = built
    assert model.dtype == torch.float32
    pipe = ov.OnevisionPipeline(model, processor, Reduction())
    for req in family_requests:
        prep = pipe.prepare([req])
        ours = prefill_logits(pipe.decoder, pipe.lm_head, prep.unique, prep.layout)[0]
        _, inputs = pipe._process(req)
        with torch.no_grad():
            ref = model(**inputs).logits[0]
        assert_rounding_close(ours[prep.layout.valid[0]], ref, forward_ops(model.config, ref.shape[0]), req.name)
        assert prep.stats[0]["visual_rows"] == prep.stats[0]["visual_positions"]


def test_tome_merges_in_the_encoder_so_fewer_rows_reach_the_llm(built, family_requests):
    from dymu_eval.vlm import llava_onevision as ov
    from tests.factories.reductions import tome_reduction

    _, model, processor = built
    pipe = ov.OnevisionPipeline(model, processor)
    pipe.reduction = tome_reduction(pipe.runner, r=8, level=None, schedule="constant", vtu=True)
    for req in family_requests:
        stats = pipe.prepare([req]).stats[0]
        assert stats["visual_rows"] < stats["visual_positions"]


def test_a_strategy_that_does_not_fit_the_tower_is_refused(built, monkeypatch):
    from dymu_eval.errors import ConfigError
    from dymu_eval.vlm import llava_onevision as ov

    _, model, processor = built
    monkeypatch.setattr(model.config, "vision_feature_select_strategy", "full")
    with pytest.raises(ConfigError, match="with a CLS token.*'default'"):
        ov.OnevisionPipeline(model, processor)
