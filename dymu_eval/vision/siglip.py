"""SiglipVisionModel: no CLS token (every token may merge), no LayerNorm before the blocks.

Its blocks are laid out like CLIP's (layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2,
mlp), so only the embedding step and the CLS flag differ.
"""
from __future__ import annotations

import torch
from transformers import SiglipVisionModel

from .clip import ClipAdapter
from .family import register


@register
class SiglipAdapter(ClipAdapter):
    family = "siglip"
    has_cls = False

    @classmethod
    def matches(cls, model) -> bool:
        return isinstance(model, SiglipVisionModel)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h, w = pixel_values.shape[-2:]
        resize = (h, w) != (self.image_size, self.image_size)
        return self.model.embeddings(pixel_values, interpolate_pos_encoding=resize)
