"""Image -> pixel tensor for an encoder, the one home of this step.

:class:`ImageTransform`: shortest side resized to S, centre crop S x S, normalised with the
encoder's mean/std (from preprocessor_config.json when the model folder has one, else the
family's published values); the cropped image is kept for merge maps. :func:`preprocess_for`
picks what calibration and token counting use: the encoder's own Hugging Face image processor
when it has one (:class:`ProcessorPreprocess`), else the family transform (:class:`FamilyPreprocess`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError

FAMILY_MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass
class ImageTransform:
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def for_encoder(cls, family: str, size: int, model_dir: str | Path | None = None) -> ImageTransform:
        """Mean/std from ``model_dir/preprocessor_config.json`` if present, else the family's."""
        mean, std = FAMILY_MEAN_STD.get(family, (None, None))
        cfg = Path(model_dir) / "preprocessor_config.json" if model_dir else None
        if cfg is not None and cfg.is_file():
            try:
                data = json.loads(cfg.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{cfg}: cannot read the image processor settings ({exc})") from None
            mean = tuple(data.get("image_mean", mean or ()))
            std = tuple(data.get("image_std", std or ()))
        if not mean or not std:
            raise ConfigError(f"encoder family {family!r} has no known mean/std (known: {', '.join(FAMILY_MEAN_STD)}); "
                              "give its folder a preprocessor_config.json with image_mean and image_std")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"image size must be a positive integer, got {size!r}")
        return cls(size=size, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))

    def crop(self, image: Image.Image) -> Image.Image:
        """Shortest side to ``size`` (bicubic), then the centre ``size`` x ``size`` square."""
        image = image.convert("RGB")
        w, h = image.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        image = image.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))

    def to_tensor(self, cropped: Image.Image) -> torch.Tensor:
        """(3,S,S) normalised float tensor of an already cropped image."""
        arr = np.asarray(cropped, dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())

    def __call__(self, images: list[Image.Image]) -> tuple[torch.Tensor, list[Image.Image]]:
        """(B,3,S,S) pixels and the cropped RGB images they came from."""
        crops = [self.crop(im) for im in images]
        return torch.stack([self.to_tensor(c) for c in crops]), crops


class FamilyPreprocess:
    """The family's resize + centre-crop transform at the encoder's native size (used when the
    model folder has no image processor settings)."""

    def __init__(self, family: str, size: int, model_dir: str | None = None):
        self.transform = ImageTransform.for_encoder(family, size, model_dir)

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        return self.transform(images)[0]

    def describe(self) -> str:
        t = self.transform
        return f"resize+center-crop {t.size}px, mean={list(t.mean)}, std={list(t.std)}"


class ProcessorPreprocess:
    """An encoder's own Hugging Face image processor (resize + centre crop; of an AnyRes
    processor only the base crop), as a picklable callable for DataLoader workers."""

    def __init__(self, processor: Any, expected_size: int | None = None):
        self.processor = processor
        self.expected_size = expected_size

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        if pixels.dim() == 5 and getattr(self.processor, "image_grid_pinpoints", None):
            pixels = pixels[:, 0]  # AnyRes (LLaVA-OneVision): calibrate on the base crop, as the paper does
        if pixels.dim() != 4:
            raise ConfigError(
                f"image processor {type(self.processor).__name__} returned pixel_values of shape "
                f"{tuple(pixels.shape)}; "
                "calibration needs one square crop per image (no AnyRes tiling)"
            )
        if self.expected_size is not None and tuple(pixels.shape[-2:]) != (self.expected_size, self.expected_size):
            raise ConfigError(
                f"image processor {type(self.processor).__name__} gives {tuple(pixels.shape[-2:])} pixels but the "
                f"encoder expects {self.expected_size}x{self.expected_size}"
            )
        return pixels

    def describe(self) -> str:
        p = self.processor
        size, crop = _plain(getattr(p, "size", None)), _plain(getattr(p, "crop_size", None))
        return f"{type(p).__name__}(size={size}, crop_size={crop})"


def _plain(size: Any) -> Any:
    """A processor size setting as a short dict of its set fields (transformers 5 uses SizeDict)."""
    if size is None or isinstance(size, (int, float)):
        return size
    items = dict(size) if isinstance(size, dict) else dict(vars(size)) if hasattr(size, "__dict__") else {}
    return {k: v for k, v in items.items() if v is not None} or size


Preprocessor = Union[FamilyPreprocess, ProcessorPreprocess]


def preprocess_for(encoder: str | Path, runner: Any) -> Preprocessor:
    """The encoder's own image processor when it has ``preprocessor_config.json`` (local folder or
    hub repo), else its family's transform at the runner's image size."""
    import transformers

    if not _has_processor_config(encoder):
        return FamilyPreprocess(runner.family, runner.image_size)
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(encoder)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"encoder {encoder}: cannot load its image processor ({exc})") from None
    return ProcessorPreprocess(processor, runner.image_size)


def _has_processor_config(encoder: str | Path) -> bool:
    local = Path(encoder)
    if local.is_dir():
        return (local / "preprocessor_config.json").is_file()
    from transformers.utils import cached_file

    try:
        found = cached_file(str(encoder), "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError as exc:
        raise ConfigError(f"encoder {encoder}: cannot look up its image processor settings ({exc})") from None
    return found is not None
