"""PyramidDrop (Xing et al., CVPR'25): at each stage layer, keep the image entries the last token attends to most.

Several cuts of the pruning hook (``language.pruning``). At a stage layer L the ranking recomputes
layer L's own query and keys on ``input_layernorm`` of the rows entering it, rotated at the entries'
current positions: one query (the last entry, the end of the instruction) against every key up to
it, softmax over that whole row, mean over heads; only the image entries' weights are compared.
After stage i each sample keeps ``int(N_img * ratios[i])`` of its ``N_img`` original image entries,
and the kept entries are renumbered contiguously (what the official code does with its position ids).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .fastv import top_image_entries
from .pruning import Cut, CutView, Pruner
from .state import Side, rotate

__all__ = ["PyramidDrop", "last_query_scores"]


@dataclass
class PyramidDrop(Pruner):
    """``layers``: the stage layers (each the first layer on its reduced rows), increasing;
    ``ratios``: the fraction of the original image entries kept after each stage, decreasing."""

    layers: tuple[int, ...]
    ratios: tuple[float, ...]

    def cuts(self) -> list[Cut]:
        return [Cut(layer, frozenset(), "contiguous") for layer in self.layers]

    def select(self, view: CutView) -> torch.Tensor:
        scores = last_query_scores(view)
        ratio = float(self.ratios[view.index])
        keep = torch.zeros_like(view.candidates)
        for b in range(keep.shape[0]):
            n = int(int(view.initial_images[b]) * ratio)
            keep[b: b + 1] = top_image_entries(scores[b: b + 1], view.candidates[b: b + 1], lambda _, n=n: n)
        return keep

    def score_flops(self, view: CutView) -> list[float]:
        """The key projection over the sample's rows, the query projection of the last entry's rows,
        and the one query row against the sample's entries."""
        cfg = view.decoder.config
        attn = view.decoder.layers[view.cut.layer].self_attn
        q_width = attn.q_proj.out_features
        kv_width = attn.k_proj.out_features
        hidden = cfg.hidden_size
        rows = view.layout.unique_valid.sum(1).tolist()
        entries = view.layout.valid.sum(1).tolist()
        k = view.layout.index.shape[2]
        return [2.0 * (r * hidden * kv_width + k * hidden * q_width + e * q_width) for r, e in zip(rows, entries)]


def last_query_scores(view: CutView) -> torch.Tensor:
    """(B, Nv): layer ``view.cut.layer``'s softmax attention of each sample's last valid entry over
    the entries of ``view.layout`` (zero where not attended), mean over heads."""
    layer = view.decoder.layers[view.cut.layer]
    attn = layer.self_attn
    layout = view.layout
    x = layer.input_layernorm(view.hidden)  # (B, Nu, D)
    b_size, _, _ = x.shape
    head_dim = attn.head_dim
    keys = attn.k_proj(x).view(b_size, x.shape[1], -1, head_dim).transpose(1, 2)  # (B, Hkv, Nu, Dh)
    side = Side.from_layout(layout, view.decoder.rotary_emb, x)
    keys = side.expand_rotated(keys)  # (B, Hkv, Nv, Dh) rotated at the entries' positions
    ar = torch.arange(layout.virtual_len, device=x.device)
    last = torch.where(layout.valid, ar, -1).amax(1)  # (B,)
    batch = torch.arange(b_size, device=x.device)
    idx, w = layout.index[batch, last], layout.weight[batch, last]  # (B, K)
    rows = torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, K, D)
    query = (attn.q_proj(rows) * w.to(x.dtype).unsqueeze(-1)).sum(1)  # (B, H * Dh)
    query = query.view(b_size, -1, 1, head_dim)  # (B, H, 1, Dh)
    cos, sin = side.cos[batch, :, last].unsqueeze(2), side.sin[batch, :, last].unsqueeze(2)  # (B, 1, 1, Dh)
    query = rotate(query, cos, sin)
    hkv = keys.shape[1]
    acc = torch.promote_types(x.dtype, torch.float32)
    query = query.view(b_size, hkv, -1, head_dim).to(acc)  # (B, Hkv, rep, Dh)
    scores = torch.matmul(query, keys.to(acc).transpose(-1, -2)) * attn.scaling  # (B, Hkv, rep, Nv)
    q_pos = layout.positions[batch, last]
    allowed = (layout.positions <= q_pos[:, None]) & layout.valid
    scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
    return scores.softmax(-1).mean(dim=(1, 2))
