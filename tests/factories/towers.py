"""Tiny random CLIP, SigLIP and DINOv2 towers, saved with save_pretrained so the real loading code runs.

Two shapes: ``TOWER`` (64 px, 8 px patches, 4 blocks) for the merge and vision tests, ``CALIB_TOWER``
(32 px, 4 px patches, 3 blocks) for calibration. Both give 8x8 = 64 patches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    BitImageProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)


@dataclass(frozen=True)
class TowerShape:
    image: int
    patch: int
    layers: int
    hidden: int = 32
    heads: int = 4

    def common(self) -> dict:
        return {"hidden_size": self.hidden, "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
                "image_size": self.image, "patch_size": self.patch}


TOWER = TowerShape(image=64, patch=8, layers=4)  # merge/vision test modules assume 4 blocks
CALIB_TOWER = TowerShape(image=32, patch=4, layers=3)


def _square(image: int) -> dict:
    return {"height": image, "width": image}


# family -> (config class, model class, config extras, image processor for a given image size)
FAMILIES = {
    "clip": (CLIPVisionConfig, CLIPVisionModel, {"intermediate_size": 64},
             lambda image: CLIPImageProcessor(size={"shortest_edge": image}, crop_size=_square(image))),
    "siglip": (SiglipVisionConfig, SiglipVisionModel, {"intermediate_size": 64},
               lambda image: SiglipImageProcessor(size=_square(image))),
    "dinov2": (Dinov2Config, Dinov2Model, {"mlp_ratio": 2, "layerscale_value": 0.5},
               lambda image: BitImageProcessor(size={"shortest_edge": image}, crop_size=_square(image),
                                               do_center_crop=True)),
}


def tower_config(family: str, shape: TowerShape = TOWER):
    cfg_cls, _, extra, _ = FAMILIES[family]
    return cfg_cls(**shape.common(), **extra)


def randomise_norms(model: torch.nn.Module) -> None:
    """Random LayerNorm affine parameters and layer scales, so a wrong wiring cannot hide."""
    gen = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, torch.nn.LayerNorm):
            mod.weight.data = 1 + 0.3 * torch.randn(mod.weight.shape, generator=gen)
            mod.bias.data = 0.1 * torch.randn(mod.bias.shape, generator=gen)
        if hasattr(mod, "lambda1"):
            mod.lambda1.data = 0.5 + 0.3 * torch.randn(mod.lambda1.shape, generator=gen)


def build_tower(family: str, shape: TowerShape = TOWER, seed: int = 0, *, random_norms: bool = False):
    """A random tower of ``family`` (eval mode); ``random_norms`` also randomises norms and layer scales."""
    torch.manual_seed(seed)
    model = FAMILIES[family][1](tower_config(family, shape))
    if random_norms:
        randomise_norms(model)
    return model.eval()


def save_tower(folder, family: str, shape: TowerShape = TOWER, seed: int = 0, *, processor: bool = True,
               random_norms: bool = False):
    """``build_tower`` written to ``folder`` (with its image processor unless ``processor`` is False)."""
    build_tower(family, shape, seed, random_norms=random_norms).save_pretrained(folder)
    if processor:
        FAMILIES[family][3](shape.image).save_pretrained(folder)
    return folder


def load_tower(folder, family: str, dtype: torch.dtype = torch.float32):
    """A tower read back from its folder (fp32 unless asked, eval)."""
    return FAMILIES[family][1].from_pretrained(folder, dtype=dtype).eval()


def tower_llava(tower: str = "clip", shape: TowerShape = TOWER, *, text_layers: int = 1, vocab: int = 128,
                seed: int = 0) -> LlavaForConditionalGeneration:
    """A random LLaVA around a tiny ``tower`` (CLIP or SigLIP) with a tiny Llama; no processor or tokenizer,
    for the tests that only load its vision part. The image token is the last id of the vocabulary."""
    torch.manual_seed(seed)
    cfg = LlavaConfig(
        vision_config=tower_config(tower, shape),
        text_config=LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=text_layers,
                                num_attention_heads=4, num_key_value_heads=4, vocab_size=vocab),
        image_token_id=vocab - 1,
        vision_feature_layer=-2,
    )
    return LlavaForConditionalGeneration(cfg).eval()


def random_pixels(count: int = 3, image: int = TOWER.image, seed: int = 3) -> torch.Tensor:
    """Random pixel batches; random pixels give random-model tokens that merge unevenly."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, image, image, generator=g)
