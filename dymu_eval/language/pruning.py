"""The pruning hook inside the LLM: a pruner cuts visual entries at decoder layers of its choosing.

A :class:`Pruner` declares its cuts (the first decoder layer that runs on the reduced rows, what it
must see there, and how positions continue) and chooses, at each cut, which image entries of the
current layout stay. The loop (``language.loop``) runs any number of cuts: before layer L it hands
the pruner a :class:`CutView` (the layout, the image mask, the hidden rows entering layer L, and
what layer L-1's attention recorded for it), then really drops the other entries, or only masks
them (``mode="mask"``, the reference the drop must equal). FastV is one cut with the last query's
attention and original positions; PyramidDrop is several cuts with contiguous positions.

A pruner may also return new rows (a :class:`Selection`, e.g. means of dropped rows): each becomes
one unique row and one image entry, inserted right after the sample's image entries, in both modes
(masking replaces only the removal), and a cut that inserts renumbers the entries contiguously.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .layout import VirtualLayout

__all__ = ["NEEDS", "POSITION_RULES", "Cut", "CutView", "Pruner", "Pruning", "Selection", "Stage", "drop_entries",
           "insert_entries", "mask_entries", "renumber_contiguous"]

# What layer L-1's attention can record for a cut at layer L (virtual entries of that layer):
#   last_query_attention (B, Nk): softmax attention of each sample's last query, mean over heads;
#   keys (B, Hkv, Nk, Dh) and queries (B, H, Nq, Dh): rotated at their positions.
NEEDS = ("last_query_attention", "keys", "queries")
# original: kept entries keep their positions (gaps where entries went; FastV, DART);
# contiguous: the kept entries are renumbered 0, 1, ... in order (PyramidDrop). While decoding, each
# group of layers continues its own numbering (the layers before a contiguous cut count the dropped
# entries, the layers after it do not); PyramidDrop's official code shifts one position id for all.
POSITION_RULES = ("original", "contiguous")


@dataclass(frozen=True)
class Cut:
    """``layer``: the first decoder layer that runs on the reduced rows; ``needs``: what layer - 1
    records for the choice (``NEEDS``); ``positions``: how positions continue (``POSITION_RULES``)."""

    layer: int
    needs: frozenset[str] = frozenset()
    positions: str = "original"


@dataclass
class CutView:
    """What a pruner sees at a cut. ``layout`` and ``image_mask`` (B, Nv) describe the current
    entries; ``hidden`` (B, Nu, D) the rows entering ``cut.layer``; ``recorded`` what ``cut.layer - 1``
    recorded (keys of ``NEEDS``); ``decoder`` the text decoder (its layers, norm and rotary)."""

    cut: Cut
    index: int  # which of the pruner's cuts this is
    layout: VirtualLayout
    image_mask: torch.Tensor
    hidden: torch.Tensor
    recorded: dict[str, torch.Tensor]
    decoder: torch.nn.Module
    initial_images: torch.Tensor | None = None  # (B,) image entries each sample had before the first cut
    inputs: torch.Tensor | None = None  # (B, Nu0, D) the rows that entered layer 0, over the first cut's layout
    origin: torch.Tensor | None = None  # (B, Nv) each entry's index in the first cut's layout (-1: inserted)
    memo: dict = field(default_factory=dict)  # what the pruner keeps between the cuts of one prefill

    @property
    def candidates(self) -> torch.Tensor:
        """(B, Nv) bool: the image entries still in play."""
        return self.image_mask & self.layout.valid


class Pruner:
    """Base class of LLM-side pruners: ``cuts`` and ``select``; ``check`` refuses settings the
    decoder cannot run (say what is wrong in a ConfigError naming the model_arg)."""

    def cuts(self) -> list[Cut]:
        raise NotImplementedError

    def select(self, view: CutView) -> torch.Tensor | Selection:
        """(B, Nv) bool over the current entries: True keeps an entry. Only image entries are
        read; every other valid entry stays whatever is returned. A :class:`Selection` adds new rows."""
        raise NotImplementedError

    def score_flops(self, view: CutView) -> list[float]:
        """Per sample, the FLOPs (2 per multiply-add, matmuls only) ``select`` spent at this cut beyond
        what the decoder's layers and the recorded ``last_query_attention`` cost (say a ranking that
        re-projects queries and keys). The FLOP accounting adds them to the prefill; default none."""
        return [0.0] * view.layout.batch_size

    def check(self, num_layers: int) -> None:
        """Refuse cuts the decoder cannot run: each layer in 1..num_layers-1, increasing."""
        layers = [c.layer for c in self.cuts()]
        if not layers or layers != sorted(set(layers)) or layers[0] < 1 or layers[-1] >= num_layers:
            raise ConfigError(f"{type(self).__name__}: cut layers {layers} must increase within 1..{num_layers - 1} "
                              f"for this {num_layers}-layer decoder")
        for cut in self.cuts():
            bad = set(cut.needs) - set(NEEDS)
            if bad or cut.positions not in POSITION_RULES:
                raise ConfigError(f"{type(self).__name__}: a cut needs {sorted(bad)} (known: {', '.join(NEEDS)}) "
                                  f"or positions {cut.positions!r} (known: {', '.join(POSITION_RULES)})")


@dataclass
class Selection:
    """What ``Pruner.select`` may return instead of a bare mask: ``keep`` (B, Nv) bool as there, and
    per sample ``inserted`` (n_b, D) new rows, each one image entry right after the sample's image
    entries (in order); the cut's positions must be contiguous (the new entries have no position of
    their own)."""

    keep: torch.Tensor
    inserted: list[torch.Tensor]


@dataclass
class Stage:
    """After one cut: the first layer on the reduced rows, and per sample the image entries (virtual
    positions) and distinct visual rows that remain (inserted ones included), the FLOPs the choice
    itself spent (``Pruner.score_flops``) and the rows it inserted."""

    layer: int
    entries: list[int]
    rows: list[int]
    score_flops: list[float] = field(default_factory=list)
    inserted: list[int] = field(default_factory=list)


@dataclass
class Pruning:
    """A pruner applied to one batch: the image entries of its layout (``image_mask`` (B, Nv)), drop
    or mask, and, once a prefill ran, the stages it produced."""

    pruner: Pruner
    image_mask: torch.Tensor
    mode: str = "drop"
    stages: list[Stage] = field(default_factory=list)

    def check(self, layout: VirtualLayout, num_layers: int) -> None:
        self.pruner.check(num_layers)
        if self.mode not in ("drop", "mask"):
            raise ConfigError(f"pruning mode {self.mode!r}: use 'drop' or 'mask'")
        if self.image_mask.dtype != torch.bool or tuple(self.image_mask.shape) != tuple(layout.valid.shape):
            raise ConfigError(f"image_mask must be a bool tensor of shape {tuple(layout.valid.shape)} (the "
                              f"virtual layout), got {self.image_mask.dtype} {tuple(self.image_mask.shape)}")

    def extended(self, extra: int) -> Pruning:
        """The same pruning over a layout grown by ``extra`` text entries (a loglikelihood continuation)."""
        pad = torch.zeros(self.image_mask.shape[0], extra, dtype=torch.bool, device=self.image_mask.device)
        return Pruning(self.pruner, torch.cat([self.image_mask, pad], 1), self.mode)

    @property
    def kept_image_tokens(self) -> list[int] | None:
        return self.stages[-1].entries if self.stages else None


def renumber_contiguous(layout: VirtualLayout) -> VirtualLayout:
    """The layout with its valid entries at consecutive positions from each sample's first one."""
    valid = layout.valid
    rank = valid.long().cumsum(1) - 1
    first = torch.where(valid, layout.positions, torch.iinfo(torch.long).max).amin(1, keepdim=True)
    first = torch.where(valid.any(1, keepdim=True), first, 0)
    positions = torch.where(valid, first + rank, layout.positions)
    return VirtualLayout(layout.index, layout.weight, positions, valid, layout.unique_valid)


def mask_entries(layout: VirtualLayout, keep: torch.Tensor) -> VirtualLayout:
    """The same layout with the dropped entries marked invalid (the mask variant of a cut)."""
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


def insert_entries(layout: VirtualLayout, hidden: torch.Tensor, after: torch.Tensor,
                   rows: list[torch.Tensor]) -> tuple[VirtualLayout, torch.Tensor, torch.Tensor]:
    """Insert ``rows[b]`` (n_b, D) as new unique rows, each its own one-hot entry, right after entry
    ``after[b]`` (-1: before every entry); the valid entries are renumbered contiguously from the
    sample's first position. The new unique rows go after the rows the entries up to ``after`` use,
    so a layout whose entries are its rows stays one. Returns (layout, hidden (B, Nu', D), source
    (B, Nv') the old entry of each new entry, -1 for an inserted one)."""
    b_size, nv, k = layout.index.shape
    nu, dev = layout.unique_len, layout.index.device
    extra = max(r.shape[0] for r in rows)
    index = torch.zeros(b_size, nv + extra, k, dtype=torch.long, device=dev)
    weight = torch.zeros(b_size, nv + extra, k, dtype=layout.weight.dtype, device=dev)
    pos = torch.zeros(b_size, nv + extra, dtype=torch.long, device=dev)
    valid = torch.zeros(b_size, nv + extra, dtype=torch.bool, device=dev)
    unique_valid = torch.zeros(b_size, nu + extra, dtype=torch.bool, device=dev)
    new_hidden = hidden.new_zeros(b_size, nu + extra, hidden.shape[-1])
    source = torch.full((b_size, nv + extra), -1, dtype=torch.long, device=dev)
    ar_v, ar_u = torch.arange(nv, device=dev), torch.arange(nu, device=dev)
    for b in range(b_size):
        n, a = rows[b].shape[0], int(after[b])
        used = (layout.weight[b, : a + 1] != 0) & layout.valid[b, : a + 1, None]
        r0 = int(layout.index[b, : a + 1][used].max()) if bool(used.any()) else -1  # new rows go after r0
        row_at = ar_u + (extra - n) + n * (ar_u > r0)  # old row -> new row
        new_rows = extra - n + r0 + 1 + torch.arange(n, device=dev)
        entry_at = ar_v + (extra - n) + n * (ar_v > a)  # old entry -> new entry
        new_entries = extra - n + a + 1 + torch.arange(n, device=dev)
        new_hidden[b, row_at] = hidden[b]
        new_hidden[b, new_rows] = rows[b].to(hidden.dtype)
        unique_valid[b, row_at] = layout.unique_valid[b]
        unique_valid[b, new_rows] = True
        index[b, entry_at] = row_at[layout.index[b]]
        index[b, new_entries] = new_rows[:, None]
        weight[b, entry_at] = layout.weight[b]
        weight[b, new_entries, 0] = 1
        valid[b, entry_at] = layout.valid[b]
        valid[b, new_entries] = True
        pos[b, entry_at] = layout.positions[b]
        source[b, entry_at] = ar_v
        first = layout.positions[b][layout.valid[b]].min() if bool(layout.valid[b].any()) else 0
        pos[b, valid[b]] = first + torch.arange(int(valid[b].sum()), device=dev)
    return VirtualLayout(index, weight, pos, valid, unique_valid), new_hidden, source


def visual_rows(layout: VirtualLayout, image_mask: torch.Tensor) -> list[int]:
    """Per sample, the distinct rows the valid image entries use."""
    out = []
    for b in range(layout.batch_size):
        entries = layout.valid[b] & image_mask[b]
        used = layout.weight[b][entries] != 0
        out.append(int(torch.unique(layout.index[b][entries][used]).numel()))
    return out
