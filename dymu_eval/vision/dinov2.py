"""Dinov2Model: CLS token, LayerScale after attention and after the MLP, any input size."""
from __future__ import annotations

import torch
from transformers import Dinov2Model

from .family import FamilyAdapter, LayerParts, heads_of, register


@register
class Dinov2Adapter(FamilyAdapter):
    family = "dinov2"
    has_cls = True

    @classmethod
    def matches(cls, model) -> bool:
        return isinstance(model, Dinov2Model)

    @property
    def blocks(self):
        return self.model.encoder.layer

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.embeddings(pixel_values)

    def layer(self, i: int) -> LayerParts:
        blk = self.blocks[i]
        att = blk.attention
        heads, head_dim = heads_of(att, self.config.hidden_size)
        return LayerParts(
            ln1=blk.norm1, q=att.q_proj, k=att.k_proj, v=att.v_proj, o=att.o_proj,
            ln2=blk.norm2, mlp=blk.mlp, num_heads=heads, head_dim=head_dim, scale=float(att.scaling),
            ls1=blk.layer_scale1, ls2=blk.layer_scale2,
        )
