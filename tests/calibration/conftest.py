"""Tiny random CLIP, SigLIP and DINOv2 towers saved with save_pretrained (with their image
processors), and folders of small random images, for the calibration and cache tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BitImageProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)

IMAGE = 32
PATCH = 4  # 8x8 = 64 patches
LAYERS = 3
COMMON = dict(hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4, image_size=IMAGE, patch_size=PATCH)
_SQUARE = {"height": IMAGE, "width": IMAGE}

FAMILIES = {
    "clip": (CLIPVisionConfig, CLIPVisionModel, dict(intermediate_size=64),
             lambda: CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size=_SQUARE)),
    "siglip": (SiglipVisionConfig, SiglipVisionModel, dict(intermediate_size=64),
               lambda: SiglipImageProcessor(size=_SQUARE)),
    "dinov2": (Dinov2Config, Dinov2Model, dict(mlp_ratio=2, layerscale_value=0.5),
               lambda: BitImageProcessor(size={"shortest_edge": IMAGE}, crop_size=_SQUARE, do_center_crop=True)),
}


def build_tiny(family: str, seed: int = 0):
    cfg_cls, model_cls, extra, _ = FAMILIES[family]
    torch.manual_seed(seed)
    return model_cls(cfg_cls(**COMMON, **extra)).eval()


def save_tiny(folder, family: str, seed: int = 0):
    build_tiny(family, seed).save_pretrained(folder)
    FAMILIES[family][3]().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """family -> save_pretrained folder (weights + image processor)."""
    return {fam: save_tiny(tmp_path_factory.mktemp(fam), fam) for fam in FAMILIES}


def write_images(folder, count: int, seed: int = 0, size: tuple[int, int] = (40, 36)):
    """``count`` random photos-ish images (smooth blobs plus noise, varied detail) as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = size[1], size[0]
        coarse = rng.integers(0, 256, size=(rng.integers(2, 9), rng.integers(2, 9), 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.float64)
        noise = rng.normal(0, rng.uniform(0, 40), size=base.shape)
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 16)
    return folder
