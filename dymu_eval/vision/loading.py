"""Load a vision encoder from a save_pretrained folder (or hub id): a bare CLIP/SigLIP/DINOv2
vision model, a full CLIP or SigLIP (its vision half), or the vision part of a LLaVA.

For a local LLaVA folder only the vision tower is built (from ``config.vision_config``) and only
its tensors are read from the checkpoint, so counting tokens or calibrating on LLaVA-1.5-7B
does not load the 7B language model. Hub ids still go through ``from_pretrained`` whole.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .runner import VisionRunner

SUPPORTED = "clip_vision_model, siglip_vision_model, dinov2, clip, siglip, llava, llava_next, llava_onevision"
VLM_TYPES = ("llava", "llava_next", "llava_onevision")
TOWER_TYPES = ("clip_vision_model", "siglip_vision_model", "dinov2")


class LlavaVisionPart(nn.Module):
    """The vision half of a LLaVA: its tower plus the LLaVA config (vision_feature_layer,
    vision_feature_select_strategy), without language model or projector. It looks like a
    LLaVA to :func:`dymu_eval.vision.resolve_tower`, so the runner stops at the read layer."""

    def __init__(self, config, vision_tower: nn.Module):
        super().__init__()
        self.config = config
        self.vision_tower = vision_tower

    @property
    def select_strategy(self) -> str:
        return getattr(self.config, "vision_feature_select_strategy", "default")


def _classes(transformers) -> dict[str, type]:
    return {
        "clip_vision_model": transformers.CLIPVisionModel,
        "clip": transformers.CLIPVisionModel,
        "siglip_vision_model": transformers.SiglipVisionModel,
        "siglip": transformers.SiglipVisionModel,
        "dinov2": transformers.Dinov2Model,
        "llava": transformers.LlavaForConditionalGeneration,
        "llava_next": transformers.LlavaNextForConditionalGeneration,
        "llava_onevision": transformers.LlavaOnevisionForConditionalGeneration,
    }


def _is_hub_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _read_config(path: str | Path):
    import transformers

    local = Path(path)
    if not local.exists() and not _is_hub_id(str(path)):
        raise ConfigError(f"encoder {path}: no such folder, and not a hub id")
    if local.exists() and not local.is_dir():
        raise ConfigError(f"encoder {path}: a file, expected a save_pretrained folder or a hub id")
    if local.is_dir() and not (local / "config.json").is_file():
        raise ConfigError(f"encoder {path}: no config.json in this folder (expected a save_pretrained folder)")
    try:
        return transformers.AutoConfig.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, JSON errors
        raise ConfigError(f"encoder {path}: cannot read a model configuration ({exc})") from None


def load_llava_vision(folder: str | Path, config, dtype: torch.dtype = torch.float32) -> LlavaVisionPart:
    """Build the tower from ``config.vision_config`` and fill it with the checkpoint's tower
    tensors only (ConfigError naming the folder when some are missing)."""
    import transformers

    from .tower_weights import read_tower_tensors

    vision_config = config.vision_config
    kind = getattr(vision_config, "model_type", None)
    if kind not in TOWER_TYPES:
        raise ConfigError(
            f"encoder {folder}: LLaVA vision tower type {kind!r} is not supported (supported: {', '.join(TOWER_TYPES)})"
        )
    tensors, prefix = read_tower_tensors(folder)
    cls = _classes(transformers)[kind]
    try:
        # from_pretrained with an explicit state_dict applies the library's own key renames
        # (e.g. a legacy ``vision_model.`` level) and reports what is missing.
        tower, info = cls.from_pretrained(
            None, config=vision_config, state_dict=tensors, dtype=dtype, output_loading_info=True
        )
    except Exception as exc:  # noqa: BLE001 - size mismatches and the like
        raise ConfigError(f"encoder {folder}: cannot load the vision tower weights ({exc})") from None
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(prefix + k for k in missing[:5])
        raise ConfigError(
            f"encoder {folder}: the checkpoint lacks {len(missing)} vision tower tensor(s), e.g. {shown}"
        )
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched:
        raise ConfigError(f"encoder {folder}: tower tensors with the wrong shape: {mismatched[:5]}")
    return LlavaVisionPart(config, tower)


def load_vision_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> nn.Module:
    """The model a VisionRunner can wrap, in eval mode (ConfigError naming the folder). A local
    LLaVA folder gives a :class:`LlavaVisionPart` (tower only); a LLaVA hub id the whole model."""
    import transformers

    config = _read_config(path)
    cls = _classes(transformers).get(config.model_type)
    if cls is None:
        raise ConfigError(f"encoder {path}: model type {config.model_type!r} is not supported (supported: {SUPPORTED})")
    if config.model_type in VLM_TYPES and Path(path).is_dir():
        return load_llava_vision(path, config, dtype).to(device).eval()
    try:
        model = cls.from_pretrained(path, dtype=dtype)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"encoder {path}: cannot load the weights ({exc})") from None
    return model.to(device).eval()


def load_runner(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu", layers_run: int | None = None
) -> VisionRunner:
    """A VisionRunner for the folder, running the blocks its consumer reads (LLaVA: its
    vision_feature_layer, e.g. -2), the tower only for a local LLaVA folder."""
    return VisionRunner.from_model(load_vision_model(path, dtype, device), layers_run=layers_run)
