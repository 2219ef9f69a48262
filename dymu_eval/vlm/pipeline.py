"""What both families' pipelines share: the language-side handles of a loaded VLM, the reduced
encoder call, and the batch the language loop runs (unique rows, virtual layout, image mask).

The families differ in how pixels become unique rows and positions (``llava``,
``llava_onevision``); from ``Prepared`` on, the same loop serves both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..accounting import RequestCounts
from ..accounting.timing import BatchMemory, now
from ..language.layout import VirtualLayout
from ..vision import EncoderOutput, VisionRunner
from .efficiency import Accounting
from .reduction import Reduction


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
    LM head, device and dtype, EOS ids and the FLOP accounting. A family validates its config
    first (so a wrong model fails with the family's own message), then calls this."""

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
