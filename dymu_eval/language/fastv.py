"""FastV (Chen et al., ECCV'24): after decoder layer K, keep only the image tokens the last token attends to most.

Ranking uses layer K-1's attention of the last token, averaged over heads (what the official
code does). ``mode="drop"`` removes the other image entries from layers >= K (rows really
disappear, so compute falls; positions stay the original ones); ``mode="mask"`` keeps the rows
and hides the dropped entries from attention. Both must give the same logits and tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..vocabulary import check_fastv
from .layout import VirtualLayout

__all__ = ["FastV", "drop_entries", "mask_entries", "select_kept"]


@dataclass
class FastV:
    """``k``: first layer that sees the reduced sequence; ``ratio``: fraction of image tokens dropped (FastV's R);
    ``image_mask`` (B, Nv) bool marks image entries of the virtual layout."""

    k: int
    ratio: float
    image_mask: torch.Tensor
    mode: str = "drop"

    def check(self, layout: VirtualLayout, num_layers: int) -> None:
        check_fastv(self.k, self.ratio, num_layers)
        if self.mode not in ("drop", "mask"):
            raise ConfigError(f"FastV mode {self.mode!r}: use 'drop' or 'mask'")
        if self.image_mask.dtype != torch.bool or tuple(self.image_mask.shape) != tuple(layout.valid.shape):
            raise ConfigError(f"FastV image_mask must be a bool tensor of shape {tuple(layout.valid.shape)} (the "
                              f"virtual layout), got {self.image_mask.dtype} {tuple(self.image_mask.shape)}")

    def n_keep(self, n_image: int) -> int:
        """round(n_image * (1 - ratio)), halves rounded up."""
        return math.floor(n_image * (1.0 - float(self.ratio)) + 0.5)


def select_kept(scores: torch.Tensor, fastv: FastV, valid: torch.Tensor) -> torch.Tensor:
    """(B, Nv) bool: valid entries that survive — every non-image entry plus the top-scoring image entries."""
    image = fastv.image_mask.to(valid.device) & valid
    keep = valid & ~image
    for b in range(scores.shape[0]):
        cand = image[b].nonzero()[:, 0]
        n = fastv.n_keep(cand.numel())
        if n == 0:
            continue
        order = torch.sort(scores[b, cand].float(), descending=True, stable=True).indices[:n]
        keep[b, cand[order]] = True
    return keep


def mask_entries(layout: VirtualLayout, keep: torch.Tensor) -> VirtualLayout:
    """The same layout with the dropped entries marked invalid (FastV's mask variant)."""
    return VirtualLayout(layout.index, layout.weight, layout.positions, layout.valid & keep, layout.unique_valid)


def drop_entries(layout: VirtualLayout, keep: torch.Tensor) -> tuple[VirtualLayout, torch.Tensor, torch.Tensor]:
    """Remove dropped entries and the unique rows no kept entry uses.

    Returns (new layout, row_index (B, Nu') into the old unique rows to gather hidden states,
    origin (B, Nv') old virtual index of each new entry; padding entries point at 0).
    """
    b_size, _, k = layout.index.shape
    dev = layout.index.device
    per_rows, per_entries = [], []
    for b in range(b_size):
        entries = (layout.valid[b] & keep[b]).nonzero()[:, 0]
        used = layout.weight[b, entries] != 0
        rows = torch.unique(layout.index[b, entries][used])  # sorted: original row order is kept
        per_rows.append(rows)
        per_entries.append(entries)
    nu = max(r.numel() for r in per_rows)
    nv = max(e.numel() for e in per_entries)
    index = torch.zeros(b_size, nv, k, dtype=torch.long, device=dev)
    weight = torch.zeros(b_size, nv, k, dtype=layout.weight.dtype, device=dev)
    pos = torch.zeros(b_size, nv, dtype=torch.long, device=dev)
    valid = torch.zeros(b_size, nv, dtype=torch.bool, device=dev)
    unique_valid = torch.zeros(b_size, nu, dtype=torch.bool, device=dev)
    row_index = torch.zeros(b_size, nu, dtype=torch.long, device=dev)
    origin = torch.zeros(b_size, nv, dtype=torch.long, device=dev)
    for b in range(b_size):
        rows, entries = per_rows[b], per_entries[b]
        pad_u, pad_v = nu - rows.numel(), nv - entries.numel()
        remap = torch.zeros(layout.unique_len, dtype=torch.long, device=dev)
        remap[rows] = torch.arange(rows.numel(), device=dev) + pad_u
        w = layout.weight[b, entries]
        index[b, pad_v:] = torch.where(w != 0, remap[layout.index[b, entries]], pad_u)
        index[b, :pad_v] = pad_u
        weight[b, pad_v:] = w
        pos[b, pad_v:] = layout.positions[b, entries]
        valid[b, pad_v:] = True
        unique_valid[b, pad_u:] = True
        row_index[b, pad_u:] = rows
        row_index[b, :pad_u] = rows[0]
        origin[b, pad_v:] = entries
    return VirtualLayout(index, weight, pos, valid, unique_valid), row_index, origin
