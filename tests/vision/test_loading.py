"""Loading a LLaVA folder builds only its vision tower and reads only the tower's tensors,
giving exactly the tower (and runner outputs) of the fully loaded model."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaModel, LlavaForConditionalGeneration, LlavaModel

from dymu_eval.errors import ConfigError
from dymu_eval.merge import TopR, merges_per_layer
from dymu_eval.vision import VisionRunner, tower_weights
from dymu_eval.vision.loading import LlavaVisionPart, load_runner, load_vision_model
from tests.factories.towers import TOWER, tower_llava

LAYERS = TOWER.layers


def _llava(tower: str = "clip", seed: int = 0) -> LlavaForConditionalGeneration:
    return tower_llava(tower, text_layers=2, seed=seed)


@pytest.fixture(scope="module")
def llava_dirs(tmp_path_factory):
    """name -> folder: sharded (with model.safetensors.index.json) CLIP and SigLIP towers, and one file."""
    out = {}
    for name, tower, shard in (("clip-sharded", "clip", "20KB"), ("siglip-sharded", "siglip", "20KB"),
                               ("clip-single", "clip", None)):
        folder = tmp_path_factory.mktemp(name)
        kwargs = {"max_shard_size": shard} if shard else {}
        _llava(tower).save_pretrained(folder, **kwargs)
        out[name] = folder
    assert (out["clip-sharded"] / "model.safetensors.index.json").is_file()
    assert len(list(out["clip-sharded"].glob("model-*.safetensors"))) > 2
    assert (out["clip-single"] / "model.safetensors").is_file()
    return out


def _full(folder, dtype=torch.float32) -> LlavaForConditionalGeneration:
    return LlavaForConditionalGeneration.from_pretrained(folder, dtype=dtype).eval()


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def _assert_same_runs(ra: VisionRunner, rb: VisionRunner, pixels) -> None:
    assert ra.default_layers_run == rb.default_layers_run == LAYERS - 1
    policy = TopR(merges_per_layer(6, LAYERS))
    for pol in (None, policy):
        a, b = ra(pixels, pol), rb(pixels, pol)
        for field in ("tokens", "valid", "sizes", "patch_to_token", "counts"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field


@pytest.mark.parametrize("name", ["clip-sharded", "siglip-sharded", "clip-single"])
def test_tower_only_equals_tower_of_full_model(llava_dirs, name, pixels):
    part = load_vision_model(llava_dirs[name])
    assert isinstance(part, LlavaVisionPart) and not part.training
    assert part.config.vision_feature_layer == -2 and part.select_strategy == "default"
    full = _full(llava_dirs[name])
    _assert_same_state(part.vision_tower, full.model.vision_tower)
    runner = load_runner(llava_dirs[name])
    assert runner.feature_layer == -2
    _assert_same_runs(runner, VisionRunner.from_model(full), pixels)


def test_requested_dtype(llava_dirs):
    part = load_vision_model(llava_dirs["clip-sharded"], dtype=torch.bfloat16)
    assert {p.dtype for p in part.parameters()} == {torch.bfloat16}
    _assert_same_state(part.vision_tower, _full(llava_dirs["clip-sharded"], torch.bfloat16).model.vision_tower)


def test_reads_only_tower_tensors_and_never_builds_the_language_model(llava_dirs, monkeypatch):
    folder = llava_dirs["clip-sharded"]
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    tower_keys = {k for k in weight_map if k.startswith("vision_tower.")}
    assert tower_keys and len(tower_keys) < len(weight_map)
    read: list[str] = []
    real_open = tower_weights.safe_open

    class Spy:
        def __init__(self, *args, **kwargs):
            self.handle = real_open(*args, **kwargs)

        def __enter__(self):
            self.inner = self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def get_tensor(self, name):
            read.append(name)
            return self.inner.get_tensor(name)

    def forbidden(*args, **kwargs):
        raise AssertionError("the language model / full LLaVA must not be built")

    monkeypatch.setattr(tower_weights, "safe_open", Spy)
    for cls in (LlamaModel, LlavaModel, LlavaForConditionalGeneration):
        monkeypatch.setattr(cls, "__init__", forbidden)
    monkeypatch.setattr(LlavaForConditionalGeneration, "from_pretrained", forbidden)
    runner = load_runner(folder)
    assert sorted(read) == sorted(tower_keys)  # each tower tensor once, nothing else
    assert runner.default_layers_run == LAYERS - 1
    assert not any(isinstance(m, torch.nn.Embedding) and m.num_embeddings == 128 for m in runner.model.modules())


def _rewrite(src, dst, rename, drop=()):
    """Copy a single-file LLaVA folder, renaming/dropping its tensor names."""
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    state = load_file(src / "model.safetensors")
    renamed = {rename(k): v.contiguous() for k, v in state.items() if k not in drop}
    save_file(renamed, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize(
    "rename",
    [
        lambda k: "model." + k if k.startswith("vision_tower.") else k,  # transformers 5 in-memory names
        lambda k: k.replace("vision_tower.", "vision_tower.vision_model.", 1),  # llava-hf hub checkpoints
        lambda k: k.replace("vision_tower.", "model.vision_tower.vision_model.", 1),
    ],
    ids=["model.vision_tower", "vision_tower.vision_model", "model.vision_tower.vision_model"],
)
def test_other_tower_prefixes(llava_dirs, tmp_path, rename, pixels):
    folder = _rewrite(llava_dirs["clip-single"], tmp_path / "renamed", rename)
    full = _full(llava_dirs["clip-single"])
    part = load_vision_model(folder)
    _assert_same_state(part.vision_tower, full.model.vision_tower)
    _assert_same_runs(load_runner(folder), VisionRunner.from_model(full), pixels)


def test_pickled_bin_checkpoint_is_read_safely(llava_dirs, tmp_path, pixels):
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    shutil.copytree(llava_dirs["clip-single"], folder)
    (folder / "model.safetensors").unlink()
    torch.save(load_file(llava_dirs["clip-single"] / "model.safetensors"), folder / "pytorch_model.bin")
    full = _full(llava_dirs["clip-single"])
    _assert_same_state(load_vision_model(folder).vision_tower, full.model.vision_tower)
    (folder / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=rf"{folder}.*pytorch_model.bin.*tensors-only"):
        load_vision_model(folder)


def test_missing_tower_tensors_are_listed(llava_dirs, tmp_path):
    drop = {"vision_tower.encoder.layers.1.mlp.fc1.weight", "vision_tower.post_layernorm.bias"}
    folder = _rewrite(llava_dirs["clip-single"], tmp_path / "holes", lambda k: k, drop)
    with pytest.raises(ConfigError) as err:
        load_vision_model(folder)
    msg = str(err.value)
    assert str(folder) in msg and "lacks 2 vision tower tensor(s)" in msg
    assert all(k in msg for k in drop)


def test_no_tower_at_all(llava_dirs, tmp_path):
    folder = _rewrite(llava_dirs["clip-single"], tmp_path / "notower", lambda k: k.replace("vision_tower.", "vt."))
    with pytest.raises(ConfigError, match=rf"{folder}.*no vision tower tensors.*top-level names found: .*vt"):
        load_vision_model(folder)


def test_folder_errors_name_the_folder(llava_dirs, tmp_path):
    no_config = tmp_path / "noconfig"
    shutil.copytree(llava_dirs["clip-single"], no_config)
    (no_config / "config.json").unlink()
    with pytest.raises(ConfigError, match=rf"{no_config}: no config.json"):
        load_runner(no_config)

    llama = tmp_path / "llama"
    LlamaModel(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           vocab_size=32)).save_pretrained(llama)
    with pytest.raises(ConfigError, match=rf"{llama}: model type 'llama' is not supported"):
        load_runner(llama)

    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    shutil.copy(llava_dirs["clip-single"] / "config.json", no_weights)
    with pytest.raises(ConfigError, match=rf"{no_weights}: no weights found"):
        load_runner(no_weights)

    lost_shard = tmp_path / "lostshard"
    shutil.copytree(llava_dirs["clip-sharded"], lost_shard)
    index = json.loads((lost_shard / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["vision_tower.embeddings.patch_embedding.weight"]
    (lost_shard / shard).unlink()
    with pytest.raises(ConfigError, match=rf"{lost_shard}: shard {shard} named in the index is missing"):
        load_runner(lost_shard)

    other_tower = tmp_path / "vit"
    shutil.copytree(llava_dirs["clip-single"], other_tower)
    cfg = json.loads((other_tower / "config.json").read_text())
    cfg["vision_config"]["model_type"] = "vit"
    (other_tower / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=rf"{other_tower}: LLaVA vision tower type 'vit' is not supported"):
        load_runner(other_tower)
