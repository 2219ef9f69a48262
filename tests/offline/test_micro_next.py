"""The micro LLaVA-NeXT: built from the micro LLaVA's real weights, a stock transformers model that
reloads exactly from the cache, packs AnyRes crops as LLaVA-1.6 does (checked against the layout
computed here from the weights), and answers about an image."""
import copy

import pytest
import torch

from dymu_eval.errors import AssetUnavailable
from dymu_eval.offline import micro_llava, micro_next
from dymu_eval.offline.synthetic import make_scene
from tests.helpers.numerics import assert_rounding_close, forward_ops

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built():
    try:
        return micro_next._ensure("shipped", micro_next.IMAGE_SIZE, False)
    except AssetUnavailable as exc:
        pytest.skip(str(exc))


def _ask(processor, question: str) -> str:
    return processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True)


def test_pinpoints_are_llava_16s_scaled_to_the_crop():
    assert micro_next.grid_pinpoints(336) == [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    assert micro_next.grid_pinpoints(224) == [[224, 448], [448, 224], [448, 448], [672, 224], [224, 672]]


def test_stock_class_reloads_from_the_cache_exactly(built):
    from transformers import LlavaNextForConditionalGeneration

    folder, loaded, processor = built
    assert type(loaded) is LlavaNextForConditionalGeneration and (folder / "manifest.json").is_file()
    adapters = micro_llava.read_adapters(micro_llava.shipped_projector()) \
        if micro_llava.shipped_projector().is_file() else None
    fresh, fresh_processor = micro_next.assemble(adapters=adapters)
    inputs, again = micro_next.probe_inputs(processor), micro_next.probe_inputs(fresh_processor)
    assert torch.equal(inputs["input_ids"], again["input_ids"])
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).logits, loaded(**inputs).logits)


def test_same_weights_as_the_micro_llava_plus_newline(built):
    _, model, processor = built
    llava, _ = micro_llava.load_micro_llava("shipped")
    ours, theirs = model.state_dict(), llava.state_dict()
    assert set(ours) == set(theirs) | {"model.image_newline"}
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    (newline,) = processor.tokenizer.encode("\n", add_special_tokens=False)
    assert torch.equal(ours["model.image_newline"], theirs["model.language_model.embed_tokens.weight"][newline])
    cfg = model.config
    assert cfg.model_type == "llava_next" and cfg.vision_config.image_size == 224
    assert cfg.vision_feature_select_strategy == "default" and cfg.vision_feature_layer == -2
    assert cfg.image_grid_pinpoints == processor.image_processor.image_grid_pinpoints == micro_next.grid_pinpoints()
    assert processor.image_token_id == cfg.image_token_id


def _expected_embeddings(model, inputs, rows: int, cols: int, kept: slice) -> torch.Tensor:
    """The LLM's input embeddings computed from the weights, not through transformers' NeXT code: each
    crop through the tower (layer -2, CLS dropped) and the projector; the base crop's 16x16 tokens, then
    the ``rows`` x ``cols`` grid of crops stitched into one patch grid, the rows ``kept`` (the image's
    own rows, not the padding) each followed by ``image_newline``; text rows from the embedding table."""
    inner = model.model
    pixels = inputs["pixel_values"][0]
    hidden = inner.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    feats = inner.multi_modal_projector(hidden)  # (1 + rows*cols, 256, d)
    side = int(feats.shape[1] ** 0.5)
    grid = feats[1:].reshape(rows, cols, side, side, -1).permute(0, 2, 1, 3, 4).reshape(rows * side, cols * side, -1)
    grid = grid[kept]
    newline = inner.image_newline.expand(grid.shape[0], 1, -1)
    image = torch.cat([feats[0], torch.cat([grid, newline], dim=1).reshape(-1, feats.shape[-1])])
    ids = inputs["input_ids"][0]
    embeds = inner.language_model.embed_tokens(ids).clone()
    where = ids == model.config.image_token_id
    assert int(where.sum()) == image.shape[0]
    embeds[where] = image
    return embeds[None]


def test_stock_forward_and_generate_equal_what_the_weights_give(built):
    """A 448x200 image: the 1x2 pinpoint (224x448 px) fits it with 12 px of padding above and below, so
    of the stitched 16x32 patch grid only rows 1..14 are the image's (14 = int(200 * 32 / 448)). The stock
    model's logits equal the embeddings computed above run through the same LLM, in float64 (exact in
    mathematics: only rounding differs), and its greedy answer is the argmax of those logits."""
    _, model, processor = built
    model64 = copy.deepcopy(model).to(torch.float64)
    image, _ = make_scene(seed=7, size=448, background="busy")
    inputs = processor(images=image.crop((0, 0, 448, 200)), text=_ask(processor, "Is there a red circle?"),
                       return_tensors="pt")
    assert inputs["pixel_values"].shape[1] == 3 and inputs["image_sizes"].tolist() == [[200, 448]]
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image == 256 + 14 * (32 + 1)
    inputs64 = {**inputs, "pixel_values": inputs["pixel_values"].double()}
    with torch.no_grad():
        stock = model64(**inputs64).logits[0]
        embeds = _expected_embeddings(model64, inputs64, rows=1, cols=2, kept=slice(1, 15))
        hidden = model64.model.language_model(inputs_embeds=embeds).last_hidden_state
        want = model64.lm_head(hidden)[0]
    assert_rounding_close(stock, want, forward_ops(model.config, stock.shape[0]), "micro NeXT logits")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    answer = out[0, inputs["input_ids"].shape[1]:]
    assert int(answer[0]) == int(want[-1].argmax())
    assert processor.decode(answer, skip_special_tokens=True).strip().split()[0].strip(".").lower() in {"yes", "no"}


def test_token_counts_follow_the_pinpoint_each_image_picks(built):
    """Square and small images take the 1x2 grid (the tie goes to the least waste), a tall one 3x1;
    the count is 256 + the unpadded grid's rows x (columns + 1), as the processor computes it."""
    _, model, processor = built
    image, _ = make_scene(seed=3, size=672, background="plain")
    counts = {}
    for size in ((224, 224), (448, 448), (200, 600)):
        inputs = processor(images=image.resize(size), text=_ask(processor, "?"), return_tensors="pt")
        n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
        counts[size] = (inputs["pixel_values"].shape[1], n_image)
    assert counts[(224, 224)] == (3, 256 + 16 * (16 + 1))  # 1x2 grid, unpadded back to the square's 16 columns
    assert counts[(448, 448)] == (5, 256 + 32 * (32 + 1))  # 2x2 grid, no padding
    assert counts[(200, 600)] == (4, 256 + 48 * (16 + 1))  # W x H 200x600 -> the 3x1 grid (672x224 px)
