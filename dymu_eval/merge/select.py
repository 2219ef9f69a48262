"""Fixed-budget selection after the encoder: the baselines that keep a set number of tokens.

- ``RandomKeep``: a seeded random subset of k patch tokens (the subset depends on the seed and
  on the image, never on batch order), each kept token standing for its own patch.
- ``GridPool``: average pooling of the patch grid by an integer factor; a pooled token stands
  for its factor x factor patches.
- ``VisionZip`` (Yang et al., CVPR'25, training-free): *dominant* tokens ranked by the attention
  they receive (the CLS token's attention, summed over heads, as the official CLIP code does;
  without a CLS token, as VisionZip's SigLIP ports do, the mean attention each token receives
  from all tokens), then the remaining tokens merged into
  *contextual* tokens: uniform-stride targets, every other token assigned to its most similar
  target by head-mean key cosine, contextual token = target + mean(assigned).

Pure tensor code: a selector turns the unmerged output of the last encoder block into a new
``TokenState`` whose ``patch_to_token`` says which original patches each kept row stands for
(-1 for a dropped patch). A CLS token, when the encoder has one, stays row 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..vocabulary import check_keep
from .state import TokenState


@dataclass
class SelectionInput:
    """What a selector may read besides the tokens.

    grid: (rows, cols) of the patch grid; keys (B,T,C): head-mean keys of the last block run;
    importance (B,T): attention each token receives in that block (CLS row summed over heads,
    or the mean over heads and queries without CLS); image_ids: an integer per image derived
    from its pixels (seeds the random subsets); queries, projected_keys (B,T,H*Dh): the full-width
    query and key projections (bias included, unscaled) of the block that reads the output (the
    block after the last one run; the last block run, of its input, when no block follows)."""

    has_cls: bool
    grid: tuple[int, int]
    keys: torch.Tensor | None = None
    importance: torch.Tensor | None = None
    image_ids: list[int] | None = None
    queries: torch.Tensor | None = None
    projected_keys: torch.Tensor | None = None


@dataclass
class Grouping:
    """One image's selection: ``rows`` (R, D) output tokens, ``groups`` (N,) the row each input
    token ends in (-1: dropped), ``sizes`` (R,) how many input tokens each row stands for."""

    rows: torch.Tensor
    groups: torch.Tensor
    sizes: torch.Tensor


def resolve_keep(keep: float, n: int) -> int:
    """Tokens kept out of ``n``: an integer count (1..n) or a fraction in (0, 1] (rounded, at least 1)."""
    keep = check_keep(keep)
    if isinstance(keep, float):
        return max(1, math.floor(keep * n + 0.5))
    if keep > n:
        raise ConfigError(f"keep={int(keep)} is more than the {n} visual tokens of this image")
    return int(keep)


def random_subset(n: int, k: int, seed: int, image_id: int = 0) -> torch.Tensor:
    """Sorted indices of k of n tokens, drawn from (seed, image_id) alone: same inputs, same subset."""
    state = np.random.SeedSequence([int(seed), int(image_id) & 0xFFFFFFFF]).generate_state(2, dtype=np.uint32)
    gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(n, generator=gen)[:k].sort().values


def pool_groups(rows: int, cols: int, factor: int) -> torch.Tensor:
    """(rows*cols,) pooled-cell index of every patch (row-major on both grids)."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ConfigError(f"pool_factor={factor!r} must be an integer >= 1")
    if rows % factor or cols % factor:
        raise ConfigError(f"pool_factor={factor} does not divide the {rows}x{cols} patch grid; "
                          f"choose a factor that divides both {rows} and {cols}")
    r = torch.arange(rows).repeat_interleave(cols) // factor
    c = torch.arange(cols).repeat(rows) // factor
    return r * (cols // factor) + c


def group_mean(x: torch.Tensor, groups: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (R, D) mean of each group's tokens in fp32 or wider, sizes (R,)) for groups in 0..R-1 (-1 ignored)."""
    keep = groups >= 0
    acc = torch.promote_types(x.dtype, torch.float32)
    sums = torch.zeros(n_rows, x.shape[-1], dtype=acc, device=x.device)
    sums.index_add_(0, groups[keep], x[keep].to(acc))
    sizes = torch.bincount(groups[keep], minlength=n_rows).to(torch.float32)
    return (sums / sizes.to(acc).clamp(min=1).unsqueeze(-1)).to(x.dtype), sizes


def visionzip_groups(x: torch.Tensor, keys: torch.Tensor, importance: torch.Tensor, dominant: int, contextual: int,
                     forced: int = 0) -> Grouping:
    """VisionZip on one image's tokens ``x`` (N, D).

    The first ``forced`` tokens (the CLS token) are always dominant and count towards
    ``dominant``; the rest of the dominant set are the tokens with the highest ``importance``
    (N,). Output rows: [dominant tokens in original order | contextual tokens in target order].
    """
    n = x.shape[0]
    if dominant < max(1, forced) or contextual < 1 or dominant + contextual > n:
        raise ConfigError(f"VisionZip dominant={dominant}, contextual={contextual}: need dominant >= {max(1, forced)}, "
                          f"contextual >= 1 and dominant + contextual <= {n} (the tokens of this image)")
    cand = torch.arange(forced, n, device=x.device)
    order = torch.sort(importance[forced:].float(), descending=True, stable=True).indices
    dom = torch.cat([torch.arange(forced, device=x.device), cand[order[:dominant - forced]]]).sort().values
    is_dom = torch.zeros(n, dtype=torch.bool, device=x.device)
    is_dom[dom] = True
    rest = (~is_dom).nonzero()[:, 0]  # original order, as the reference's boolean mask keeps it
    metric = F.normalize(keys[rest].float(), dim=-1)
    step = max(1, rest.numel() // contextual)
    targets = torch.arange(0, rest.numel(), step, device=x.device)[:contextual]
    is_target = torch.zeros(rest.numel(), dtype=torch.bool, device=x.device)
    is_target[targets] = True
    others = (~is_target).nonzero()[:, 0]
    assign = (metric[others] @ metric[targets].T).argmax(dim=1)  # index into targets
    mean_assigned, n_assigned = group_mean(x[rest[others]], assign, targets.numel())
    acc = torch.promote_types(x.dtype, torch.float32)
    ctx = (x[rest[targets]].to(acc) + mean_assigned.to(acc)).to(x.dtype)
    groups = torch.empty(n, dtype=torch.long, device=x.device)
    groups[dom] = torch.arange(dom.numel(), device=x.device)
    ctx_row = torch.empty(rest.numel(), dtype=torch.long, device=x.device)
    ctx_row[targets] = torch.arange(targets.numel(), device=x.device)
    ctx_row[others] = assign
    groups[rest] = dom.numel() + ctx_row
    sizes = torch.cat([torch.ones(dom.numel(), device=x.device), 1.0 + n_assigned])
    return Grouping(torch.cat([x[dom], ctx], 0), groups, sizes)


class Selector:
    """Base class: ``select`` one image's patch tokens; ``__call__`` does a padded batch.

    ``needs_attention``: the runner must probe the last block's attention (keys, importance).
    ``needs_image_ids``: the runner must fingerprint each image's pixels (seeds random subsets).
    ``cls_row``: the CLS row belongs to the selection and should reach the language model even
    where the VLM normally drops CLS (VisionZip keeps it as a dominant token).
    ``needs_projections``: the runner must give the full-width query and key projections of the
    block that reads the output (``SelectionInput.queries``, ``projected_keys``); ``score_flops``
    then says what the selection spent on them, for the FLOP accounting.
    """

    needs_attention: bool = False
    needs_image_ids: bool = False
    cls_row: bool = False
    needs_projections: bool = False

    def score_flops(self, tokens: int, rows: int, shape: Any) -> float:
        """FLOPs (2 per multiply-add, matmuls only) the choice of one image spent besides the blocks:
        ``tokens`` entered it, ``rows`` came out; ``shape`` is the tower's ``accounting.VisionShape``."""
        return 0.0

    def select(self, x: torch.Tensor, b: int, inp: SelectionInput) -> Grouping:  # pragma: no cover - interface
        raise NotImplementedError

    def check(self, n_patches: int, grid: tuple[int, int], has_cls: bool) -> None:
        """Raise ConfigError when the settings cannot apply to images of this encoder."""

    def __call__(self, state: TokenState, inp: SelectionInput) -> TokenState:
        bsz, t, _ = state.x.shape
        if state.padded or not state.trivial or state.patch_to_token.shape[1] != t:
            raise ConfigError(f"{type(self).__name__} selects from the unmerged encoder output; "
                              "it cannot follow token merging")
        n_patches = t - int(inp.has_cls)
        self.check(n_patches, inp.grid, inp.has_cls)
        picks = [self.select(state.x[b], b, inp) for b in range(bsz)]
        width = max(p.rows.shape[0] for p in picks)
        x = state.x.new_zeros(bsz, width, state.x.shape[-1])
        valid = torch.zeros(bsz, width, dtype=torch.bool, device=x.device)
        sizes = torch.zeros(bsz, width, dtype=state.sizes.dtype, device=x.device)
        big = torch.iinfo(torch.long).max
        first = torch.full((bsz, width), big, dtype=torch.long, device=x.device)
        for b, p in enumerate(picks):
            r = p.rows.shape[0]
            x[b, :r], valid[b, :r], sizes[b, :r] = p.rows, True, p.sizes.to(sizes.dtype)
            kept = p.groups >= 0
            first[b] = first[b].scatter_reduce(0, p.groups[kept], kept.nonzero()[:, 0], reduce="amin")
        groups = torch.stack([p.groups for p in picks])
        return TokenState(x=x, valid=valid, sizes=sizes, first=first,
                          patch_to_token=groups.gather(1, state.patch_to_token), trivial=False)


def _with_cls(grouping: Grouping, x_cls: torch.Tensor | None) -> Grouping:
    """Put the CLS token in front as row 0 of its own (patch rows shift by one)."""
    if x_cls is None:
        return grouping
    groups = torch.where(grouping.groups >= 0, grouping.groups + 1, grouping.groups)
    return Grouping(torch.cat([x_cls[None], grouping.rows]), torch.cat([groups.new_zeros(1), groups]),
                    torch.cat([grouping.sizes.new_ones(1), grouping.sizes]))


def _split(x: torch.Tensor, has_cls: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    return (x[0], x[1:]) if has_cls else (None, x)


class RandomKeep(Selector):
    """Keep ``keep`` patch tokens (a count, or a fraction of the patches) chosen at random with ``seed``."""

    needs_image_ids = True

    def __init__(self, keep: float, seed: int = 0):
        keep = check_keep(keep)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed={seed!r} must be an integer >= 0")
        self.keep, self.seed = keep, seed

    def count(self, n_patches: int) -> int:
        return resolve_keep(self.keep, n_patches)

    def check(self, n_patches: int, grid: tuple[int, int], has_cls: bool) -> None:
        self.count(n_patches)

    def select(self, x: torch.Tensor, b: int, inp: SelectionInput) -> Grouping:
        x_cls, patches = _split(x, inp.has_cls)
        n = patches.shape[0]
        kept = random_subset(n, self.count(n), self.seed, inp.image_ids[b] if inp.image_ids else 0).to(x.device)
        groups = torch.full((n,), -1, dtype=torch.long, device=x.device)
        groups[kept] = torch.arange(kept.numel(), device=x.device)
        return _with_cls(Grouping(patches[kept], groups, torch.ones(kept.numel(), device=x.device)), x_cls)


class GridPool(Selector):
    """Average-pool the patch grid by ``factor`` in both directions."""

    def __init__(self, factor: int):
        pool_groups(factor, factor, factor)  # type check
        self.factor = factor

    def check(self, n_patches: int, grid: tuple[int, int], has_cls: bool) -> None:
        if grid[0] * grid[1] != n_patches:
            raise ConfigError(f"pool: {n_patches} patch tokens do not form the {grid[0]}x{grid[1]} grid")
        pool_groups(grid[0], grid[1], self.factor)

    def select(self, x: torch.Tensor, b: int, inp: SelectionInput) -> Grouping:
        x_cls, patches = _split(x, inp.has_cls)
        rows, cols = inp.grid
        groups = pool_groups(rows, cols, self.factor).to(x.device)
        pooled, sizes = group_mean(patches, groups, (rows // self.factor) * (cols // self.factor))
        return _with_cls(Grouping(pooled, groups, sizes), x_cls)


class VisionZip(Selector):
    """VisionZip's training-free selection: ``dominant`` + ``contextual`` tokens per image.

    With a CLS token (CLIP), the CLS token is one of the ``dominant`` tokens, as in the official
    code (``visionzip(model, dominant=54, contextual=10)`` gives 64 tokens: CLS, 53 patches,
    10 contextual). Without one (SigLIP), all ``dominant`` tokens are patches ranked by the
    mean attention they receive.
    """

    needs_attention = True
    cls_row = True

    def __init__(self, dominant: int, contextual: int):
        for name, v in (("dominant", dominant), ("contextual", contextual)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}={v!r} must be an integer >= 1")
        self.dominant, self.contextual = dominant, contextual

    def check(self, n_patches: int, grid: tuple[int, int], has_cls: bool) -> None:
        n = n_patches + int(has_cls)
        if self.dominant + self.contextual > n:
            raise ConfigError(f"dominant={self.dominant} + contextual={self.contextual} is more than the {n} "
                              f"tokens this encoder gives ({n_patches} patches{' + CLS' if has_cls else ''})")

    def score_flops(self, tokens: int, rows: int, shape: Any) -> float:
        """The attention read at the last block (the CLS query's row per head, or every query without
        CLS) and the contextual assignment: the other tokens' head-mean keys against the targets'."""
        tower = shape.tower
        queries = 1 if shape.has_cls else tokens
        others = tokens - self.dominant - self.contextual
        return 2.0 * (queries * tokens * tower.heads * tower.head_dim + others * self.contextual * tower.head_dim)

    def select(self, x: torch.Tensor, b: int, inp: SelectionInput) -> Grouping:
        if inp.keys is None or inp.importance is None:
            raise ConfigError("VisionZip needs the last block's attention (the runner did not probe it)")
        return visionzip_groups(x, inp.keys[b], inp.importance[b], self.dominant, self.contextual,
                                forced=int(inp.has_cls))
