"""Image -> pixel tensor for an encoder: shortest side resized to S, centre crop S x S,
normalised with the encoder's mean/std (from preprocessor_config.json when the model folder
has one, else the family's published values). The cropped image is kept for merge maps."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
        mean, std = FAMILY_MEAN_STD.get(family, FAMILY_MEAN_STD["clip"])
        cfg = Path(model_dir) / "preprocessor_config.json" if model_dir else None
        if cfg is not None and cfg.is_file():
            try:
                data = json.loads(cfg.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{cfg}: cannot read the image processor settings ({exc})") from None
            mean = tuple(data.get("image_mean", mean))
            std = tuple(data.get("image_std", std))
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
