"""The AnyRes layout toolkit: how LLaVA-NeXT/OneVision-style models lay crops, unpadded grids,
newlines and bilinear resizes out as positions, written as linear maps from source ids.

A :class:`GridPiece` is a run of positions of the unmodified sequence: a canvas of source ids
(crop or frame c, patch p -> c*N + p), optionally resized bilinearly, optionally with one newline
after each row; or a lone newline. Composed with a merge map (``to_rows``), it gives every position
its mix over merged rows (DESIGN §2, mixed positions). Families build their pieces from the
processor's output; the maths here is family-free.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError

NEWLINE = -1  # source id of the image_newline vector in a position's mix
DROPPED = -2  # merged-row id of a patch a selection dropped (random pruning)


def bilinear_taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(index (n_out, 2), weight (n_out, 2)): the input rows ``F.interpolate(mode="bilinear")``
    mixes into each output row along one axis (align_corners=False), from the function itself."""
    basis = torch.eye(n_in, dtype=torch.float32).view(1, n_in, n_in, 1)  # the dtype the stock model pools in
    w = F.interpolate(basis, size=(n_out, 1), mode="bilinear")[0, :, :, 0].T.double()  # (n_out, n_in)
    weight, index = w.topk(min(2, n_in), dim=1)
    return index, weight


def bilinear_mix(ids: torch.Tensor, out_h: int, out_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A canvas of source ids (H, W) resized bilinearly to (out_h, out_w): per output position
    (row-major) the up-to-4 source ids and their weights, each (out_h*out_w, 4)."""
    h, w = ids.shape
    iy, wy = bilinear_taps(h, out_h)
    ix, wx = bilinear_taps(w, out_w)
    src = ids[iy[:, None, :, None], ix[None, :, None, :]]  # (oh, ow, 2, 2)
    wt = wy[:, None, :, None] * wx[None, :, None, :]
    return src.reshape(out_h * out_w, -1), wt.reshape(out_h * out_w, -1)


@dataclass
class GridPiece:
    """A run of positions of the stock sequence: a canvas of source ids (H, W), optionally resized
    bilinearly to ``size``, optionally with one newline after each row; or a lone newline
    (``ids`` None). Ids are local (crop or frame c, patch p -> c*N + p) until ``to_rows``."""

    ids: torch.Tensor | None
    size: tuple[int, int] | None = None
    row_newlines: bool = False

    def to_rows(self, rows_of: torch.Tensor) -> GridPiece:
        """The same segment over merged-row ids: ``rows_of`` maps every local id to its merged row."""
        return GridPiece(None if self.ids is None else rows_of[self.ids], self.size, self.row_newlines)

    def mixes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(src (P, K), weight (P, K)) of every position: the merged rows it mixes (NEWLINE for the newline)."""
        if self.ids is None:
            return torch.full((1, 1), NEWLINE, dtype=torch.long), torch.ones(1, 1, dtype=torch.float64)
        if self.size is None:
            src = self.ids.reshape(-1, 1)
            wt = torch.ones(src.shape, dtype=torch.float64)
        else:
            src, wt = bilinear_mix(self.ids, *self.size)
        if bool((src == DROPPED).any()):  # the mix over kept patches only; all dropped: weight 0
            wt = torch.where(src == DROPPED, 0.0, wt)
            total = wt.sum(1, keepdim=True)
            wt = torch.where(total > 0, wt / total.clamp(min=1e-300), 0.0)
            src = torch.where(src == DROPPED, 0, src)
        if self.size is not None:
            src, wt = canonical_mix(src, wt)
        if self.row_newlines:
            rows, k = self._rows(), src.shape[1]
            nl_w = torch.zeros(rows, 1, k, dtype=torch.float64)
            nl_w[:, :, 0] = 1
            src = torch.cat([src.view(rows, -1, k), torch.full((rows, 1, k), NEWLINE, dtype=torch.long)], 1)
            wt = torch.cat([wt.view(rows, -1, k), nl_w], 1)
            src, wt = src.reshape(-1, k), wt.reshape(-1, k)
        return src, wt

    def values(self, table: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
        """(P, D) what the stock model feeds at each position, with its own arithmetic
        (``F.interpolate`` over copies of the projected merged rows)."""
        if self.ids is None:
            return newline[None]
        kept = (self.ids != DROPPED)[..., None]
        x = torch.where(kept, table[self.ids.clamp(min=0)], 0.0)  # (H, W, D)
        if self.size is not None:
            x = resize_grid(x, self.size)
            if not bool(kept.all()):  # renormalized over the kept patches (a position with none is dropped later)
                x = x / resize_grid(kept.to(x.dtype), self.size).clamp(min=torch.finfo(x.dtype).tiny)
        if self.row_newlines:
            x = torch.cat([x, newline.expand(x.shape[0], 1, -1)], 1)
        return x.reshape(-1, x.shape[-1])

    def _rows(self) -> int:
        return self.size[0] if self.size is not None else self.ids.shape[0]


def resize_grid(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, D) -> (size, D) with the stock model's bilinear interpolation."""
    return F.interpolate(x.permute(2, 0, 1)[None], list(size), mode="bilinear")[0].permute(1, 2, 0)


def stack_mixes(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (src, weight) pairs of different K; padding slots point at row 0 with weight 0."""
    k = max(p[0].shape[1] for p in parts)
    srcs = [F.pad(s, (0, k - s.shape[1])) for s, _ in parts]
    wts = [F.pad(w, (0, k - w.shape[1])) for _, w in parts]
    return torch.cat(srcs), torch.cat(wts)


def count_positions(segments: list[GridPiece]) -> int:
    return sum(seg.mixes()[0].shape[0] for seg in segments)


def resize_placeholder_runs(ids: torch.Tensor, token: int, old: list[int], new: list[int]) -> torch.Tensor:
    """Placeholder runs of ``token`` resized in order: medium i's ``old[i]`` tokens become ``new[i]``."""
    if int((ids == token).sum()) != sum(old):
        raise ConfigError(f"the processor wrote {int((ids == token).sum())} placeholders for media of {sum(old)} "
                          "positions; its settings do not match the model config")
    out: list[int] = []
    medium, seen = 0, 0
    for t in ids.tolist():
        if t != token:
            out.append(t)
            continue
        if seen == 0:
            out += [token] * new[medium]
        seen += 1
        if seen == old[medium]:
            medium, seen = medium + 1, 0
    return torch.tensor(out, dtype=ids.dtype)


def canonical_mix(src: torch.Tensor, wt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each position's mix with equal sources combined, zero weights dropped, sources sorted, and
    a mix of a single source given weight exactly 1 (it *is* that row)."""
    k = src.shape[1]
    if k == 1:
        return src, torch.ones_like(wt)
    wt = torch.where(wt > 0, wt, 0.0)
    same = src[:, :, None] == src[:, None, :]  # (P, K, K)
    earlier = torch.tril(torch.ones(k, k, dtype=torch.bool), -1)
    dup = (same & earlier).any(2)  # an earlier slot holds the same source
    summed = (same.double() * wt[:, None, :]).sum(2)
    keep = ~dup & (summed > 0)
    big = torch.iinfo(torch.long).max
    key = torch.where(keep, src, big)
    key, order = key.sort(1)
    w = torch.where(keep, summed, 0.0).gather(1, order)
    s = torch.where(key == big, 0, key)
    single = keep.sum(1) == 1
    w[single, 0] = 1.0
    return s, w
