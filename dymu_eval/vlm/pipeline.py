"""What both families' pipelines share: the language-side handles of a loaded VLM, the reduced
encoder call, and the batch the language loop runs (unique rows, virtual layout, image mask).

The families differ in how pixels become unique rows and positions (``llava``,
``llava_onevision``); from ``Prepared`` on, the same loop serves both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..accounting import CutCount, RequestCounts
from ..accounting.timing import BatchMemory, now
from ..errors import ConfigError
from ..language.layout import VirtualLayout
from ..language.pruning import Pruning, Stage
from ..methods import FEATURES
from ..vision import EncoderOutput, VisionRunner
from .efficiency import Accounting, selection_flops
from .reduction import BuildContext, Reduction


@dataclass
class RequestRows:
    """One request as its family built it: unique rows (U, D), the map virtual position -> row (L,)
    (-1: no row), which rows are visual (U,), each row's position in the unmodified sequence (U,),
    and how many visual positions the unmodified sequence has."""

    rows: torch.Tensor
    mapping: torch.Tensor
    visual: torch.Tensor
    positions: torch.Tensor
    visual_positions: int

    @property
    def visual_rows(self) -> int:
        return int(self.visual.sum())


@dataclass
class Prepared:
    """A batch turned into unique rows and the layout of the unmodified sequences."""

    unique: torch.Tensor  # (B, Nu, D) left padded
    layout: VirtualLayout
    image_mask: torch.Tensor  # (B, Nv) bool, virtual entries that are image tokens
    input_ids: list[torch.Tensor]  # per request, the unmodified token ids (1-D)
    stats: list[dict[str, Any]]
    counts: list[RequestCounts]  # what each request ran with, for the efficiency accounting
    memory: BatchMemory  # peak GPU memory since the batch started


def pack_batch(rows: list[torch.Tensor], masks: list[torch.Tensor], lengths: list[int], layout: VirtualLayout,
               ids: list[torch.Tensor], stats: list[dict], counts: list, memory, dtype: torch.dtype,
               device: torch.device) -> Prepared:
    """Left-pad every request's unique rows and image mask into batch tensors (what the loop runs);
    both families end ``prepare`` here."""
    nu, nv = max(lengths), layout.virtual_len
    unique = torch.zeros(len(rows), nu, rows[0].shape[-1], dtype=dtype, device=device)
    image_mask = torch.zeros(len(rows), nv, dtype=torch.bool, device=device)
    for b, (r, m) in enumerate(zip(rows, masks)):
        unique[b, nu - r.shape[0]:] = r
        image_mask[b, nv - m.numel():] = m.to(device)
    for b, s in enumerate(stats):
        s["unique_len"] = lengths[b]
        s["virtual_len"] = layout.virtual_lengths[b]
    return Prepared(unique, layout, image_mask, ids, stats, counts, memory)


class PipelineBase:
    """The handles every family reads: tokenizer, reduced tower, projector, embeddings, decoder,
    LM head, device and dtype, EOS ids and the FLOP accounting; and what every family runs the same
    way once ``prepare`` (the family's own) has built the batch: generate, loglikelihood and the
    per-request stats. A family validates its config first (so a wrong model fails with the
    family's own message), then calls this."""

    ENCODER_CALL = "per_image"  # how the family's reference calls the encoder (merge.Threshold)
    FEATURES: frozenset[str] = frozenset(FEATURES)  # what the family offers methods (methods.FEATURES)

    def __init__(self, model, processor, reduction: Reduction | None = None):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.reduction = reduction or Reduction()
        self.runner = VisionRunner.from_model(model)
        inner = model.model
        self.projector = inner.multi_modal_projector
        self.embed = model.get_input_embeddings()
        self.decoder = inner.language_model
        self.lm_head = model.lm_head
        self.device = self.embed.weight.device
        self.dtype = self.embed.weight.dtype
        eos = self.tokenizer.eos_token_id
        self.eos_ids = [int(eos)] if eos is not None else []
        self.accounting = Accounting(model.config, self.decoder.config, self.device, self.dtype)

    def encode(self, pixel_values: torch.Tensor) -> tuple[EncoderOutput, float]:
        """Every image, crop and frame of the batch through the reduced tower in one call; (output, ms)."""
        # the runner casts to the tower's dtype: it sees the processor's fp32 pixels, so a selection
        # seeded by the image (random) keeps the same tokens in every dtype
        pixel_values = pixel_values.to(self.device)
        t0 = now(self.device)  # synchronized: queued work (the copy above) is not the encoder's time
        out = self.runner(pixel_values, self.reduction.policy, selector=self.reduction.selector)
        return out, (now(self.device) - t0) * 1000.0

    def prepare(self, requests: Sequence[Any]) -> Prepared:
        """Tokenize, encode and project a batch; each family builds its rows and maps, then calls
        ``finish_batch``."""
        raise NotImplementedError

    def finish_batch(self, requests: Sequence[Any], built: list[RequestRows], image_masks: list[torch.Tensor],
                     ids: list[torch.Tensor], stats: list[dict], counts: list[RequestCounts], memory: BatchMemory,
                     exact: bool = False) -> Prepared:
        """The layout every family chooses the same way, then the padded batch.

        Per request: ``built`` its rows and maps, ``image_masks`` which virtual positions are image
        tokens. With VTU, the unmodified
        layout over unique rows; for a selection that keeps rows at their own positions, those
        positions with gaps; when the family says every position is its own row (``exact``), the
        maps as they are; otherwise the paper's "w/o VTU": the rows alone at consecutive positions.
        """
        rows, maps = [b.rows for b in built], [b.mapping for b in built]
        positions, visual = [b.positions for b in built], [b.visual for b in built]
        for c in counts:
            c.selection_flops = selection_flops(self.reduction.selector, self.accounting.shape.vision, c)
        lengths = [r.shape[0] for r in rows]
        method = self.reduction.method
        if self.reduction.vtu:
            dropped = [req.name for req, m in zip(requests, maps) if bool((m < 0).any())]
            if dropped or self.reduction.original_positions:
                name = dropped[0] if dropped else requests[0].name
                raise ConfigError(f"{name}: method={method} drops visual tokens, so some positions have no row "
                                  "to stand for them; VTU cannot apply (use vtu=false)")
            layout = VirtualLayout.from_mappings(maps, lengths, device=self.device)
            masks = image_masks
        elif self.reduction.original_positions:  # kept rows at their own positions, gaps where tokens went
            layout = VirtualLayout.from_mappings([torch.arange(n) for n in lengths], lengths, positions=positions,
                                                 device=self.device)
            masks = visual
        elif exact:  # every position its own row: the unmodified sequence
            layout = VirtualLayout.from_mappings(maps, lengths, device=self.device)
            masks = image_masks
        else:  # the paper's "w/o VTU": the unique rows alone, at consecutive positions
            layout = VirtualLayout.consecutive(lengths, device=self.device)
            masks = visual
        return pack_batch(rows, masks, lengths, layout, ids, stats, counts, memory, self.dtype, self.device)

    def process_ids(self, request: Any, text: str) -> torch.Tensor:
        """The token ids the unmodified model gets for ``text`` with ``request``'s media (1-D)."""
        return self._process(request, text)[0]

    def build_context(self) -> BuildContext:
        """What a method's builder reads (methods.MethodSpec.build)."""
        names = [n for n in (getattr(self.model, "name_or_path", ""), self.runner.encoder_key) if n]
        return BuildContext(self.model, self.runner, names, self.ENCODER_CALL, len(self.decoder.layers),
                            self.FEATURES)

    def _pruning(self, prepared: Prepared) -> Pruning | None:
        pruner = self.reduction.pruner
        return None if pruner is None else Pruning(pruner, prepared.image_mask)

    def _cut_counts(self, stages: list[Stage] | None, b: int) -> list[CutCount]:
        if not stages:
            return []
        cuts = self.reduction.pruner.cuts()
        return [CutCount(s.layer, s.rows[b], s.entries[b], "last_query_attention" in c.needs,
                         s.score_flops[b] if s.score_flops else 0.0)
                for s, c in zip(stages, cuts)]

    def _stage_fields(self, cuts: list[CutCount]) -> dict[str, Any]:
        """Per-request stats of a pruner's cuts: rows and entries after each, and the position rule."""
        if not cuts:
            return {}
        rule = self.reduction.pruner.cuts()[0].positions
        return {"visual_tokens_after": cuts[-1].entries, "position_rule": rule,
                "stages": [{"layer": c.layer, "rows": c.rows, "entries": c.entries} for c in cuts]}

    def generate(self, requests: Sequence[Any], config) -> tuple[list[str], list[dict]]:
        """Texts and per-request stats for a batch; ``config`` is a language.DecodeConfig."""
        from ..language import generate as run_generate

        prepared = self.prepare(requests)
        pruning = self._pruning(prepared)
        out = run_generate(self.decoder, self.lm_head, prepared.unique, prepared.layout, config, pruning=pruning)
        stats = []
        for b, s in enumerate(prepared.stats):
            t = out.timings[b]
            counts = prepared.counts[b]
            counts.cuts = self._cut_counts(out.stages, b)
            stats.append({**s, "prefill_ms": t.prefill_ms, "decode_ms": t.decode_ms, "new_tokens": t.new_tokens,
                          **self.accounting.fields(counts, prepared.memory, s["encoder_ms"], t.prefill_ms,
                                                   t.decode_ms, t.new_tokens),
                          **self._stage_fields(counts.cuts)})
        self.accounting.batch_done()
        return list(out.texts), stats

    def loglikelihood(self, requests: Sequence[Any], fulls: Sequence[str]) -> tuple[list[tuple[float, bool]],
                                                                                  list[dict]]:
        """(sum log-prob of the continuation, greedy?) per request: ``fulls[i]`` is the request's
        prompt followed by the continuation, both templated; the continuation is the token tail
        past the prompt (as lmms-eval's llava_hf splits it)."""
        from ..language import loglikelihood as run_loglikelihood

        prepared = self.prepare(requests)
        conts = []
        for req, ctx_ids, full in zip(requests, prepared.input_ids, fulls):
            tail = self.process_ids(req, full)[ctx_ids.numel():].tolist()
            if not tail:
                raise ConfigError(f"{req.name}: the continuation adds no tokens after the context")
            conts.append(tail)
        pruning = self._pruning(prepared)
        t0 = now(self.device)
        scores = run_loglikelihood(self.decoder, self.lm_head, prepared.unique, prepared.layout, conts,
                                   pruning=pruning)
        ms = (now(self.device) - t0) * 1000.0 / max(1, len(requests))
        stats = []
        for b, (s, counts, cont) in enumerate(zip(prepared.stats, prepared.counts, conts)):
            # the continuation is prefilled too, and the LM head runs on each of its positions
            counts.text_rows += len(cont)
            counts.head_rows = len(cont)
            counts.cuts = self._cut_counts(pruning.stages if pruning is not None else None, b)
            stats.append({**s, "prefill_ms": ms, "decode_ms": 0.0, "new_tokens": 0,
                          **self.accounting.fields(counts, prepared.memory, s["encoder_ms"], ms, 0.0, 0),
                          **self._stage_fields(counts.cuts)})
        self.accounting.batch_done()
        return scores, stats
