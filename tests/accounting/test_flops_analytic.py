"""Analytic FLOPs: the paper's Table 1, stage costs that move as the token counts say, shapes from configs."""
from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest

from dymu_eval.accounting import (
    CutCount,
    LayerRun,
    RequestCounts,
    VlmShape,
    decode_flops,
    efficiency_fields,
    encoder_flops,
    flop_equivalent_tokens,
    fvcore_einsum_macs,
    load_shape,
    paper_qk_macs,
    prefill_flops,
    prefill_plan,
    stage_flops,
    table1_mflops,
    tome_counts,
    unmerged_counts,
)
from dymu_eval.cli import main
from dymu_eval.errors import ConfigError

REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference" / "dymu_paper_attention_mflops.csv"
LLAVA = load_shape("llava-1.5-7b")


def _paper_rows():
    with open(REFERENCE) as f:
        return list(csv.DictReader(f))


def test_table1_reproduced_from_the_shape():
    """Full = N²·D_h·H, VTU = 2·N_un²·D_h·H (fvcore MACs, query-key only) at LLaVA-1.5-7B's 32 x 128 heads,
    with fvcore's four-significant-digit reading of numpy's einsum count."""
    for row in _paper_rows():
        ours = table1_mflops(int(row["n_unique"]), int(row["n_full"]), LLAVA.llm.heads, LLAVA.llm.head_dim)
        assert round(ours, 1) == float(row["mflops"]), row
    # the exact count differs from fvcore's only by that rounding: 2·394²·128·32 = 1271.69 M, printed 1272.0
    exact = paper_qk_macs(32, 128, LayerRun(394, 576, 576)) / 1e6
    assert round(exact, 2) == 1271.69 and abs(exact - table1_mflops(394, 576)) < 0.5


def test_fvcore_rounding_is_what_numpy_prints():
    np = pytest.importorskip("numpy")
    for n in (89, 195, 394):
        a, b = np.zeros((1, 32, n, 2, 64)), np.zeros((1, 32, 2, n, 64))
        text = np.einsum_path("bhird,bhrjd->bhijd", a, b, optimize="optimal")[1]
        line = next(x for x in text.splitlines() if "optimized flop" in x.lower())
        assert fvcore_einsum_macs(n * n * 128 * 32) == np.floor(float(line.split(":")[-1]) / 2)


def test_flops_command_prints_table1(capsys, tmp_path):
    out = tmp_path / "f.json"
    assert main(["flops", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for value in ("1359.0", "64.9", "311.5", "1272.0"):
        assert value in text
    assert "1 per multiply-add" in text and "2 per multiply-add" in text  # every figure says its convention
    data = json.loads(out.read_text())
    assert [round(r["mflops_fvcore"], 1) for r in data["table1"]] == [1359.0, 64.9, 311.5, 1272.0]
    base, *rest = data["stages"]
    assert all(r["prefill_gflops"] < base["prefill_gflops"] for r in rest)


def test_flops_command_rejects_unknown_model(capsys):
    assert main(["flops", "--model", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_shapes_of_both_families():
    assert (LLAVA.llm.hidden, LLAVA.llm.layers, LLAVA.llm.kv_heads, LLAVA.llm.gated_mlp) == (4096, 32, 32, True)
    assert (LLAVA.vision.patches, LLAVA.vision.has_cls, LLAVA.layers_run) == (576, True, 23)  # layer -2
    assert LLAVA.vision.tower.gated_mlp is False and LLAVA.projector == (1024, 4096, 4096)
    ov = load_shape("llava-onevision-qwen2-7b")
    assert (ov.llm.heads, ov.llm.kv_heads, ov.llm.head_dim) == (28, 4, 128)
    assert (ov.vision.patches, ov.vision.has_cls, ov.layers_run) == (729, False, 26)
    with pytest.raises(ConfigError, match="hidden_size"):
        VlmShape.from_config({"vision_config": {"num_attention_heads": 2}, "text_config": {}})


def test_shape_from_a_transformers_config():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    cfg = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                                      num_attention_heads=2, image_size=64, patch_size=8),
                      text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2, vocab_size=100),
                      vision_feature_layer=-2)
    shape = VlmShape.from_config(cfg)
    assert shape.layers_run == 3 and shape.vision.patches == 64 and shape.llm.kv_width == 32
    assert shape.llm.projection_macs_per_row == 64 * (64 + 2 * 32) + 64 * 64


def test_tome_encoder_flops_fall_layer_by_layer():
    counts = tome_counts(LLAVA.vision, [16] * 23)
    assert counts[0] == 577 and counts[-1] == 577 - 23 * 16
    per_layer = [encoder_flops(LLAVA.vision, counts[i:i + 2], [True]).total for i in range(23)]
    assert all(a > b for a, b in itertools.pairwise(per_layer))
    full = encoder_flops(LLAVA.vision, unmerged_counts(LLAVA.vision, 23), [False] * 23)
    tome = encoder_flops(LLAVA.vision, counts, [True] * 23)
    assert tome.linear < full.linear and tome.attention < full.attention and tome.other > 0 == full.other


def test_vtu_prefill_attention_stays_at_virtual_length():
    text, nv = 40, 576
    base = prefill_flops(LLAVA.llm, prefill_plan(32, text, nv, nv, True))
    for nu in (89, 195, 394):
        vtu = prefill_flops(LLAVA.llm, prefill_plan(32, text, nu, nv, True))
        wo = prefill_flops(LLAVA.llm, prefill_plan(32, text, nu, nv, False))
        assert vtu.attention == base.attention  # attends over all 616 entries in every layer
        assert vtu.linear < base.linear and wo.linear == vtu.linear
        assert wo.attention < vtu.attention  # the ablation attends over the unique rows only
        # the flop-equivalent token count lies between the unique rows and the virtual length
        assert nu < flop_equivalent_tokens(LLAVA.llm, vtu.total, text) < nv


def test_fastv_prefill_and_layer_averaged_rows():
    text, nv, k, kept = 40, 576, 2, 144
    plan = prefill_plan(32, text, nv, nv, False, [CutCount(k, kept, kept, True)])
    assert plan[1] == LayerRun(text + nv, text + nv, text + nv) and plan[2] == LayerRun(text + kept, text + kept,
                                                                                         text + kept)
    fields = efficiency_fields(LLAVA, RequestCounts(text, nv, nv, False, cuts=[CutCount(k, kept, kept, True)]), 2)
    assert fields["layer_avg_rows"] == pytest.approx((2 * 576 + 30 * 144) / 32)  # "128 tokens" style average
    assert fields["llm_rows"] == nv and fields["kv_cache_bytes"] < fields["kv_full_bytes"]


def test_flop_equivalent_of_the_baseline_is_itself():
    text, nv = 35, 576
    total = prefill_flops(LLAVA.llm, prefill_plan(32, text, nv, nv, True)).total
    assert flop_equivalent_tokens(LLAVA.llm, total, text) == pytest.approx(nv, abs=1e-6)


def test_decode_grows_with_the_cache_and_the_steps():
    one = decode_flops(LLAVA.llm, [100] * 32, 1)
    assert one.attention == 2 * 2 * 32 * 101 * LLAVA.llm.q_width
    assert decode_flops(LLAVA.llm, [200] * 32, 1).attention > one.attention
    assert decode_flops(LLAVA.llm, [100] * 32, 3).linear == 3 * one.linear
    assert decode_flops(LLAVA.llm, [100] * 32, 0).total == 0
    # VTU: 100 entries scored, 40 cached rows weighed (each step sums an entry's weights onto its row)
    vtu = decode_flops(LLAVA.llm, [100] * 32, 1, [40] * 32)
    assert vtu.attention == 2 * 32 * (101 + 41) * LLAVA.llm.q_width and vtu.linear == one.linear
    with pytest.raises(ValueError, match="layers of cache rows"):
        decode_flops(LLAVA.llm, [100] * 32, 1, [40] * 31)


def test_request_fields_by_stage():
    counts = tome_counts(LLAVA.vision, [21] * 23)
    c = RequestCounts(40, counts[-1] - 1, 576, True, [counts], [[True] * 23], new_tokens=5)
    flops, _ = stage_flops(LLAVA, c)
    f = efficiency_fields(LLAVA, c, 2)
    assert f["total_flops"] == pytest.approx(f["encoder_flops"] + f["projector_flops"] + f["prefill_flops"]
                                             + f["decode_flops"])
    assert f["encoder_rows"] == 577 - 23 * 21 and f["llm_rows"] == 576 - 23 * 21 and f["virtual_positions"] == 576
    assert f["kv_cache_bytes"] == 2 * 4096 * 2 * 32 * (40 + f["llm_rows"])
    assert f["kv_full_bytes"] == 2 * 4096 * 2 * 32 * (40 + 576)
    assert f["paper_prefill_qk_macs"] == 32 * 2 * (40 + f["llm_rows"]) ** 2 * 128 * 32
    assert flops.decode.total > 0


def test_flops_command_reads_a_checkpoint_config(tmp_path, capsys):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                               num_attention_heads=2, image_size=64, patch_size=8),
                text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=100),
                ).save_pretrained(tmp_path)
    out = tmp_path / "f.json"
    assert main(["flops", "--model", str(tmp_path), "--unique", "16", "--json", str(out)]) == 0
    assert "4 heads x 16" in capsys.readouterr().out
    rows = json.loads(out.read_text())["table1"]
    assert rows[0]["n_virtual"] == 64 and rows[0]["mflops_exact"] == 64 * 64 * 16 * 4 / 1e6
    assert main(["flops", "--model", str(tmp_path / "f.json")]) == 2  # not a model config: a clear error


def test_flops_command_on_a_onevision_shape(tmp_path, capsys):
    """OneVision (SigLIP + Qwen2): every crop through the encoder and the projector, the stock positions in the LLM."""
    ov = load_shape("llava-onevision-qwen2-7b")
    out = tmp_path / "f.json"
    assert main(["flops", "--model", "llava-onevision-qwen2-7b", "--crops", "10", "--virtual", "7290",
                 "--json", str(out)]) == 0
    assert "28 heads x 128" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["table1"][0]["n_virtual"] == 7290
    base = data["stages"][0]
    one_crop = encoder_flops(ov.vision, unmerged_counts(ov.vision, ov.layers_run), [False] * ov.layers_run).total
    assert base["encoder_gflops"] * 1e9 == pytest.approx(10 * one_crop)
    assert base["projector_gflops"] * 1e9 == pytest.approx(2 * 10 * 729 * ov.projector_macs_per_row)
    assert main(["flops", "--model", "llava-onevision-qwen2-7b", "--crops", "0"]) == 2
    assert "--crops 0" in capsys.readouterr().err


def test_flops_command_reads_a_onevision_checkpoint_config(tmp_path, capsys):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    LlavaOnevisionConfig(vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                                          num_attention_heads=2, image_size=48, patch_size=8),
                         text_config=Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                 num_attention_heads=4, num_key_value_heads=2, vocab_size=100),
                         vision_feature_layer=-1).save_pretrained(tmp_path)
    shape = load_shape(str(tmp_path))
    assert (shape.vision.has_cls, shape.vision.patches, shape.layers_run) == (False, 36, 3)
    assert shape.llm.gated_mlp and shape.llm.kv_width == 32 and shape.projector == (32, 64, 64)
    assert main(["flops", "--model", str(tmp_path), "--unique", "9", "--crops", "2"]) == 0
    assert "72 image positions" in capsys.readouterr().out
