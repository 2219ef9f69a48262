"""Random pruning, grid pooling and VisionZip on LLaVA-OneVision: recorded counts are what k, the
factor and dominant + contextual predict on AnyRes images and video; settings that keep every
patch give the unmodified model; a dropped patch leaves a mixed (pooled) position the mean of its
kept patches; bad settings are refused with a message."""
import pytest
import torch

from dymu_eval.errors import ConfigError
from dymu_eval.language import prefill_logits
from dymu_eval.merge import NoMerge
from dymu_eval.merge.select import GridPool, RandomKeep, pool_groups
from dymu_eval.vlm import llava_onevision as ov
from tests.factories.media import random_image
from tests.factories.onevision import onevision_pipeline, onevision_request
from tests.factories.reductions import pool_reduction, random_reduction, visionzip_reduction
from tests.helpers.numerics import SMALL_OPS, assert_rounding_close, forward_ops

SIDE, N = 6, 36  # the tiny tower: 48 px crops, 8 px patches; video frames pooled 6 -> 3 per side


@pytest.fixture(scope="module")
def pipe(tiny_onevision):
    return onevision_pipeline(tiny_onevision)


@pytest.fixture(scope="module")
def requests(pipe, tiny_videos):
    return {
        "big": onevision_request(pipe, [random_image(140, 150, 0)]),  # 3x3 crops, canvas downsampled (mixed positions)
        "wide": onevision_request(pipe, [random_image(60, 200, 1)]),  # 1x3 crops, unpadded, no downsample
        "two": onevision_request(pipe, [random_image(50, 60, 3), random_image(100, 30, 4)]),
        "video": onevision_request(pipe, videos=[ov.load_video(str(tiny_videos["long"]), 6)]),
    }


@pytest.fixture(autouse=True)
def _stock(pipe):
    yield
    pipe.layout, pipe.reduction = "stock", ov.Reduction()


def _pieces(pipe, req):
    """(the crops and frames of ``req`` as the encoder gets them, the image packs)."""
    _, out = pipe._process(req)
    crops, packs = pipe._crops(out)
    return torch.cat(crops + pipe._videos(out), 0), packs


def _reference_logits(pipe, req):
    _, inputs = pipe._process(req)
    with torch.no_grad():
        return pipe.model(**inputs).logits[0]


@pytest.mark.parametrize("reduction", ["random_all", "pool_1", "pool_1_vtu", "visionzip_35_1_vtu"])
def test_settings_that_keep_every_patch_equal_the_unmodified_model(pipe, requests, reduction):
    pipe.reduction = {"random_all": lambda: random_reduction(pipe.runner, N, 0),
                      "pool_1": lambda: pool_reduction(pipe.runner, 1, False),
                      "pool_1_vtu": lambda: pool_reduction(pipe.runner, 1, True),
                      # one contextual token with nothing assigned to it is its own patch
                      "visionzip_35_1_vtu": lambda: visionzip_reduction(pipe.runner, N - 1, 1, True)}[reduction]()
    reqs = [requests["big"], requests["two"], requests["video"]]
    prep = pipe.prepare(reqs)
    logits = prefill_logits(pipe.decoder, pipe.lm_head, prep.unique, prep.layout)
    for b, req in enumerate(reqs):
        assert prep.counts[b].selected == [N] * len(prep.counts[b].selected) and prep.counts[b].selected
        ref = _reference_logits(pipe, req)
        assert_rounding_close(logits[b][prep.layout.valid[b]], ref, forward_ops(pipe.model.config, ref.shape[0]),
                              req.name)


@pytest.mark.parametrize("name", ["big", "video"])
def test_random_keeps_k_patches_per_crop_and_frame(pipe, requests, name):
    k = 5
    pipe.reduction = random_reduction(pipe.runner, k, 3)
    req = requests[name]
    pixels, _ = _pieces(pipe, req)
    n = pixels.shape[0]
    prep = pipe.prepare([req])
    c, s = prep.counts[0], prep.stats[0]
    assert c.selected == [k] * n and c.projector_rows == k * n
    kept = pipe.runner(pixels, NoMerge(), selector=RandomKeep(k, 3)).patch_to_token >= 0  # (n, 36)
    assert kept.sum(1).tolist() == [k] * n
    if name == "video":  # a pooled cell stays when one of its 2x2 patches was kept; then the newline
        cells = kept.view(n, 3, 2, 3, 2).any(4).any(2)
        assert s["visual_rows"] == int(cells.sum()) + 1
    else:  # the base crop's kept patches stay at their places, every newline stays
        assert s["visual_rows"] < s["visual_positions"]
        assert int(kept[0].sum()) + SIDE <= s["visual_rows"]  # base crop + at least a newline per canvas row
    # rows sit at their original positions (gaps where positions went)
    assert prep.layout.virtual_len == s["unique_len"]
    full = pipe._process(req)[0].numel()
    assert int(prep.layout.positions[0, -1]) == full - 1 > s["unique_len"] - 1
    kept_pos = prep.layout.positions[0][prep.image_mask[0]]
    assert bool((kept_pos.diff() > 1).any())  # at least one dropped position between kept ones
    # the official layout has no mixes: k rows per crop (and a video's one newline)
    pipe.layout = "official"
    official = pipe.prepare([req]).stats[0]
    assert official["visual_rows"] == k * n + (1 if name == "video" else 0)


def test_a_pooled_video_cell_is_the_mean_of_its_kept_patches(pipe, requests):
    k = 7
    pipe.reduction = random_reduction(pipe.runner, k, 0)
    req = requests["video"]
    pixels, _ = _pieces(pipe, req)
    enc = pipe.runner(pixels, NoMerge(), selector=RandomKeep(k, 0))
    prep = pipe.prepare([req])
    want = []
    for f in range(pixels.shape[0]):
        rows, p2t = enc.unique(f)
        projected = pipe.projector(rows)
        grid = p2t.view(3, 2, 3, 2).permute(0, 2, 1, 3).reshape(9, 4)  # the 2x2 patches of each pooled cell
        for cell in grid:
            kept = cell[cell >= 0]
            if kept.numel():
                want.append(projected[kept].mean(0))
    visual = prep.unique[0][prep.image_mask[0]]
    assert visual.shape[0] == len(want) + 1  # and the newline
    assert_rounding_close(visual[:-1], torch.stack(want), SMALL_OPS)  # a mean of 4 at most, or its pooling
    assert torch.equal(visual[-1], pipe.image_newline.detach())


def test_pool_rows_are_the_pooled_cells(pipe, requests):
    pipe.reduction = pool_reduction(pipe.runner, 2, False)
    prep = pipe.prepare([requests["video"], requests["wide"]])
    video, wide = prep.counts
    assert video.selected == [9] * 6 and wide.selected == [9] * 4
    # 2x2 pooling of the grid is the video's own 2x2 pooling: one row per cell and frame, one newline
    assert prep.stats[0]["visual_rows"] == 9 * 6 + 1
    # an image: the base crop's cells, the cells the unpadded canvas shows, and the shared newline
    _, packs = _pieces(pipe, requests["wide"])
    _, canvas = pipe.image_segments(packs[0])
    cell = pool_groups(SIDE, SIDE, 2)
    shown = {(int(i) // N, int(cell[int(i) % N])) for i in canvas.ids.flatten()}
    assert prep.stats[1]["visual_rows"] == 9 + len(shown) + 1
    assert prep.layout.is_identity  # without VTU: the unique rows at consecutive positions
    pipe.reduction = pool_reduction(pipe.runner, 2, True)
    vtu = pipe.prepare([requests["video"], requests["wide"]])
    assert [s["visual_rows"] for s in vtu.stats] == [s["visual_rows"] for s in prep.stats]
    # with VTU every position of the unmodified sequence is back
    assert [s["virtual_len"] for s in vtu.stats] == [pipe._process(r)[0].numel()
                                                     for r in (requests["video"], requests["wide"])]


def test_visionzip_keeps_dominant_plus_contextual_rows_per_crop_and_frame(pipe, requests):
    pipe.reduction = visionzip_reduction(pipe.runner, 4, 2, False)
    reqs = [requests["big"], requests["video"]]
    prep = pipe.prepare(reqs)
    for c, s in zip(prep.counts, prep.stats):
        n = s["crops"] + s["frames"]
        assert c.selected == [6] * n and c.projector_rows == 6 * n
        assert s["visual_rows"] <= s["visual_positions"]
        if s["images"]:  # the base crop's 6 rows, the canvas's mixes of rows and one shared newline
            assert s["visual_rows"] < s["visual_positions"]
    one = [pipe.prepare([r]).stats[0]["visual_rows"] for r in reqs]
    assert one == [s["visual_rows"] for s in prep.stats]  # batched equals one by one


def test_bad_settings_are_refused_with_a_message(pipe, requests):
    with pytest.raises(ConfigError, match="pool_factor=4 does not divide the 6x6"):
        pool_reduction(pipe.runner, 4, False)
    with pytest.raises(ConfigError, match="pool_factor=2 does not divide the 27x27"):  # SigLIP SO400M at 384 px
        GridPool(2).check(27 * 27, (27, 27), False)
    for factor in (3, 9):
        GridPool(factor).check(27 * 27, (27, 27), False)
    with pytest.raises(ConfigError, match="keep=37 is more than the 36"):
        random_reduction(pipe.runner, 37, 0)
    with pytest.raises(ConfigError, match="dominant=30 \\+ contextual=7 is more than the 36"):
        visionzip_reduction(pipe.runner, 30, 7, False)
    pipe.reduction = random_reduction(pipe.runner, 5, 0)
    pipe.reduction.vtu = True
    with pytest.raises(ConfigError, match="VTU cannot apply"):
        pipe.prepare([requests["wide"]])


@pytest.mark.parametrize("method", ["random", "pool", "visionzip"])
def test_projector_flops_and_rows_follow_the_selected_rows(pipe, requests, method):
    """The projector runs on the rows a selection kept per crop and frame; the stats say so."""
    from torch.utils.flop_counter import FlopCounterMode

    from dymu_eval.language import DecodeConfig

    pipe.reduction = {"random": lambda: random_reduction(pipe.runner, 5, 0),
                      "pool": lambda: pool_reduction(pipe.runner, 2, False),
                      "visionzip": lambda: visionzip_reduction(pipe.runner, 4, 2, False)}[method]()
    config = DecodeConfig(max_new_tokens=2, eos_token_ids=pipe.eos_ids, tokenizer=pipe.tokenizer)
    _, stats = pipe.generate([requests["big"], requests["video"]], config)
    for s in stats:
        n = s["crops"] + s["frames"]
        rows = {"random": 5, "pool": 9, "visionzip": 6}[method] * n
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            pipe.projector(torch.zeros(rows, pipe.runner.adapter.config.hidden_size, dtype=pipe.dtype))
        assert s["projector_flops"] == counter.get_total_flops() > 0
        assert s["encoder_rows"] == rows and s["llm_rows"] == s["visual_rows"]
