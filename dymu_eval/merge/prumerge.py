"""LLaVA-PruMerge and PruMerge+ (Shang et al., 2024), training-free, on the encoder's output.

Restated from the official ``clip_encoder.py`` (``token_prune_merge_advanced`` and ``_plus``):

- attention: one head over the full width C of the query and key projections of the block that
  reads the output (CLIP's layer 23, whose ``q_proj``/``k_proj`` the official hooks catch while
  LLaVA reads layer -2), ``softmax(q kᵀ / sqrt(C))`` over every token; the score of a patch is
  the CLS row's entry. Without a CLS token (SigLIP) the score is the mean attention the patch
  receives over all queries, the rule VisionZip's SigLIP ports use.
- kept set: the IQR outliers, scores > Q3 + 1.5 IQR, quartiles by linear interpolation (numpy's
  ``percentile``), in descending score order (``topk``).
- PruMerge+: the samples ``0, s, 2s, ... < N - 1`` with ``s = (N // kept) // 3`` that are not kept
  already, appended in index order (the official hard-codes 575 = N - 1 for 576 patches).
- merge: each kept token i becomes ``x_i + sum_j a_j x_j`` over its 32 nearest tokens j by key
  cosine (the other kept tokens included, i itself not), ``a_j`` the raw scores (no
  normalisation); one extra row ``sum_j a_j x_j`` over every token not kept closes the sequence.

One-hot map for the layout (VTU): a kept patch stands for itself, every other patch for the
extra row (the only row built from all of them). The CLS token stays row 0 of its own.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .select import Grouping, SelectionInput, Selector, _split, _with_cls

NEIGHBOURS = 32  # the official ``topk(cos_sim_matrix, k=32)``


def patch_scores(q: torch.Tensor, k: torch.Tensor, has_cls: bool) -> torch.Tensor:
    """(N,) single-head full-width attention each patch gets: from the CLS query, else the mean over queries."""
    acc = torch.promote_types(q.dtype, torch.float32)
    queries = q[:1] if has_cls else q
    logits = queries.to(acc) @ k.to(acc).T * q.shape[-1] ** -0.5
    probs = logits.softmax(dim=-1)
    scores = probs[0] if has_cls else probs.mean(dim=0)
    return scores[int(has_cls):]


def iqr_outliers(scores: torch.Tensor) -> int:
    """How many scores are strictly above Q3 + 1.5 IQR (quartiles as numpy's linear ``percentile``)."""
    q1, q3 = torch.quantile(scores, torch.tensor([0.25, 0.75], dtype=scores.dtype, device=scores.device))
    return int((scores > q3 + 1.5 * (q3 - q1)).sum())


def descending(scores: torch.Tensor) -> torch.Tensor:
    """Indices by score, highest first; ties by index (``topk`` leaves them unspecified)."""
    return torch.sort(scores, descending=True, stable=True).indices


def uniform_samples(n: int, kept: int) -> torch.Tensor:
    """PruMerge+'s spatial samples: every ``(n // kept) // 3``-th index below n - 1 (no outlier: as one)."""
    stride = max(1, (n // max(kept, 1)) // 3)
    return torch.arange(0, n - 1, stride)


def keep_order(scores: torch.Tensor, plus: bool) -> torch.Tensor:
    """The kept patches in output order: the outliers by score, then (plus) the samples not among them."""
    n = scores.numel()
    count = iqr_outliers(scores)
    kept = descending(scores)[:count]
    if plus:
        samples = uniform_samples(n, count).to(scores.device)
        kept = torch.cat([kept, samples[~torch.isin(samples, kept)]])
    return kept


def prumerge_groups(x: torch.Tensor, keys: torch.Tensor, scores: torch.Tensor, kept: torch.Tensor) -> Grouping:
    """One image's rows from patches ``x`` (N, D): kept tokens with their neighbours absorbed, the extra row."""
    n = x.shape[0]
    acc = torch.promote_types(x.dtype, torch.float32)
    xs, a = x.to(acc), scores.to(acc)
    rest = torch.ones(n, dtype=torch.bool, device=x.device)
    rest[kept] = False
    rows = xs[kept]
    if kept.numel():
        metric = F.normalize(keys.to(acc), dim=-1)
        sim = metric[kept] @ metric.T  # (K, N)
        sim[torch.arange(kept.numel(), device=x.device), kept] = -torch.inf  # a token is not its own neighbour
        nearest = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :min(NEIGHBOURS, n - 1)]
        rows = rows + (xs[nearest] * a[nearest].unsqueeze(-1)).sum(dim=1)
    groups = torch.empty(n, dtype=torch.long, device=x.device)
    groups[kept] = torch.arange(kept.numel(), device=x.device)
    sizes = torch.ones(kept.numel(), device=x.device)
    if bool(rest.any()):
        extra = (xs[rest] * a[rest].unsqueeze(-1)).sum(dim=0, keepdim=True)
        rows = torch.cat([rows, extra])
        groups[rest] = kept.numel()
        sizes = torch.cat([sizes, rest.sum().to(sizes.dtype).view(1)])
    return Grouping(rows.to(x.dtype), groups, sizes)


class PruMerge(Selector):
    """PruMerge (``plus=False``) or PruMerge+ (``plus=True``): an adaptive number of rows per image."""

    needs_projections = True

    def __init__(self, plus: bool = False):
        if not isinstance(plus, bool):
            raise ConfigError(f"plus={plus!r} must be true or false")
        self.plus = plus

    def check(self, n_patches: int, grid: tuple[int, int], has_cls: bool) -> None:
        if n_patches < 2:
            raise ConfigError(f"PruMerge needs at least 2 patch tokens to rank, this encoder gives {n_patches}")

    def select(self, x: torch.Tensor, b: int, inp: SelectionInput) -> Grouping:
        if inp.queries is None or inp.projected_keys is None:
            raise ConfigError("PruMerge needs the reading block's query and key projections (the runner gave none)")
        x_cls, patches = _split(x, inp.has_cls)
        scores = patch_scores(inp.queries[b], inp.projected_keys[b], inp.has_cls)
        kept = keep_order(scores, self.plus)
        grouping = prumerge_groups(patches, inp.projected_keys[b][int(inp.has_cls):], scores, kept)
        return _with_cls(grouping, x_cls)

    def score_flops(self, tokens: int, rows: int, shape: Any) -> float:
        """The reading block's q and k projections, the score logits (the CLS row, or every query without
        CLS) and the kept tokens' key cosines to every patch. Kept tokens are the rows less the extra row;
        N patch rows are read as all N kept (N - 1 kept and the extra row needs a PruMerge+ keeping
        nearly every patch; it would cost one cosine row more)."""
        tower, has_cls = shape.tower, bool(shape.has_cls)
        patches, out = tokens - int(has_cls), rows - int(has_cls)
        kept = out if out >= patches else out - 1
        macs = 2 * tokens * tower.hidden * tower.q_width
        macs += (1 if has_cls else tokens) * tokens * tower.q_width
        macs += kept * patches * tower.q_width
        return 2.0 * macs
