"""SiglipVisionModel: no CLS token (every token may merge), no LayerNorm before the blocks."""
from __future__ import annotations

import torch
from transformers import SiglipVisionModel

from .family import FamilyAdapter, LayerParts, heads_of, register


@register
class SiglipAdapter(FamilyAdapter):
    family = "siglip"
    has_cls = False

    @classmethod
    def matches(cls, model) -> bool:
        return isinstance(model, SiglipVisionModel)

    @property
    def blocks(self):
        return self.model.encoder.layers

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h, w = pixel_values.shape[-2:]
        resize = (h, w) != (self.image_size, self.image_size)
        return self.model.embeddings(pixel_values, interpolate_pos_encoding=resize)

    def layer(self, i: int) -> LayerParts:
        blk = self.blocks[i]
        att = blk.self_attn
        heads, head_dim = heads_of(att, self.config.hidden_size)
        return LayerParts(
            ln1=blk.layer_norm1, q=att.q_proj, k=att.k_proj, v=att.v_proj, o=att.out_proj,
            ln2=blk.layer_norm2, mlp=blk.mlp, num_heads=heads, head_dim=head_dim, scale=float(att.scale),
        )
