"""Load a vision tower from a save_pretrained folder: a bare CLIP/SigLIP/DINOv2 vision model,
a full CLIP or SigLIP (its vision half), or a LLaVA (loaded whole; the runner takes its tower)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .runner import VisionRunner

SUPPORTED = "clip_vision_model, siglip_vision_model, dinov2, clip, siglip, llava"


def load_vision_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> nn.Module:
    """The model a VisionRunner can wrap, loaded in eval mode (ConfigError naming the folder)."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, JSON errors
        raise ConfigError(f"--encoder {path}: cannot read a model configuration ({exc})") from None
    classes = {
        "clip_vision_model": transformers.CLIPVisionModel,
        "clip": transformers.CLIPVisionModel,
        "siglip_vision_model": transformers.SiglipVisionModel,
        "siglip": transformers.SiglipVisionModel,
        "dinov2": transformers.Dinov2Model,
        "llava": transformers.LlavaForConditionalGeneration,
    }
    cls = classes.get(config.model_type)
    if cls is None:
        raise ConfigError(f"--encoder {path}: model type {config.model_type!r} is not supported (supported: {SUPPORTED})")
    try:
        model = cls.from_pretrained(path, dtype=dtype)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"--encoder {path}: cannot load the weights ({exc})") from None
    return model.to(device).eval()


def load_runner(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu", layers_run: int | None = None
) -> VisionRunner:
    """A VisionRunner for the folder, running the blocks its consumer reads (LLaVA: layer -2)."""
    return VisionRunner.from_model(load_vision_model(path, dtype, device), layers_run=layers_run)
