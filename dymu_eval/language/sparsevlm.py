"""SparseVLM (Zhang et al., ICML'25; official code ``Gumpest/SparseVLMs`` v1.5): text raters choose the image
tokens to keep at three layers, and the best of the dropped ones are recycled as cluster means.

Several cuts of the pruning hook (``language.pruning``), as ``modelling_sparse_llama.py`` does:
- raters, once, on the input embeddings: m = softmax over the text (the entries after the last image
  entry) of visual · text, averaged over the image entries; the raters are the text entries with m
  above its mean;
- after each scoring layer L (official ``pruning_loc`` 2/6/15; the cut is at L + 1), each image entry's
  score is layer L's softmax attention from the raters, averaged over heads and raters (only the
  raters' rows are computed); the ``keep[i]`` best stay (at most all but one, as the official
  ``min(k, n - 1)``);
- recycling: the ``int(0.3 * n) + 1`` best-scoring of the n dropped entries are clustered into
  ``int(m / 10) + 1`` groups by DPC-kNN (``utils.py::cluster_and_merge``: density from the k nearest,
  distance to a denser token, centres by density x distance, nearest-centre assignment), and each
  group's mean row is inserted after the kept image entries, where the next stage can drop it again;
- positions continue contiguously (the official code truncates its position ids).
Where this differs from the official code (batches, ties, the 1e-6 guards): docs/sparsevlm.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..methods.builtin.sparsevlm import recycled_counts
from .layout import mix_rows
from .pruning import Cut, CutView, Pruner, Selection

__all__ = ["SparseVLM", "cluster_and_merge", "rater_attention"]

@dataclass
class SparseVLM(Pruner):
    """``layers``: the scoring layers, increasing (each cut starts at the next layer; official 2/6/15);
    ``keep``: image entries kept at each, decreasing (official 300/200/110 for "192");
    ``recycle``: insert the cluster means of the best dropped entries."""

    layers: tuple[int, ...]
    keep: tuple[int, ...]
    recycle: bool = True

    def cuts(self) -> list[Cut]:
        return [Cut(layer + 1, frozenset({"queries", "keys"}), "contiguous") for layer in self.layers]

    def check(self, num_layers: int) -> None:
        if self.layers and self.layers[-1] + 1 >= num_layers:
            raise ConfigError(f"sparsevlm_layers={'/'.join(map(str, self.layers))}: scoring layers must be in "
                              f"0..{num_layers - 2} for this {num_layers}-layer decoder (the cut follows each)")
        super().check(num_layers)

    def select(self, view: CutView) -> Selection:
        if view.index == 0:
            view.memo["raters"] = _raters(view)
        raters = view.memo["raters"]
        scores, attn_flops = rater_attention(view, raters)
        hidden = mix_rows(view.hidden, view.layout.index, view.layout.weight)  # (B, Nv, D) entry states
        keep = torch.zeros_like(view.candidates)
        inserted, cluster_flops = [], []
        for b in range(keep.shape[0]):
            cand = view.candidates[b].nonzero()[:, 0]
            count = self.keep[view.index]
            if view.index == 0 and count >= int(view.initial_images[b]):
                raise ConfigError(f"sparsevlm_keep={'/'.join(map(str, self.keep))}: sample {b} has only "
                                  f"{int(view.initial_images[b])} image tokens; keep fewer at the first stage")
            n = min(count, cand.numel() - 1) if cand.numel() else 0
            order = torch.sort(scores[b, cand], descending=True, stable=True).indices
            keep[b, cand[order[:n]]] = True
            dropped = cand[order[n:]]  # best first
            if not self.recycle or dropped.numel() == 0:
                inserted.append(hidden.new_zeros(0, hidden.shape[-1]))
                cluster_flops.append(0.0)
                continue
            n_merge, n_clusters = recycled_counts(dropped.numel())
            x = hidden[b, dropped[:n_merge]]
            inserted.append(cluster_and_merge(x, n_clusters))
            cluster_flops.append(2.0 * n_merge * n_merge * x.shape[-1])  # the distances' Gram matrix
        view.memo[("flops", view.index)] = [a + c + (view.memo["rater_flops"][b] if view.index == 0 else 0.0)
                                            for b, (a, c) in enumerate(zip(attn_flops, cluster_flops))]
        return Selection(keep, inserted)

    def score_flops(self, view: CutView) -> list[float]:
        """The raters' visual · text products (first cut), the raters' attention rows over the
        sample's entries, and the clustering's Gram matrix."""
        return view.memo[("flops", view.index)]


def _raters(view: CutView) -> list[torch.Tensor]:
    """Per sample, the input-layout indices of the rater entries (the text entries after the last
    image entry whose visual relevance m exceeds its mean; all of them when none does)."""
    layout, image = view.layout, view.image_mask & view.layout.valid
    embeds = mix_rows(view.inputs, layout.index, layout.weight)  # (B, Nv, D)
    acc = torch.promote_types(embeds.dtype, torch.float32)
    ar = torch.arange(layout.virtual_len, device=embeds.device)
    raters, flops = [], []
    for b in range(layout.batch_size):
        vis = image[b].nonzero()[:, 0]
        if vis.numel() == 0:
            raters.append(vis)
            flops.append(0.0)
            continue
        text = (layout.valid[b] & ~image[b] & (ar > vis[-1])).nonzero()[:, 0]
        if text.numel() == 0:
            raise ConfigError(f"method=sparsevlm: sample {b} has no text after its image (SparseVLM's raters "
                              "are the text tokens that follow the image)")
        m = (embeds[b, vis].to(acc) @ embeds[b, text].to(acc).T).softmax(1).mean(0)  # (T,)
        chosen = text[m > m.mean()]
        raters.append(chosen if chosen.numel() else text)
        flops.append(2.0 * vis.numel() * text.numel() * embeds.shape[-1])
    view.memo["rater_flops"] = flops
    return [view.origin[b, r] for b, r in enumerate(raters)]


def rater_attention(view: CutView, raters: list[torch.Tensor]) -> tuple[torch.Tensor, list[float]]:
    """((B, Nv) score of every entry: the scoring layer's softmax attention from the rater entries,
    mean over heads and raters, 0 where no rater looks; per sample the FLOPs of those rows)."""
    q, k = view.recorded["queries"], view.recorded["keys"]  # (B, H, Nv, Dh), (B, Hkv, Nv, Dh): rotated
    layout = view.layout
    scale = view.decoder.layers[view.cut.layer - 1].self_attn.scaling
    acc = torch.promote_types(q.dtype, torch.float32)
    b_size, heads, _, head_dim = q.shape
    hkv = k.shape[1]
    scores = torch.zeros(b_size, layout.virtual_len, dtype=acc, device=q.device)
    flops = []
    for b in range(b_size):
        rows = (torch.isin(view.origin[b], raters[b]) & layout.valid[b]).nonzero()[:, 0]
        keys = layout.valid[b].nonzero()[:, 0]
        if rows.numel() == 0:
            flops.append(0.0)
            continue
        qb = q[b][:, rows].to(acc).view(hkv, heads // hkv, rows.numel(), head_dim)
        kb = k[b][:, keys].to(acc).unsqueeze(1)  # (Hkv, 1, Nk, Dh)
        logits = (qb @ kb.transpose(-1, -2)) * scale  # (Hkv, rep, R, Nk)
        allowed = layout.positions[b, keys][None] <= layout.positions[b, rows][:, None]
        attn = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
        scores[b, keys] = attn.mean(dim=(0, 1)).mean(0)
        flops.append(2.0 * rows.numel() * keys.numel() * heads * head_dim)
    return scores, flops


def cluster_and_merge(x: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """DPC-kNN over the rows of ``x`` (m, D): (n_clusters, D) cluster means, centres in order of
    density x distance (best first), as the official ``cluster_and_merge``."""
    acc = torch.float64  # distances from a Gram matrix: float64 keeps the cancellation below fp32's rounding
    xa = x.to(acc)
    sq = (xa * xa).sum(-1)
    dist = (sq[:, None] + sq[None] - 2 * (xa @ xa.T)).clamp_min(0).sqrt() / x.shape[-1] ** 0.5
    dist.fill_diagonal_(0)
    m = x.shape[0]
    nearest = torch.topk(dist, k=n_clusters, dim=-1, largest=False).values
    density = (-(nearest ** 2).mean(-1)).exp()
    ar = torch.arange(m, device=x.device)
    # j is denser than i: higher density, exact ties to the earlier row (the official code adds 1e-6 noise)
    denser = (density[None] > density[:, None]) | ((density[None] == density[:, None]) & (ar[None] < ar[:, None]))
    delta = torch.where(denser, dist, dist.max()).amin(-1)
    centres = torch.sort(delta * density, descending=True, stable=True).indices[:n_clusters]
    assign = dist[centres].argmin(0)  # nearest centre (first on ties)
    assign[centres] = torch.arange(n_clusters, device=x.device)
    sums = torch.zeros(n_clusters, x.shape[-1], dtype=acc, device=x.device).index_add_(0, assign, xa)
    counts = torch.bincount(assign, minlength=n_clusters).to(acc)
    return (sums / counts[:, None]).to(x.dtype)
