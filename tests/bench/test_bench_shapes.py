"""The real-width options of `dymu-eval bench`: shape parsing, the JSON fields, and one-line refusals of
bad --shape/--layers/--dtype/--device/--prune/--method-arg. Tiny presets stand in for the real widths
(the code path is the same; timings are not checked)."""
from __future__ import annotations

import json

import pytest
import torch

from dymu_eval.bench.shapes import ENCODER_SHAPES, LANGUAGE_SHAPES, shape_config, torch_dtype
from dymu_eval.cli import main
from dymu_eval.errors import ConfigError

TINY = {"model_type": "tiny-bench", "_comment": "two small towers and a small decoder",
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                          "num_attention_heads": 2, "num_hidden_layers": 3, "patch_size": 14, "image_size": 56},
        "text_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "num_hidden_layers": 4, "vocab_size": 256}}


@pytest.fixture
def tiny_shape(tmp_path, monkeypatch):
    """A preset folder holding the tiny preset, registered as shape "tiny" for both benches."""
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    monkeypatch.setattr("dymu_eval.accounting.shape.PRESETS_DIR", tmp_path)
    monkeypatch.setitem(ENCODER_SHAPES, "tiny", ("tiny", "vision_config"))
    monkeypatch.setitem(LANGUAGE_SHAPES, "tiny", ("tiny", "text_config"))
    return "tiny"


def _refusal(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_shipped_shapes_are_the_real_widths():
    clip = shape_config("clip-l-336", ENCODER_SHAPES, 8)
    assert (clip["model_type"], clip["hidden_size"], clip["num_hidden_layers"], clip["image_size"]) == \
        ("clip_vision_model", 1024, 8, 336)
    siglip = shape_config("siglip-so400m", ENCODER_SHAPES, None)
    assert (siglip["hidden_size"], siglip["num_hidden_layers"], siglip["image_size"]) == (1152, 26, 384)
    llama = shape_config("llava-1.5-7b", LANGUAGE_SHAPES, 2)
    assert (llama["model_type"], llama["hidden_size"], llama["intermediate_size"], llama["num_hidden_layers"]) == \
        ("llama", 4096, 11008, 2)
    qwen = shape_config("onevision-qwen2-7b", LANGUAGE_SHAPES, None)
    assert (qwen["model_type"], qwen["num_key_value_heads"], qwen["num_hidden_layers"]) == ("qwen2", 4, 28)
    assert torch_dtype("bfloat16") is torch.bfloat16


@pytest.mark.parametrize("name, layers, says", [
    ("clip-l-337", None, "--shape clip-l-337: not a known shape (choose from clip-l-336, siglip-so400m"),
    ("clip-l-336", 0, "--layers 0: must be in 1..24 for --shape clip-l-336"),
    ("clip-l-336", 25, "--layers 25: must be in 1..24"),
])
def test_shape_config_refuses(name, layers, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(".", r"\.")):
        shape_config(name, ENCODER_SHAPES, layers)


@pytest.mark.parametrize("argv, says", [
    (["encoder", "--shape", "llava-1.5-7b"], "--shape llava-1.5-7b: not a known shape (choose from clip-l-336"),
    (["language", "--shape", "clip-l-336"], "--shape clip-l-336: not a known shape (choose from llava-1.5-7b"),
    (["language", "--shape", "llava-1.5-7b", "--layers", "33"], "--layers 33: must be in 1..32"),
    (["encoder", "--layers", "4"], "--layers needs --shape"),
    (["language", "--layers", "4"], "--layers needs --shape"),
    (["language", "--shape", "llava-1.5-7b", "--random"], "--shape and --random: give one"),
    (["encoder", "--shape", "clip-l-336", "--encoder", "x"], "--shape and --encoder: give one"),
    (["encoder", "--dtype", "float8"], "--dtype float8: choose from float32, bfloat16"),
    (["language", "--device", "tpu"], "--device tpu: not a torch device"),
    (["language", "--prune", "tome"], "--prune tome: not an LLM-side pruner of the method registry (choose from "),
    (["language", "--method-arg", "fastv_k"], "--method-arg fastv_k: write NAME=VALUE"),
    (["language", "--method-arg", "r=8"], "--method-arg r: no LLM-side pruner"),
    (["encoder", "--cpu-prepack", "--dtype", "bfloat16"], "--cpu-prepack: packs float32 weights"),
    (["language", "--prepack-below-rows", "64"], "--prepack-below-rows needs --cpu-prepack"),
    (["encoder", "--cpu-prepack", "--prepack-below-rows", "0"], "--prepack-below-rows"),
    (["language", "--new-tokens", "1"], "--new-tokens must be at least 2: the first token comes from the prefill"),
])
def test_bad_bench_options_are_one_line(capsys, argv, says):
    assert says in _refusal(capsys, "bench", *argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no GPU")
@pytest.mark.parametrize("bench", ["encoder", "language"])
def test_cuda_without_a_gpu_is_one_line(capsys, bench):
    assert "--device cuda: no CUDA device is available here" in _refusal(capsys, "bench", bench, "--device", "cuda",
                                                                         "--dtype", "bfloat16")


def test_encoder_bench_on_a_shape(tiny_shape, tmp_path):
    pytest.importorskip("skimage", reason="sample photos come from the scikit-image wheel")
    out = tmp_path / "enc.json"
    argv = ["bench", "encoder", "--shape", tiny_shape, "--layers", "2", "--batch-size", "2", "--dtype", "bfloat16",
            "--repeats", "1", "--warmup", "0", "--seed", "3", "--json", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert (data["shape"], data["layers"], data["dtype"], data["seed"], data["image_size"]) == \
        (tiny_shape, 2, "bfloat16", 3, 56)
    dtome = data["results"][2]
    assert dtome["time_over_flop_ratio"] == pytest.approx(dtome["ratio"] / dtome["flop_ratio"])
    assert dtome["flop_ratio"] <= dtome["padded_flop_ratio"] < 1  # padding to the longest image only adds work
    assert all(r["peak_mib"] is None for r in data["results"])  # CPU: no peak memory


def test_language_bench_on_a_shape_times_the_registry_pruners(tiny_shape, tmp_path):
    out = tmp_path / "lang.json"
    base = ["bench", "language", "--shape", tiny_shape, "--image-tokens", "24", "--unique-image", "6",
            "--new-tokens", "2", "--repeats", "1", "--warmup", "0", "--json", str(out)]
    assert main(base) == 0
    data = json.loads(out.read_text())
    variants = [r["variant"] for r in data["prefill"]]
    assert any(v.startswith("FastV K2 R0.5") for v in variants) and any(v.startswith("DART") for v in variants)
    assert "pdrop_layers=8/16/24" in data["skipped"]["pdrop"]  # the defaults do not fit 4 layers
    assert (data["shape"], data["layers"], data["dtype"]) == (tiny_shape, 4, "float32")
    assert data["kv_cache_bytes"]["ratio"] == data["kv_cache_bytes"]["unique_over_virtual"]
    assert not data["cpu_prepack"] and data["prepack_below_rows"] is None
    assert main([*base, "--prune", "pdrop", "--method-arg", "pdrop_layers=1/2", "--method-arg",
                 "pdrop_ratios=0.5/0.25", "--cpu-prepack", "--prepack-below-rows", "16"]) == 0
    data = json.loads(out.read_text())
    assert data["cpu_prepack"] and "Linear weights prepacked (oneDNN, below 16 rows)" in data["model"]
    assert data["prepack_below_rows"] == 16
    assert data["kv_cache_bytes"]["ratio"] == data["kv_cache_bytes"]["unique_over_virtual"]
    pdrop = data["prefill"][-1]
    assert pdrop["variant"] == "PDrop L1/2 R0.5/0.25" and not data["skipped"]
    assert 0 < pdrop["flop_ratio"] < 1 and pdrop["rows"].endswith(f"->{data['virtual_tokens'] - 24 + 6}")
