"""What the runner needs from a vision-tower family, and the registry of families.

Each family module (clip.py, siglip.py, dinov2.py) wraps the model's own submodules; the
algorithm that runs them lives only in block.py / runner.py.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LayerParts:
    """One transformer block as a pre-norm block: x += ls1(o(Attn(q,k,v of ln1(x)))); x += ls2(mlp(ln2(x)))."""

    ln1: nn.Module
    q: nn.Module
    k: nn.Module
    v: nn.Module
    o: nn.Module
    ln2: nn.Module
    mlp: nn.Module
    num_heads: int
    head_dim: int
    scale: float
    ls1: Fn | None = None
    ls2: Fn | None = None


class FamilyAdapter:
    """Per-family access to a Hugging Face vision model: embeddings and blocks."""

    family: str = ""
    has_cls: bool = True

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    @classmethod
    def matches(cls, model: nn.Module) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def blocks(self) -> nn.ModuleList:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def patch_size(self) -> int:
        p = self.config.patch_size
        return int(p[0] if isinstance(p, (tuple, list)) else p)

    @property
    def image_size(self) -> int:
        s = self.config.image_size
        return int(s[0] if isinstance(s, (tuple, list)) else s)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """(B,3,H,W) -> (B,N0,D) tokens that enter the first block (CLS first if the family has one)."""
        raise NotImplementedError

    def layer(self, i: int) -> LayerParts:  # pragma: no cover - interface
        raise NotImplementedError

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, cols) for an input of this size."""
        return height // self.patch_size, width // self.patch_size


ADAPTERS: list[type[FamilyAdapter]] = []


def register(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Class decorator: make a family known to ``VisionRunner.from_model``."""
    ADAPTERS.append(cls)
    return cls


def heads_of(attn: nn.Module, hidden: int) -> tuple[int, int]:
    """(num_heads, head_dim) of an attention module, whatever the family calls them."""
    heads = getattr(attn, "num_heads", None) or attn.num_attention_heads
    head_dim = getattr(attn, "head_dim", None) or hidden // heads
    return int(heads), int(head_dim)
