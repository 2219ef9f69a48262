"""Analytic FLOPs per stage, from a model shape and the token counts a request ran with (no torch).

Convention (docs/plugin.md, per-sample stats): **2 FLOPs per multiply-add**, matmuls only (projections, MLPs, patch
embedding, LM head, attention products, the merge matcher's similarity); norms, activations,
softmax and gathers are not counted, as ``torch.utils.flop_counter`` does not count them either.
Biases are not counted (the counter's addmm and convolution formulas count the product only), so
a model with biases (Qwen2's q/k/v, SigLIP's linears) has the same matmul FLOPs as one without.
Attention is counted as the dense products over the entries actually attended (a causal kernel
may skip the masked half; the counters and the papers count the full rectangle); a VTU decoding
step without grouped keys weighs the cached rows, not their copies (``decode_flops``).

The DyMU paper's Table 1 uses another convention, reported separately and labelled: fvcore counts
**1 per multiply-add** and only the query-key products, with VTU costed as the exact-VTU kernel on
unique rows (two half-width einsums, 2·N_un²·D_h per head) instead of the expanded sequence.

Figures are per request: the padding a batched run carries (shorter prompts, images that kept
fewer tokens) is work the batch spends but no request needs, and is not counted. That includes
an encoder call over several crops or frames that merge different amounts (LLaVA-OneVision's
DToMe on the batch path pads each to the longest): each is counted at its own token counts.

A method or family only supplies its counts: a :class:`LayerRun` per decoder layer (rows through
the token-wise work, query and key entries attended) and the token count entering each encoder
block. The helpers here build those for the usual cases.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .shape import TransformerShape, VisionShape, VlmShape

FLOPS_PER_MAC = 2  # the convention docs/plugin.md states
PAPER_FLOPS_PER_MAC = 1  # fvcore, used by the DyMU paper's Table 1


@dataclass
class StageFlops:
    """FLOPs of one stage, by kind of work (2 per multiply-add)."""

    linear: float = 0.0  # token-wise matmuls: projections, MLP, patch embedding, LM head
    attention: float = 0.0  # query-key and attention-value products
    other: float = 0.0  # the merge matcher's similarity, a pruner's ranking

    @property
    def total(self) -> float:
        return self.linear + self.attention + self.other

    def __add__(self, o: StageFlops) -> StageFlops:
        return StageFlops(self.linear + o.linear, self.attention + o.attention, self.other + o.other)


@dataclass(frozen=True)
class CutCount:
    """What remained after one cut of an LLM-side pruner: from decoder layer ``layer`` on, ``rows``
    distinct visual rows and ``entries`` visual entries attended; ``ranking``: the cut ranked with the
    last query's attention at layer ``layer - 1`` (one query over that layer's keys, FastV's score);
    ``score_flops``: FLOPs the pruner's choice spent besides (its ``Pruner.score_flops``, e.g.
    PyramidDrop's own query and key projections at the cut layer)."""

    layer: int
    rows: int
    entries: int
    ranking: bool = False
    score_flops: float = 0.0


@dataclass(frozen=True)
class LayerRun:
    """One decoder layer of a prefill: ``rows`` through projections and MLP, ``queries`` x ``keys`` entries attended."""

    rows: int
    queries: int
    keys: int


# ----------------------------------------------------------------------------------------- encoder
def encoder_flops(shape: VisionShape, counts: Sequence[int], matched: Sequence[bool]) -> StageFlops:
    """One image (or crop/frame): ``counts[i]`` tokens enter block i and ``counts[i+1]`` leave it
    (merging happens between attention and MLP); ``matched[i]``: block i ran the matcher."""
    t = shape.tower
    if len(counts) != len(matched) + 1:
        raise ValueError(f"{len(counts)} token counts for {len(matched)} blocks; give one more count than blocks")
    patches = int(counts[0]) - int(shape.has_cls)  # what this input ran with, whatever its resolution
    embed = patches * shape.channels * shape.patch_size ** 2 * t.hidden
    linear, attention, other = embed, 0, 0
    for i, did_match in enumerate(matched):
        n_in, n_out = int(counts[i]), int(counts[i + 1])
        linear += n_in * t.projection_macs_per_row + n_out * t.mlp_macs_per_row
        attention += 2 * n_in * n_in * t.q_width
        if did_match:  # cosine similarity of A (even) to B (odd) tokens, head-averaged keys
            other += math.ceil(n_in / 2) * (n_in // 2) * t.head_dim
    return StageFlops(FLOPS_PER_MAC * linear, FLOPS_PER_MAC * attention, FLOPS_PER_MAC * other)


def padded_batch_encoder_flops(shape: VisionShape, counts: Sequence[Sequence[int]],
                               matched: Sequence[bool]) -> StageFlops:
    """What one encoder call over images merging different amounts computes (not a per-request
    figure: benches and the counter checks use it). The runner runs the token-wise work on each
    image's real tokens only (``vision.block.residual``, ``mix_heads``); attention and the matcher run over the
    padded batch, at its longest count per block."""
    longest = encoder_flops(shape, [max(col) for col in zip(*counts)], matched)
    total = StageFlops()
    for own in counts:
        total = total + StageFlops(encoder_flops(shape, own, matched).linear, longest.attention, longest.other)
    return total


def unmerged_counts(shape: VisionShape, layers_run: int) -> list[int]:
    """Token counts of an encoder that never merges."""
    return [shape.patches + int(shape.has_cls)] * (layers_run + 1)


def tome_counts(shape: VisionShape, r_per_layer: Sequence[int]) -> list[int]:
    """ToMe's counts: each block removes min(r, (n - protected) // 2) tokens."""
    n, out, protected = shape.patches + int(shape.has_cls), [], int(shape.has_cls)
    out.append(n)
    for r in r_per_layer:
        n -= min(int(r), (n - protected) // 2)
        out.append(n)
    return out


# ----------------------------------------------------------------------------------------- projector
def projector_flops(shape: VlmShape, rows: int) -> StageFlops:
    """The projector runs on unique visual rows only (it is token-wise)."""
    return StageFlops(linear=FLOPS_PER_MAC * rows * shape.projector_macs_per_row)


# ----------------------------------------------------------------------------------------- LLM
def layer_flops(shape: TransformerShape, run: LayerRun) -> StageFlops:
    linear = run.rows * (shape.projection_macs_per_row + shape.mlp_macs_per_row)
    attention = 2 * run.queries * run.keys * shape.q_width  # QK^T and AV; GQA shares keys, not the work
    return StageFlops(FLOPS_PER_MAC * linear, FLOPS_PER_MAC * attention)


def prefill_flops(shape: TransformerShape, layers: Sequence[LayerRun], head_rows: int = 1,
                  cuts: Sequence[CutCount] = ()) -> StageFlops:
    """Every decoder layer, the LM head on ``head_rows`` rows, and the cuts' ranking (``ranking_flops``)."""
    total = StageFlops()
    for run in layers:
        total = total + layer_flops(shape, run)
    total.linear += FLOPS_PER_MAC * head_rows * shape.hidden * shape.vocab
    total.other += ranking_flops(shape, layers, cuts)
    return total


def decode_flops(shape: TransformerShape, cache_entries: Sequence[int], steps: int,
                 cache_rows: Sequence[int] | None = None) -> StageFlops:
    """``steps`` decode passes, one new row each; pass s scores ``cache_entries[l] + s + 1`` entries
    in layer l (the entries the prefill left in that layer's attention, plus the new ones) and
    weighs ``cache_rows[l] + s + 1`` value rows (default: one per entry). With VTU and one key head
    per query head a step sums the softmax weights of an entry's copies onto its cached row, so the
    value product runs on the rows (``language.attention``)."""
    rows = cache_entries if cache_rows is None else cache_rows
    if len(rows) != len(cache_entries):
        raise ValueError(f"{len(cache_rows)} layers of cache rows for {len(cache_entries)} layers of entries")
    linear = steps * (len(cache_entries) * (shape.projection_macs_per_row + shape.mlp_macs_per_row)
                      + shape.hidden * shape.vocab)
    grown = steps * (steps + 1) // 2
    products = sum(steps * e + grown + steps * r + grown for e, r in zip(cache_entries, rows))
    return StageFlops(FLOPS_PER_MAC * linear, FLOPS_PER_MAC * products * shape.q_width)


def decode_value_rows(shape: TransformerShape, plan: Sequence[LayerRun]) -> list[int] | None:
    """The value rows a decoding step weighs per layer (``decode_flops``'s ``cache_rows``): the
    cached rows when every query head has its own key head (``language.attention`` folds VTU's
    copies onto them), else None (one per entry: SDPA over the expanded grouped keys)."""
    return [run.rows for run in plan] if shape.heads == shape.kv_heads else None


def prefill_plan(layers: int, text: int, visual_rows: int, visual_positions: int, vtu: bool,
                 cuts: Sequence[CutCount] = ()) -> list[LayerRun]:
    """The layer runs: ``text`` rows plus ``visual_rows`` unique visual rows; attention over
    ``visual_positions`` visual entries with VTU, over the rows themselves without; from each cut's
    layer on, its rows and entries."""
    run = LayerRun(text + visual_rows, text + (visual_positions if vtu else visual_rows),
                   text + (visual_positions if vtu else visual_rows))
    at = {c.layer: c for c in cuts}
    plan = []
    for i in range(layers):
        if i in at:
            cut = at[i]
            run = LayerRun(text + cut.rows, text + cut.entries, text + cut.entries)
        plan.append(run)
    return plan


def ranking_flops(shape: TransformerShape, plan: Sequence[LayerRun], cuts: Sequence[CutCount]) -> float:
    """The cuts' ranking: one query over the keys of the layer before each cut that ranks by the
    last query's attention, plus the FLOPs each pruner reported for its own scoring."""
    return (sum(FLOPS_PER_MAC * plan[c.layer - 1].keys * shape.q_width for c in cuts if c.ranking)
            + sum(c.score_flops for c in cuts))


# ----------------------------------------------------------------------------------------- token views
def layer_averaged_rows(plan: Sequence[LayerRun], text: int) -> float:
    """Visual rows averaged over decoder layers (FastV's convention for its token counts)."""
    return sum(run.rows - text for run in plan) / len(plan)


def flop_equivalent_tokens(shape: TransformerShape, prefill_total: float, text: int, head_rows: int = 1) -> float:
    """Visual tokens at which the unreduced model (every layer over text + v rows and entries)
    spends ``prefill_total`` FLOPs: the root of L·(a·n² + b·n) + head = F with n = text + v."""
    a = FLOPS_PER_MAC * 2 * shape.q_width * shape.layers
    b = FLOPS_PER_MAC * (shape.projection_macs_per_row + shape.mlp_macs_per_row) * shape.layers
    c = FLOPS_PER_MAC * head_rows * shape.hidden * shape.vocab - prefill_total
    n = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return n - text


# ----------------------------------------------------------------------------------------- paper convention
def fvcore_einsum_macs(macs: int) -> float:
    """What fvcore reports for an einsum of ``macs`` multiply-adds with a summed index.

    fvcore does not count einsums itself: it asks ``numpy.einsum_path`` for the "Optimized FLOP
    count" (2 per multiply-add here), reads that number from numpy's printout, which has four
    significant digits (``%.3e``), and halves it. The paper's Table 1 carries that rounding.
    """
    return float(math.floor(float(f"{2 * macs:.3e}") / 2))


def paper_qk_macs(heads: int, head_dim: int, run: LayerRun, fvcore_rounding: bool = False) -> float:
    """Multiply-adds of one layer's query-key products (the DyMU paper's Table 1 convention).

    When the layer attends over more entries than it has rows (VTU), the exact-VTU kernel works on
    unique rows: two einsums (dot and rotated cross products, 'bhird,bhrjd->bhijd' with r = 2 halves
    of D_h) of N_un x N_un x D_h multiply-adds per head each. Otherwise the ordinary Q K^T (a
    matmul, which fvcore counts exactly) over the entries attended. ``fvcore_rounding`` applies
    fvcore's reading of the einsum counts (see :func:`fvcore_einsum_macs`).
    """
    if run.queries > run.rows:
        per_einsum = run.rows * run.rows * head_dim * heads
        return 2 * (fvcore_einsum_macs(per_einsum) if fvcore_rounding else float(per_einsum))
    return float(run.queries * run.keys * head_dim * heads)


def table1_mflops(n_unique: int, n_virtual: int, heads: int = 32, head_dim: int = 128) -> float:
    """One row of the DyMU paper's Table 1, as fvcore counted it: attention MFLOPs (1 per multiply-add,
    query-key only) over the image tokens alone, batch 1, one layer; ``n_unique == n_virtual`` is the
    unreduced model."""
    return paper_qk_macs(heads, head_dim, LayerRun(n_unique, n_virtual, n_virtual), fvcore_rounding=True) / 1e6


@dataclass
class PerStage:
    """FLOPs of a request by stage, plus the paper-convention attention figure."""

    encoder: StageFlops = field(default_factory=StageFlops)
    projector: StageFlops = field(default_factory=StageFlops)
    prefill: StageFlops = field(default_factory=StageFlops)
    decode: StageFlops = field(default_factory=StageFlops)
    paper_prefill_qk_macs: float = 0.0

    @property
    def total(self) -> float:
        return self.encoder.total + self.projector.total + self.prefill.total + self.decode.total
