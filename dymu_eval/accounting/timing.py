"""Synchronized wall-clock timing, peak GPU memory per batch and the attention backend in use.

On a GPU, kernels run asynchronously: a time read without synchronizing measures the launch,
not the work. ``now`` synchronizes first. Peak memory is only defined on CUDA; elsewhere the
field is None with a reason, never 0.
"""
from __future__ import annotations

import time
from typing import Any

import torch

NO_CUDA_NOTE = "not measured: the model runs on {device}, peak memory is measured on CUDA only"


def now(device: torch.device) -> float:
    """Seconds, after every queued kernel on ``device`` has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class BatchMemory:
    """Peak allocated GPU memory over one batch (reset at construction)."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def fields(self) -> dict[str, Any]:
        if self.device.type != "cuda":
            return {"peak_mem_bytes": None, "memory_note": NO_CUDA_NOTE.format(device=self.device.type)}
        return {"peak_mem_bytes": int(torch.cuda.max_memory_allocated(self.device)), "memory_note": None}


def attention_backend(device: torch.device, configured: str | None) -> str:
    """What ran attention: the decoder's own setting (the loop routes it through dymu's SDPA-based
    virtual attention) and, on CUDA, which SDPA kernels torch may pick."""
    name = f"dymu virtual attention over SDPA (model configured: {configured or 'default'})"
    if device.type == "cuda":
        enabled = [k for k, on in (("flash", torch.backends.cuda.flash_sdp_enabled()),
                                   ("mem_efficient", torch.backends.cuda.mem_efficient_sdp_enabled()),
                                   ("math", torch.backends.cuda.math_sdp_enabled())) if on]
        name += f"; SDPA kernels enabled: {'/'.join(enabled)}"
    return name


def latency_fields(encoder_ms: float, prefill_ms: float, decode_ms: float, new_tokens: int) -> dict[str, Any]:
    """Time to first token (encoder + prefill) and decode tokens per second (the steps after the first token)."""
    steps = max(new_tokens - 1, 0)
    return {"ttft_ms": encoder_ms + prefill_ms,
            "decode_tok_per_s": steps / (decode_ms / 1000.0) if steps and decode_ms > 0 else None}
