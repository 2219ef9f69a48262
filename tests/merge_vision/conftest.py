"""Tiny random CLIP, SigLIP and DINOv2 towers (and a tiny LLaVA), saved with save_pretrained
and loaded back so the real loading code runs."""
from __future__ import annotations

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    SiglipVisionConfig,
    SiglipVisionModel,
)

IMAGE = 64
PATCH = 8  # 8x8 = 64 patches
LAYERS = 4  # test modules assume 4 blocks
COMMON = {"hidden_size": 32, "num_hidden_layers": LAYERS, "num_attention_heads": 4, "image_size": IMAGE,
          "patch_size": PATCH}

FAMILIES = {
    "clip": (CLIPVisionConfig, CLIPVisionModel, {"intermediate_size": 64}),
    "siglip": (SiglipVisionConfig, SiglipVisionModel, {"intermediate_size": 64}),
    "dinov2": (Dinov2Config, Dinov2Model, {"mlp_ratio": 2, "layerscale_value": 0.5}),
}


def _saved(tmp_path_factory, name: str, model):
    folder = tmp_path_factory.mktemp(name)
    model.save_pretrained(folder)
    return folder


def _randomise_norms(model) -> None:
    """Random LayerNorm affine parameters and layer scales, so a wrong wiring cannot hide."""
    gen = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, torch.nn.LayerNorm):
            mod.weight.data = 1 + 0.3 * torch.randn(mod.weight.shape, generator=gen)
            mod.bias.data = 0.1 * torch.randn(mod.bias.shape, generator=gen)
        if hasattr(mod, "lambda1"):
            mod.lambda1.data = 0.5 + 0.3 * torch.randn(mod.lambda1.shape, generator=gen)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """family -> save_pretrained folder."""
    out = {}
    for fam, (cfg_cls, model_cls, extra) in FAMILIES.items():
        torch.manual_seed(0)
        model = model_cls(cfg_cls(**COMMON, **extra))
        _randomise_norms(model)
        out[fam] = _saved(tmp_path_factory, fam, model)
    return out


@pytest.fixture(scope="session")
def tiny_models(tiny_dirs):
    """family -> model loaded back from its folder (fp32, eval)."""
    return {
        fam: FAMILIES[fam][1].from_pretrained(folder, dtype=torch.float32).eval() for fam, folder in tiny_dirs.items()
    }


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(**COMMON, intermediate_size=64),
        text_config=LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=128,
        ),
        image_token_id=127,
        vision_feature_layer=-2,
    )
    return _saved(tmp_path_factory, "llava", LlavaForConditionalGeneration(cfg))


@pytest.fixture
def pixels():
    """Three random images; random pixels give random-model tokens that merge unevenly."""
    g = torch.Generator().manual_seed(3)
    return torch.randn(3, 3, IMAGE, IMAGE, generator=g)
