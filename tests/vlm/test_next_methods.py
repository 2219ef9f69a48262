"""Every registered method on LLaVA-NeXT: batched equals one by one on a batch of different aspect
ratios; the encoder-side methods record their per-crop counts and give the LLM fewer rows than the
stock positions; VisionZip without VTU is its official NeXT sequence; analytic FLOPs equal what
``torch.utils.flop_counter`` counts around the real forward.

FLOPs, as for OneVision (tests/accounting/test_onevision_flops_counted.py): SDPA's math backend on
CPU so attention runs as matmuls the counter sees; DToMe follows the batch path (all crops of a
request in one call), so the counter also sees the padded rows of the crops that merged less, and the
test checks the gap is exactly their work; a selection's own choice (VisionZip's attention read and
contextual assignment, PruMerge's projections and cosines) is measured on the tower alone and must be
exactly what its ``Selector.score_flops`` adds to the accounting.
"""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dymu_eval.accounting import encoder_flops, padded_batch_encoder_flops
from dymu_eval.language import DecodeConfig
from dymu_eval.merge import NoMerge, Threshold
from dymu_eval.vlm import llava_next as nx
from dymu_eval.vlm.reduction import Reduction, reduction_for
from tests.factories.media import random_image
from tests.factories.next import PER_CROP, SIDE, next_pipeline, next_request
from tests.helpers.numerics import SMALL_OPS, assert_rounding_close

DOMINANT, CONTEXTUAL = 4, 2  # VisionZip per crop: the CLS and 3 patches, 2 contextual rows
METHODS = ["none", "tome", "tome_vtu", "dymu", "fastv", "pdrop", "dart", "random", "pool", "pool_vtu", "visionzip",
           "visionzip_vtu", "prumerge", "prumerge_plus"]


@pytest.fixture(scope="module")
def pipe(tiny_next):
    return next_pipeline(tiny_next)


@pytest.fixture(scope="module")
def requests(pipe):
    return [next_request(pipe, [random_image(48, 64, 0)], name="2x2"),
            next_request(pipe, [random_image(40, 120, 1)], name="1x3"),
            next_request(pipe, [random_image(60, 30, 2), random_image(30, 30, 3)], name="2x1+1x2")]


def _reduction(pipe, method: str) -> Reduction:
    return {
        "none": lambda: Reduction(),
        "tome": lambda: reduction_for(pipe, "tome", r=3, vtu=False),
        "tome_vtu": lambda: reduction_for(pipe, "tome", r=3, vtu=True),
        # DToMe as DyMU runs it on NeXT (the batch path); fixed thresholds keep the test fast
        "dymu": lambda: Reduction("dymu", Threshold([0.3] * pipe.runner.num_layers, call=nx.ENCODER_CALL), vtu=True),
        "fastv": lambda: reduction_for(pipe, "fastv", fastv_k=1, fastv_ratio=0.5),
        "pdrop": lambda: reduction_for(pipe, "pdrop", pdrop_layers="1", pdrop_ratios="0.5"),
        "dart": lambda: reduction_for(pipe, "dart", dart_layer=1, dart_budget=8),
        "random": lambda: reduction_for(pipe, "random", keep=5, seed=0),
        "pool": lambda: reduction_for(pipe, "pool", pool_factor=2, vtu=False),
        "pool_vtu": lambda: reduction_for(pipe, "pool", pool_factor=2, vtu=True),
        "visionzip": lambda: reduction_for(pipe, "visionzip", dominant=DOMINANT, contextual=CONTEXTUAL, vtu=False),
        "visionzip_vtu": lambda: reduction_for(pipe, "visionzip", dominant=DOMINANT, contextual=CONTEXTUAL,
                                               vtu=True),
        "prumerge": lambda: reduction_for(pipe, "prumerge"),
        "prumerge_plus": lambda: reduction_for(pipe, "prumerge_plus", vtu=True),
    }[method]()


def _config(pipe, n=3):
    return DecodeConfig(max_new_tokens=n, eos_token_ids=[], tokenizer=pipe.tokenizer)


@pytest.fixture(autouse=True)
def _unreduced(pipe):
    yield
    pipe.reduction = Reduction()


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_one_by_one(pipe, requests, method):
    pipe.reduction = _reduction(pipe, method)
    outs, stats = pipe.generate(requests, _config(pipe))
    single = [pipe.generate([r], _config(pipe)) for r in requests]
    assert outs == [o[0][0] for o in single]
    for s, (_, one) in zip(stats, single):
        for key in ("visual_rows", "visual_tokens_after", "crop_tokens", "image_rows", "unique_len"):
            assert s[key] == one[0][key], key
        assert len(s["crop_tokens"]) == s["crops"] == sum(s["crops_per_image"])
        assert s["visual_rows"] <= s["visual_positions"] == sum(s["image_positions"])


@pytest.mark.parametrize("method", ["tome", "tome_vtu", "dymu", "random", "pool", "visionzip", "visionzip_vtu"])
def test_encoder_side_methods_give_fewer_rows_with_their_per_crop_counts(pipe, requests, method):
    pipe.reduction = _reduction(pipe, method)
    per_crop = {"tome": PER_CROP - 2 * 3, "tome_vtu": PER_CROP - 2 * 3, "random": 5, "pool": (SIDE // 2) ** 2,
                # without VTU VisionZip's rows keep each crop's CLS; with VTU the CLS stands for no position
                "visionzip": DOMINANT + CONTEXTUAL, "visionzip_vtu": DOMINANT - 1 + CONTEXTUAL}.get(method)
    for s in pipe.prepare(requests).stats:
        assert s["visual_rows"] < s["visual_positions"] and sum(s["image_rows"]) < sum(s["image_positions"])
        if per_crop is None:  # DyMU: each crop its own count
            assert max(s["crop_tokens"]) < PER_CROP
        else:
            assert s["crop_tokens"] == [per_crop] * s["crops"]
            assert s["paper_visual_tokens"] == s["paper_crops"] * per_crop  # the papers' 5 x k
        if method == "visionzip":  # the official sequence: every row of every crop, nothing else
            assert s["image_rows"] == [per_crop * n for n in s["crops_per_image"]] and s["visual_rows"] == sum(
                s["image_rows"])
        if method.endswith("vtu") or method == "dymu":  # the stock layout is back
            assert s["virtual_len"] == s["unique_len"] - s["visual_rows"] + s["visual_positions"]


def test_visionzip_without_vtu_is_its_official_next_sequence(pipe, requests):
    """Rebuilt the way ``visionzip/llava_arch.py`` does it: the base crop's rows; the other crops'
    kept patches restored on the stitched canvas (not unpadded, no newline) and read in raster
    order through the kept mask; each of those crops' CLS; their contextual rows."""
    pipe.reduction = _reduction(pipe, "visionzip")
    req = requests[0]
    _, out = pipe._process(req)
    crops, packs = pipe._crops(out)
    enc = pipe.runner(crops[0], NoMerge(), selector=pipe.reduction.selector)
    feats = pipe.projector(enc.tokens)  # (crops, CLS + dominant - 1 + contextual, D)
    nph, npw = packs[0]["grid"]
    kept_idx = enc.patch_to_token[1:, 1:]  # sub-crops: the row holding each patch
    mask = (kept_idx >= 1) & (kept_idx < DOMINANT)
    restored = torch.zeros(nph * npw, PER_CROP, feats.shape[-1], dtype=feats.dtype)
    restored[mask] = feats[1:, 1:DOMINANT].reshape(-1, feats.shape[-1])
    canvas = restored.view(nph, npw, SIDE, SIDE, -1).permute(0, 2, 1, 3, 4).reshape(nph * SIDE, npw * SIDE, -1)
    canvas_mask = mask.view(nph, npw, SIDE, SIDE).permute(0, 2, 1, 3).reshape(nph * SIDE, npw * SIDE)
    want = torch.cat([feats[0], canvas[canvas_mask], feats[1:, 0], feats[1:, DOMINANT:].reshape(-1, feats.shape[-1])])
    prep = pipe.prepare([req])
    got = prep.unique[0][prep.image_mask[0]]
    assert got.shape[0] == 5 * (DOMINANT + CONTEXTUAL) < prep.stats[0]["visual_positions"]
    assert_rounding_close(got, want, SMALL_OPS)
    assert prep.layout.is_identity  # the rows at consecutive positions, as the official code feeds them


def _counted(pipe, req) -> tuple[float, dict]:
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        _, stats = pipe.generate([req], _config(pipe))
    return float(counter.get_total_flops()), stats[0]


def _padding_flops(pipe, req) -> float:
    """Attention and the matcher over the crops padded to the longest (the token-wise work skips padding)."""
    counts = pipe.prepare([req]).counts[0]
    vision = pipe.accounting.shape.vision
    own = sum(encoder_flops(vision, c, m).total for c, m in zip(counts.encoder_counts, counts.encoder_matched))
    return padded_batch_encoder_flops(vision, counts.encoder_counts, counts.encoder_matched[0]).total - own


def _selection_flops(pipe, req) -> float:
    """What the selection itself computes on the tower (its choice, not the blocks)."""
    _, out = pipe._process(req)
    pixels = torch.cat(pipe._crops(out)[0])
    flops = []
    for selector in (pipe.reduction.selector, None):
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            pipe.runner(pixels, NoMerge(), selector=selector)
        flops.append(counter.get_total_flops())
    return float(flops[0] - flops[1])


@pytest.mark.parametrize("method", METHODS)
def test_analytic_flops_match_the_counter(pipe, requests, method):
    pipe.reduction = _reduction(pipe, method)
    req = requests[0]
    counted, row = _counted(pipe, req)
    padding = _padding_flops(pipe, req)
    assert (padding > 0) == (method == "dymu")  # only DToMe merges each crop its own amount
    # a selection's own choice (VisionZip's attention read and contextual assignment) is counted by the
    # accounting where its Selector.score_flops says so; what it leaves out is exactly the rest
    unaccounted = 0.0
    if pipe.reduction.selector is not None:
        unaccounted = _selection_flops(pipe, req) - pipe.prepare([req]).counts[0].selection_flops
    assert counted - padding - row["total_flops"] == unaccounted, (method, row["total_flops"], counted)
    assert unaccounted == 0  # every selection says what its choice cost (Selector.score_flops)
