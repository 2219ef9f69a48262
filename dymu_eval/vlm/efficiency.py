"""Efficiency fields of each request, shared by every model family (docs/plugin.md, per-sample stats).

A family module builds one :class:`RequestCounts` per request from what actually ran (encoder
token counts, unique rows, virtual positions) and hands it here with the request's times; this
module adds the FLOPs per stage, KV bytes, latency, memory and the
warm-up flag. A new family or method only supplies counts.
"""
from __future__ import annotations

from typing import Any

import torch

from ..accounting import RequestCounts, VisionShape, VlmShape, efficiency_fields
from ..accounting.timing import BatchMemory, attention_backend, latency_fields
from ..merge import Policy
from ..vision import EncoderOutput
from ..vision.runner import run_counts


def image_counts(enc: EncoderOutput, policy: Policy, first: int, n: int) -> tuple[list[list[int]], list[list[bool]]]:
    """Tokens entering each encoder block (and leaving the last) and whether it matched, images first..first+n."""
    if n == 0:
        return [], []
    counts, matched = run_counts(enc, policy)
    return counts[first:first + n], [matched] * n


def selection_flops(selector: Any, shape: VisionShape, counts: RequestCounts) -> float:
    """FLOPs a selection after the encoder spent choosing, over the request's images (``Selector.score_flops``)."""
    if selector is None or counts.selected is None:
        return 0.0
    return sum(selector.score_flops(c[-1], rows, shape) for c, rows in zip(counts.encoder_counts, counts.selected))


class Accounting:
    """Turns a request's counts and times into its stats fields; flags the first batch as the warm-up."""

    def __init__(self, model_config: Any, decoder_config: Any, device: torch.device, dtype: torch.dtype):
        self.shape = VlmShape.from_config(model_config)
        self.decoder_config = decoder_config
        self.device = device
        self.dtype_bytes = dtype.itemsize
        self.batches_run = 0  # the first batch of a process pays one-off start-up costs

    def start_batch(self) -> BatchMemory:
        return BatchMemory(self.device)

    def fields(self, counts: RequestCounts, memory: BatchMemory, encoder_ms: float,
               prefill_ms: float, decode_ms: float, new_tokens: int) -> dict[str, Any]:
        """Token views, FLOPs per stage, KV bytes, latency and memory fields of one request."""
        counts.new_tokens = new_tokens
        return {
            **efficiency_fields(self.shape, counts, self.dtype_bytes),
            **latency_fields(encoder_ms, prefill_ms, decode_ms, new_tokens),
            **memory.fields(),
            "attn_backend": attention_backend(self.device, self.decoder_config._attn_implementation),
            "device": str(self.device),
            "warmup": self.batches_run == 0,
        }

    def batch_done(self) -> None:
        self.batches_run += 1
