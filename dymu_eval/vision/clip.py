"""CLIPVisionModel: CLS token, a LayerNorm before the first block (``pre_layrnorm``)."""
from __future__ import annotations

import torch
from transformers import CLIPVisionModel

from .family import FamilyAdapter, LayerParts, heads_of, register


@register
class ClipAdapter(FamilyAdapter):
    family = "clip"
    has_cls = True

    @classmethod
    def matches(cls, model) -> bool:
        return isinstance(model, CLIPVisionModel)

    @property
    def blocks(self):
        return self.model.encoder.layers

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h, w = pixel_values.shape[-2:]
        resize = (h, w) != (self.image_size, self.image_size)
        x = self.model.embeddings(pixel_values, interpolate_pos_encoding=resize)
        return self.model.pre_layrnorm(x)

    def layer(self, i: int) -> LayerParts:
        blk = self.blocks[i]
        att = blk.self_attn
        heads, head_dim = heads_of(att, self.config.hidden_size)
        return LayerParts(
            ln1=blk.layer_norm1, q=att.q_proj, k=att.k_proj, v=att.v_proj, o=att.out_proj,
            ln2=blk.layer_norm2, mlp=blk.mlp, num_heads=heads, head_dim=head_dim, scale=float(att.scale),
        )
